"""Dead letters: what the ingest does with a message it will not store.

A rejected message is counted by kind, logged once per source topic (again only when the
kind of problem changes) and at most LOG_BURST such lines a minute (a flood from
thousands of new topics becomes one summary line a minute, RefusalLog), and published at
QoS 1 to a dead-letter topic, by default `{prefix}/{site}/{gateway}/deadletter` of its
source (a topic the data subscription does not match). The original is acknowledged only
after the broker acknowledged the dead letter, so a bad message is never simply dropped.
The envelope (JSON):

    {"topic": "factory/plant-a/gw-01/meter-1/data", "kind": "bad_timestamp",
     "detail": "ts_ms 1 is before 2000-01-01", "received_ms": 1764154930123,
     "worker": "edge-ingest-edge-ingest-host", "payload": "<the message as text>"}

`payload_base64` replaces `payload` when the message is not UTF-8.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter

import orjson

from edge_agent.alarms.refusal_log import RefusalLog, shown
from edge_agent.ingest.schema import Rejected, Source

logger = logging.getLogger(__name__)

LOGGED_SOURCES_LIMIT = 10_000
LOG_BURST = 10  # lines about new sources per minute; the rest is one summary line


def deadletter_topic(source: Source | None, *, prefix: str, configured: str | None = None) -> str:
    """The configured topic, else `{prefix}/{site}/{gateway}/deadletter` of the source."""
    if configured is not None:
        return configured
    if source is None:
        return f"{prefix}/deadletter"
    return f"{prefix}/{source.site}/{source.gateway}/deadletter"


def envelope(
    topic: str, payload: bytes, rejected: Rejected, *, received_ms: int, worker: str
) -> bytes:
    """The dead-letter message for one rejected message."""
    doc: dict[str, object] = {
        "topic": topic,
        "kind": rejected.kind,
        "detail": rejected.detail,
        "received_ms": received_ms,
        "worker": worker,
    }
    try:
        doc["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        doc["payload_base64"] = base64.b64encode(payload).decode("ascii")
    return orjson.dumps(doc)


class RejectLog:
    """Counts rejections by kind and logs the first of each source (and each change)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._last_kind: dict[str, str] = {}
        self._overflow_logged = False
        self.lines = RefusalLog(
            logger,
            "ingest: rejected messages from new sources",
            burst=LOG_BURST,
            level=logging.WARNING,
        )

    @property
    def total(self) -> int:
        """Messages rejected so far."""
        return sum(self.counts.values())

    def record(self, topic: str, rejected: Rejected) -> None:
        """Count one rejection; log it if this source has not shown this kind just before."""
        self.counts[rejected.kind] += 1
        last = self._last_kind.get(topic)
        if last == rejected.kind:
            return
        if last is None and len(self._last_kind) >= LOGGED_SOURCES_LIMIT:
            if not self._overflow_logged:
                self._overflow_logged = True
                logger.warning(
                    "more than %d sources sent bad messages; only counting from now on",
                    LOGGED_SOURCES_LIMIT,
                )
            return
        self._last_kind[topic] = rejected.kind
        self.lines.refused(
            rejected.kind,
            "rejected a message on %s (%s): %s; sent to the dead-letter topic, further "
            "ones from this source are only counted",
            shown(topic, 200),
            rejected.kind,
            rejected.detail,
        )

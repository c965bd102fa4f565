"""The 能耗在线监测 platform uplink: interval data to HTTPS endpoints, resent until acknowledged.

    energy stage ─► UplinkOutlet.send(doc) ─┬─► agent Outlet (MQTT, unchanged)
                                            └─► interval docs ─► UplinkStore (history + queues)
                                                                   └─► EndpointSender per endpoint

Each endpoint has its own queue and its own sender task: it posts the oldest records of
its queue (up to `batch`), in order, and drops them only when the endpoint acknowledged
(HTTP 2xx, and the `ack_json` keys when configured); anything else (refused, 5xx, a
negative answer, a timeout) is retried with capped backoff, the same records again, so
nothing is lost or reordered, and one endpoint's outage never holds up another. The queue
is in SQLite, so a restart resumes where it stopped.

Payload templates (no code per province): a YAML file with `envelope` and `record`,
`string.Template` texts where every `$name` becomes a JSON literal (strings quoted), so a
template is plain JSON with placeholders. The envelope gets `$records` (the rendered
records joined by commas), `$count`, `$site`, `$gateway`, `$sent_at`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import logging
import random
import ssl
import string
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from drivers.reading import Poll
from edge_agent.catalog import Kind, find, folders
from edge_agent.config.document import Document, read_data
from edge_agent.config.errors import ConfigIssue
from edge_agent.ingest.influx_tls import ca_file_problem
from edge_agent.runtime.wake_grid import sleep_to_multiple
from edge_agent.uplink.config import UplinkConfig, UplinkEndpoint
from edge_agent.uplink.store import IntervalRecord, UplinkStore

log = logging.getLogger(__name__)
TOPIC_SUFFIX = "energy"  # the energy stage's topic: manual entries are stored beside it


class Template:
    """A province's payload format: an envelope around records, JSON with `$placeholders`."""

    def __init__(self, envelope: str, record: str) -> None:
        self.envelope = string.Template(envelope)
        self.record = string.Template(record)

    @classmethod
    def load(cls, path: Path) -> Template:
        doc = read_data(path)
        if not isinstance(doc, dict) or not {"envelope", "record"} <= set(doc):
            raise ValueError(f"{path}: a template needs `envelope` and `record` texts")
        template = cls(str(doc["envelope"]), str(doc["record"]))
        try:  # fail at start (and in `check`), not at 3 a.m.
            template.render([_SAMPLE], site="site", gateway="gw")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return template

    def render(
        self,
        records: Sequence[IntervalRecord],
        *,
        site: str,
        gateway: str,
        codes: Mapping[str, str] | None = None,
    ) -> bytes:
        """The request body; ValueError when a placeholder is unknown or the JSON is broken.

        `codes`: energy kind -> the province's code, the record's `$code` (null if none).
        """
        rendered = []
        codes = codes or {}
        try:
            for r in records:
                values = {**r.fields(), "key": r.key, "code": codes.get(r.kind)}
                rendered.append(self.record.substitute(_literals(values)))
        except KeyError as exc:
            raise ValueError(f"record: unknown placeholder ${exc.args[0]}") from None
        head = {
            "site": site,
            "gateway": gateway,
            "count": len(records),
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        try:
            text = self.envelope.substitute({**_literals(head), "records": ",".join(rendered)})
        except KeyError as exc:
            raise ValueError(f"envelope: unknown placeholder ${exc.args[0]}") from None
        json.loads(text)  # the platform gets valid JSON or nothing
        return text.encode()


def template_path(ref: Path, *, base: Path) -> Path:
    """A template given as a path relative to the site file, or by name from the catalog."""
    if (base / ref).is_file() or len(ref.parts) != 1:
        return base / ref
    name = ref.stem if ref.suffix == ".yaml" else ref.name
    return find(name, folders(Kind.TEMPLATES, base)) or base / ref


def uplink_issues(doc: Document, config: UplinkConfig, *, base: Path) -> list[ConfigIssue]:
    """What `edge-agent check` finds in an `uplink:` block beyond its model: a template
    that is missing or does not render, a CA file that is missing or not PEM."""
    issues = []
    for i, e in enumerate(config.endpoints):
        at: tuple[str | int, ...] = ("uplink", "endpoints", i)
        path = template_path(e.template, base=base)
        try:
            Template.load(path)
        except OSError as exc:
            issues.append(doc.issue((*at, "template"), f"{path}: {exc.strerror}"))
        except ValueError as exc:
            issues.append(doc.issue((*at, "template"), str(exc)))
        problem = None if e.ca_file is None else ca_file_problem(base / e.ca_file)
        if problem is not None and e.ca_file is not None:
            missing = not (base / e.ca_file).exists()
            issues.append(doc.issue((*at, "ca_file"), problem, local=missing))
    return issues


def _literals(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, ensure_ascii=False) for k, v in values.items()}


_SAMPLE = IntervalRecord(
    "s", "g", "d", "c", "electricity", "2026-01-01T00:00:00+08:00", "2026-01-01T00:15:00+08:00",
    0, 900_000, 1.0, "kWh", "good", 1.0,
)  # fmt: skip


def records_of(doc: Mapping[str, Any], *, site: str, gateway: str) -> list[IntervalRecord]:
    """The uplink records of one energy-stage message: its intervals and its day and month
    totals (which endpoints get which span is the endpoint's `spans`)."""
    span = doc.get("type")
    if span not in ("interval", "day", "month"):
        return []
    counter = str(doc["counter"])
    points = doc["points"]
    main = points.get(f"{span}.{counter}", {})
    completeness = points.get(f"{span}.{counter}.completeness", {}).get("value")
    tce = points.get(f"{span}.{counter}.tce", {}).get("value")
    end_ms = int(dt.datetime.fromisoformat(doc["end"]).timestamp() * 1000)
    return [
        IntervalRecord(
            site=site,
            gateway=gateway,
            device=str(doc["device"]),
            counter=counter,
            kind=str(doc["kind"]),
            start=str(doc["start"]),
            end=str(doc["end"]),
            start_ms=int(doc["ts_ms"]),
            end_ms=end_ms,
            value=main.get("value"),
            unit=main.get("unit"),
            quality=str(main.get("quality", "bad")),
            completeness=completeness,
            flags=" ".join(doc.get("flags") or ()),
            span=str(span),
            tce=tce,
        )
    ]


@dataclass
class SenderStats:
    sent_requests: int = 0
    acked_records: int = 0
    failures: int = 0
    last_error: str = ""  # kept after a recovery; `failing` says whether it is current
    last_ack_at: float | None = None  # the agent loop's clock, for ages (Unit.down_since's)
    last_ack_ms: int | None = None  # wall clock, for people
    failing_since: float | None = None  # loop clock of the first failure since the last ack

    @property
    def failing(self) -> bool:
        """The last request was not acknowledged."""
        return self.failing_since is not None


class EndpointSender:
    """Posts one endpoint's queue, oldest first, until each batch is acknowledged."""

    def __init__(
        self,
        store: UplinkStore,
        endpoint: UplinkEndpoint,
        template: Template,
        *,
        site: str,
        gateway: str,
        base: Path,
        backoff_min_s: float = 0.5,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self.template = template
        self.site = site
        self.gateway = gateway
        self.stats = SenderStats()
        self.wake = asyncio.Event()
        self.backoff_min_s = backoff_min_s
        ca = base / endpoint.ca_file if endpoint.ca_file is not None else None
        self._ssl = ssl.create_default_context(cafile=str(ca) if ca else None)

    async def run(self) -> None:
        """Until cancelled: send what is queued, wait for more."""
        loop = asyncio.get_running_loop()
        backoff = self.backoff_min_s
        while True:
            batch = self.store.pending(self.endpoint.name, self.endpoint.batch)
            if not batch:
                self.wake.clear()
                # Woken by new records: the agent's, and those another process (edge-agent
                # uplink manual) queued in the file (PlatformUplink._watch_other_writers).
                await self.wake.wait()
                continue
            # Rendered in the worker thread too: a batch of 500 takes ~50 ms to render, which
            # must not hold up the polls during a catch-up.
            error = await asyncio.to_thread(self._send, [r for _, r in batch])
            self.stats.sent_requests += 1
            if error is None:
                self.store.ack(self.endpoint.name, batch[-1][0])
                self.stats.acked_records += len(batch)
                self.stats.last_ack_at = loop.time()
                self.stats.last_ack_ms = time.time_ns() // 1_000_000
                if self.stats.failing:
                    log.info("uplink %s: acknowledged again", self.endpoint.name)
                self.stats.failing_since = None
                backoff = self.backoff_min_s
                continue
            self.stats.failures += 1
            self.stats.last_error = error
            if not self.stats.failing:  # logged once per state change
                log.warning("uplink %s: %s; resending", self.endpoint.name, error)
                self.stats.failing_since = loop.time()
            # Jittered so that two gateways do not retry in step; new data does not wake it.
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.endpoint.backoff_max_s)

    def _send(self, records: Sequence[IntervalRecord]) -> str | None:
        body = self.template.render(
            records, site=self.site, gateway=self.gateway, codes=self.endpoint.codes
        )
        return self._post(body)

    def _post(self, body: bytes) -> str | None:
        """None when acknowledged, else what went wrong (never raises)."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.endpoint.token is not None:
            headers["Authorization"] = f"Bearer {self.endpoint.token.get_secret_value()}"
        request = urllib.request.Request(self.endpoint.url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(
                request, timeout=self.endpoint.timeout_s, context=self._ssl
            ) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            # HTTPException: an answer broken off or not HTTP (IncompleteRead, BadStatusLine);
            # not an OSError, and uncaught it would end the sender and the agent with it.
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}"
        wanted = self.endpoint.ack_json
        if wanted:
            try:
                got = orjson.loads(text)
            except orjson.JSONDecodeError:
                return "answer is not JSON"
            if not isinstance(got, dict) or any(got.get(k) != v for k, v in wanted.items()):
                return f"not acknowledged: {self._redacted(text)[:200]!r}"
        return None

    def _redacted(self, answer: bytes) -> bytes:
        # The answer goes to the log and the status page: a platform whose refusal echoes
        # the request's headers must not put the token there. (The other errors are an HTTP
        # status, a socket/TLS error or the kind of broken answer, which hold no header.)
        token = self.endpoint.token
        secret = token.get_secret_value().encode() if token is not None else b""
        return answer.replace(secret, b"***") if secret else answer


def manual_doc(r: IntervalRecord) -> dict[str, Any]:
    """A manual entry as an energy-topic message: the ingest stores `manual.{counter}` of
    its device like the stage's series, so Grafana shows it (flagged by the point name)."""
    return {
        "schema_version": 1,
        "type": "manual",
        "device": r.device,
        "ts_ms": r.start_ms,
        "counter": r.counter,
        "kind": r.kind,
        "start": r.start,
        "end": r.end,
        "key": r.key,
        "flags": ["manual"],
        "points": {f"manual.{r.counter}": {"value": r.value, "unit": r.unit, "quality": "good"}},
    }


class _Outlet(Protocol):
    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int: ...


class PlatformUplink:
    """The uplink stage: keeps interval records and runs one sender per endpoint."""

    name = "uplink"

    def __init__(
        self,
        config: UplinkConfig,
        *,
        site: str,
        gateway: str,
        base: Path,
        outlet: _Outlet | None = None,
        **sender: Any,
    ) -> None:
        self.config = config
        self.outlet = outlet  # manual entries go to MQTT through it (announce())
        # How often the file is looked at for what `edge-agent uplink manual` queued.
        self.announce_s: float = sender.pop("idle_check_s", 30.0)
        self.site = site
        self.gateway = gateway
        self.store = UplinkStore.of(config, base=base)
        self.senders = [
            EndpointSender(
                self.store,
                e,
                Template.load(template_path(e.template, base=base)),
                site=site,
                gateway=gateway,
                base=base,
                **sender,
            )
            for e in config.endpoints
        ]
        self._buffer: list[IntervalRecord] = []
        self._flush_due = False

    def observe(self, poll: Poll) -> None:
        """Polls are not used: the uplink takes the energy stage's intervals (UplinkOutlet)."""

    def record(self, records: Sequence[IntervalRecord]) -> None:
        """Keep and queue records (measured or manual) and wake the senders.

        On the agent's loop the records of one loop turn (a 15-minute boundary produces one
        per counter and node, from many polls) go into one transaction at the end of the
        turn: one fsync instead of one per record (~1.5 ms each, measured).
        """
        if not records:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): at once
            self._store(records)
            return
        self._buffer.extend(records)
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Store what `record` buffered."""
        self._flush_due = False
        records, self._buffer = self._buffer, []
        self._store(records)

    def _store(self, records: Sequence[IntervalRecord]) -> None:
        if records:
            self.store.add(records)
            for s in self.senders:
                s.wake.set()
            if any(r.manual for r in records):
                self.announce()

    def announce(self) -> int:
        """Publish manual entries not yet on MQTT (energy topic, through the outbox)."""
        if self.outlet is None:
            return 0
        n = 0
        while batch := self.store.announcements(500):
            for _, r in batch:
                self.outlet.send(TOPIC_SUFFIX, manual_doc(r), device=r.device)
            self.store.announced(batch[-1][0])  # in the outbox now: durable
            n += len(batch)
        if n:
            log.info("uplink: %d manual entries published on the energy topic", n)
        return n

    async def run(self) -> None:
        """The senders, and a daily prune of the history."""
        try:
            async with asyncio.TaskGroup() as group:
                for s in self.senders:
                    group.create_task(s.run(), name=f"uplink:{s.endpoint.name}")
                group.create_task(self._watch_other_writers(), name="uplink:announce")
                while True:
                    self.store.prune(self.config.history_days)
                    await sleep_to_multiple(3600)  # with the polls' wake-up of the hour
        finally:
            self.flush()  # the last turn's records, before the agent's loop ends

    async def _watch_other_writers(self) -> None:
        # `edge-agent uplink manual` writes from another process: looked for periodically,
        # one cheap PRAGMA at multiples of announce_s on the loop's clock (where the polls
        # wake, runtime/wake_grid.py), and only a commit of another process wakes the senders.
        seen = self.store.version()
        self.announce()
        while True:
            await sleep_to_multiple(self.announce_s)
            version = self.store.version()
            if version == seen:
                continue
            seen = version
            self.announce()
            for s in self.senders:
                s.wake.set()


class UplinkOutlet:
    """Passes every energy message on, and gives interval messages to the uplink first."""

    def __init__(self, outlet: _Outlet, uplink: PlatformUplink) -> None:
        self.outlet = outlet
        self.uplink = uplink

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        self.uplink.record(records_of(doc, site=self.uplink.site, gateway=self.uplink.gateway))
        return self.outlet.send(suffix, doc, device=device, readings=readings)


def with_uplink(loaded: Any, outlet: Any, stages: list[Any]) -> Any:
    """The outlet for the energy stage: `outlet` itself without an `uplink:` block; else
    an UplinkOutlet, and the uplink joins `stages` (the agent runs its senders)."""
    config: UplinkConfig | None = loaded.site.uplink
    if config is None:
        return outlet
    uplink = PlatformUplink(
        config,
        site=loaded.site.site,
        gateway=loaded.site.gateway,
        base=loaded.path.parent,
        outlet=outlet,
    )
    stages.append(uplink)
    return UplinkOutlet(outlet, uplink)

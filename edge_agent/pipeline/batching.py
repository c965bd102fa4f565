"""Batching: several polls of a device in one data message (schema v2), for metered links.

    emit ─► stages ─► ReportFilter ─► Batcher.add(poll) ─┬─ device without `batch:` ─► v1
                                                          └─ held in the device's batch;
                                                             full, old or urgent ─► v2
                                                             message ─► outbox

A batched message (`schemas/data-v2.schema.json`) is the v1 envelope with `polls` in place
of `points`, each poll with its own `ts_ms` and points in the v1 form (a point stamped at
its source, `Poll.point_ts`, has its own `ts_ms` where it differs from its poll's):

    {"schema_version": 2, "gateway": "gw-01", "device": "meter-1", "seq": 43,
     "ts_ms": 1764154930123, "historical": false,
     "polls": [{"ts_ms": 1764154930123, "points": {"voltage_a": {...}, ...}},
               {"ts_ms": 1764154931123, "points": {"current_a": {...}}}]}

A batch goes up when it holds `max_polls`, when the next poll would take it past
`max_bytes`, when its oldest poll is `max_age_s` old (a loop timer), and at once when a
point's quality or reason changes (so a fault is not held back). The envelope and MQTT
costs (about 180 bytes per message with its PUBACK) are paid once per batch instead of
once per poll. Each poll's JSON is rendered once, when it is added, so the size is known
exactly; the envelope is spliced around the rendered polls when the batch goes up.

Devices without `batch:` go through the v1 path unchanged. A batch waits in memory and
each of its polls is also kept in the outbox (`Outbox.hold`, committed with the next
flush like any message, and released in the transaction that stores the batch's
message): the agent flushes batches when it stops, and after a crash the polls that were
waiting go up at start as one historical v2 message per device (`resend_held`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from drivers.options.report import BatchOptions
from drivers.reading import Poll, Quality
from edge_agent.config.site import LoadedConfig
from edge_agent.delivery.outbox import HeldPart

SCHEMA_VERSION = 2


class Submitter(Protocol):
    """Where batches go: the agent's forwarder (the outbox in front of MQTT)."""

    def next_seq(self) -> int: ...

    def submit(
        self, seq: int, topic: str, payload: bytes, *, device: str, readings: int
    ) -> None: ...


class Holder(Protocol):
    """Where waiting polls are kept durably: the agent's forwarder (Outbox.hold)."""

    def hold(self, device: str, topic: str, part: bytes, *, readings: int, ts_ms: int) -> int: ...

    def release(self, hold_ids: list[int]) -> None: ...


@dataclass(slots=True)
class _Batch:
    """One device's polls waiting to go up."""

    device: str
    topic: str
    options: BatchOptions
    head: dict[str, Any]  # the envelope without seq, ts_ms and polls
    parts: list[bytes] = field(default_factory=list)  # rendered polls
    size: int = 0
    readings: int = 0
    first_ts_ms: int = 0
    timer: asyncio.TimerHandle | None = None
    seen: dict[str, tuple[Quality, str] | None] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)  # the parts' ids in the outbox
    messages: int = 0  # sent so far, and their bytes (for the live view)
    bytes: int = 0


class Batcher:
    """Holds polls of devices with `batch:` and sends them as v2 messages."""

    def __init__(
        self,
        options: dict[str, BatchOptions],
        *,
        gateway: str,
        topics: dict[str, str],
        forwarder: Submitter,
        holder: Holder | None = None,
    ) -> None:
        self._forwarder = forwarder
        self._holder = holder  # None: batches wait in memory only (tests of the logic)
        self._batches = {
            name: _Batch(
                name,
                topics[name],
                opts,
                {"schema_version": SCHEMA_VERSION, "gateway": gateway, "device": name},
            )
            for name, opts in options.items()
        }

    def batches(self, device: str) -> bool:
        """True when the device's polls are batched."""
        return device in self._batches

    def sent(self, device: str) -> tuple[int, int]:
        """Messages and bytes the device's batches sent so far."""
        batch = self._batches[device]
        return batch.messages, batch.bytes

    def add(self, poll: Poll) -> bool:
        """Take a poll into its device's batch; False when the device does not batch."""
        batch = self._batches.get(poll.device)
        if batch is None:
            return False
        issues = poll.issues
        entries: dict[str, dict[str, Any]] = {}
        urgent = False
        seen = batch.seen
        points = poll.points
        for i, (spec, value) in enumerate(zip(points, poll.values, strict=True)):
            issue = issues.get(i) if issues else None
            if issue is None:
                entries[spec.name] = {"value": value, "unit": spec.unit, "quality": "good"}
            else:
                entries[spec.name] = {
                    "value": value,
                    "unit": spec.unit,
                    "quality": issue[0].value,
                    "reason": issue[1],
                }
            if seen.get(spec.name, _GOOD) != issue:
                seen[spec.name] = issue
                urgent = True
        ts_ms = poll.ts_ns // 1_000_000
        point_ts = poll.point_ts
        if point_ts is not None:
            for i, ns in point_ts.items():
                if ns // 1_000_000 != ts_ms:
                    entries[points[i].name]["ts_ms"] = ns // 1_000_000
        part = orjson.dumps({"ts_ms": ts_ms, "points": entries})
        options = batch.options
        if batch.parts and batch.size + len(part) + 1 > options.max_bytes:
            self._send(batch)
        if not batch.parts:
            batch.first_ts_ms = ts_ms
            batch.timer = asyncio.get_running_loop().call_later(
                options.max_age_s, self._send, batch
            )
        batch.parts.append(part)
        batch.size += len(part) + 1
        batch.readings += len(poll.values)
        if self._holder is not None:
            batch.held.append(
                self._holder.hold(
                    batch.device, batch.topic, part, readings=len(poll.values), ts_ms=ts_ms
                )
            )
        if urgent or len(batch.parts) >= options.max_polls or batch.size >= options.max_bytes:
            self._send(batch)
        return True

    def flush(self) -> None:
        """Send every batch now (when the agent stops)."""
        for batch in self._batches.values():
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.parts:
            return
        payload = _submit(
            self._forwarder,
            batch.head,
            batch.first_ts_ms,
            batch.parts,
            topic=batch.topic,
            readings=batch.readings,
            historical=False,
        )
        if self._holder is not None and batch.held:
            self._holder.release(batch.held)  # in the transaction that stores the message
            batch.held = []
        batch.messages += 1
        batch.bytes += len(payload)
        batch.parts.clear()
        batch.size = batch.readings = 0


def resend_held(
    parts: list[HeldPart], *, gateway: str, forwarder: Submitter, holder: Holder
) -> int:
    """Polls that waited in batches when the agent last stopped without sending them (a
    crash): one v2 message per device, flagged historical, oldest first, whether or not
    the device still batches. Returns the number of messages."""
    by_device: dict[str, list[HeldPart]] = {}
    for p in parts:
        by_device.setdefault(p.device, []).append(p)
    for device, held in by_device.items():
        _submit(
            forwarder,
            {"schema_version": SCHEMA_VERSION, "gateway": gateway, "device": device},
            held[0].ts_ms,
            [p.part for p in held],
            topic=held[0].topic,
            readings=sum(p.readings for p in held),
            historical=True,
        )
        holder.release([p.id for p in held])
    return len(by_device)


def _submit(
    forwarder: Submitter,
    head: dict[str, Any],
    ts_ms: int,
    parts: list[bytes],
    *,
    topic: str,
    readings: int,
    historical: bool,
) -> bytes:
    """One v2 message: the envelope spliced around the rendered polls, submitted."""
    seq = forwarder.next_seq()
    envelope = orjson.dumps({**head, "seq": seq, "ts_ms": ts_ms, "historical": historical})
    payload = b"".join((envelope[:-1], b',"polls":[', b",".join(parts), b"]}"))
    forwarder.submit(seq, topic, payload, device=head["device"], readings=readings)
    return payload


_GOOD: tuple[Quality, str] | None = None  # a point never seen counts as good: bad is news


def build_batcher(
    loaded: LoadedConfig,
    *,
    topics: dict[str, str],
    forwarder: Submitter,
    holder: Holder | None = None,
) -> Batcher | None:
    """The site's batcher, or None when no device has `batch:` options."""
    options: dict[str, BatchOptions] = {}
    for setup in loaded.devices:
        device = setup.device
        if device.batch is not None and device.enabled:
            options[device.name] = device.batch
    if not options:
        return None
    return Batcher(
        options,
        gateway=loaded.site.gateway,
        topics={name: topics[name] for name in options},
        forwarder=forwarder,
        holder=holder,
    )

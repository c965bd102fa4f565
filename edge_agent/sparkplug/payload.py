"""Sparkplug B payloads, encoded with the classes generated from sparkplug_b.proto.

What goes into the outbox is a payload *body*: only its metrics (field 2). The fields a
message gets when it is sent are added then, in front and behind, which protobuf allows
(fields may come in any order; these come out in field order anyway):

    stamp(body) = [1: timestamp, send time in ms] + body + [3: seq, 0..255]

so a message stored during an outage gets the seq of the session that sends it, and a
replayed body is parsed once to set `is_historical` on each metric (`historical`).

A metric carries its name (no aliases), its acquisition time, its datatype in births, its
value, or `is_null` when it has none, and a `Quality` property (Int32: 0 BAD, 500 STALE
for OPC UA's uncertain) while it is not good, and 192 GOOD in the first message after it
is good again. Births carry each metric's unit as the String property `engUnit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from drivers.reading import PointSpec, Poll, Quality, Value
from edge_agent.sparkplug import sparkplug_b_pb2 as pb
from edge_agent.sparkplug.datatypes import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    TEXT,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
)

BAD, GOOD, STALE = 0, 192, 500
QUALITY_KEY = "Quality"
UNIT_KEY = "engUnit"
BDSEQ = "bdSeq"
NODE_REBIRTH = "Node Control/Rebirth"
DEVICE_REBIRTH = "Device Control/Rebirth"
_CODES = {Quality.BAD: BAD, Quality.UNCERTAIN: STALE}
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

Metric = Any  # pb.Payload.Metric: the generated class is not a usable annotation


def _u32(m: Metric, v: Value) -> None:
    m.int_value = int(v) & _U32  # type: ignore[arg-type]


def _u64(m: Metric, v: Value) -> None:
    m.long_value = int(v) & _U64  # type: ignore[arg-type]


def _float(m: Metric, v: Value) -> None:
    m.float_value = float(v)  # type: ignore[arg-type]


def _double(m: Metric, v: Value) -> None:
    m.double_value = float(v)  # type: ignore[arg-type]


def _bool(m: Metric, v: Value) -> None:
    m.boolean_value = bool(v)


def _str(m: Metric, v: Value) -> None:
    m.string_value = str(v)


# Signed integers travel as two's complement in the unsigned fields (the spec's table).
SETTERS: dict[int, Callable[[Metric, Value], None]] = {
    INT8: _u32,
    INT16: _u32,
    INT32: _u32,
    UINT8: _u32,
    UINT16: _u32,
    UINT32: _u32,
    INT64: _u64,
    UINT64: _u64,
    DATETIME: _u64,
    FLOAT: _float,
    DOUBLE: _double,
    BOOLEAN: _bool,
    STRING: _str,
    TEXT: _str,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def stamp(body: bytes, *, ts_ms: int, seq: int | None) -> bytes:
    """A full payload: `body` (metrics) with the send time and, unless None, the seq."""
    head = b"\x08" + _varint(ts_ms)
    return head + body if seq is None else head + body + b"\x18" + _varint(seq)


def historical(body: bytes) -> bytes:
    """The same metrics marked is_historical, so hosts keep them out of the live values."""
    payload = pb.Payload.FromString(body)
    metrics = payload.metrics
    for i in reversed(range(len(metrics))):
        if metrics[i].name == DEVICE_REBIRTH:  # a stored DBIRTH's: not a reading
            del metrics[i]
    for metric in metrics:
        metric.is_historical = True
    return bytes(payload.SerializeToString())


def decode(payload: bytes) -> Any:
    """Parse a Sparkplug B payload (pb.Payload)."""
    return pb.Payload.FromString(payload)


def _quality(metric: Metric, code: int) -> None:
    props = metric.properties
    props.keys.append(QUALITY_KEY)
    value = props.values.add()
    value.type = INT32
    value.int_value = code


def _fill(metric: Metric, datatype: int, value: Value, code: int) -> int:
    """Set the value (or is_null); returns the quality code actually sent."""
    if value is None:
        metric.is_null = True
        return BAD if code == GOOD else code
    try:
        SETTERS[datatype](metric, value)
    except (TypeError, ValueError, OverflowError):
        metric.ClearField("value")  # e.g. a text where a number was declared
        metric.is_null = True
        return BAD
    return code


def node_birth_body(bd_seq: int, *, ts_ms: int) -> bytes:
    """NBIRTH metrics: bdSeq and Node Control/Rebirth = false (tck-id-payloads-nbirth-*)."""
    payload = pb.Payload()
    payload.metrics.add(name=BDSEQ, timestamp=ts_ms, datatype=INT64, long_value=bd_seq)
    payload.metrics.add(name=NODE_REBIRTH, timestamp=ts_ms, datatype=BOOLEAN, boolean_value=False)
    return bytes(payload.SerializeToString())


def node_death(bd_seq: int, *, ts_ms: int) -> bytes:
    """The NDEATH payload: a timestamp and the bdSeq metric only, no seq."""
    payload = pb.Payload(timestamp=ts_ms)
    payload.metrics.add(name=BDSEQ, timestamp=ts_ms, datatype=INT64, long_value=bd_seq)
    return bytes(payload.SerializeToString())


class DeviceMetrics:
    """Encodes one device's births and data messages for its point list."""

    def __init__(self, points: tuple[PointSpec, ...], types: Sequence[int]) -> None:
        self.points = points
        self.types = list(types)
        self._index = {p.name: i for i, p in enumerate(points)}
        self._sent_quality = [GOOD] * len(points)  # the last code each metric went up with

    def data(self, poll: Poll) -> bytes:
        """DDATA metrics of the poll's points (all of the device's, or a thinned subset)."""
        payload = pb.Payload()
        add = payload.metrics.add
        ts_ms = poll.ts_ns // 1_000_000
        point_ts = poll.point_ts
        issues = poll.issues
        full = poll.points is self.points
        index = self._index
        types = self.types
        sent = self._sent_quality
        for k, (spec, value) in enumerate(zip(poll.points, poll.values, strict=True)):
            i = k if full else index[spec.name]
            at = point_ts.get(k, poll.ts_ns) // 1_000_000 if point_ts else ts_ms
            metric = add(name=spec.name, timestamp=at)
            issue = issues.get(k) if issues else None
            code = _fill(metric, types[i], value, GOOD if issue is None else _CODES[issue[0]])
            if code != GOOD or sent[i] != GOOD:
                _quality(metric, code)
            sent[i] = code
        return bytes(payload.SerializeToString())

    def birth(self, poll: Poll | None, *, ts_ms: int, rebirth_metric: bool = True) -> bytes:
        """DBIRTH metrics: every point with datatype, unit and the last value read.

        `poll` is the device's last full poll; None before the first one (values null,
        quality STALE).
        """
        payload = pb.Payload()
        add = payload.metrics.add
        sent = self._sent_quality
        for i, (spec, datatype) in enumerate(zip(self.points, self.types, strict=True)):
            if poll is None:
                value: Value = None
                at = ts_ms
                code = STALE
            else:
                value = poll.values[i]
                stamps = poll.point_ts
                at = (stamps.get(i, poll.ts_ns) if stamps else poll.ts_ns) // 1_000_000
                issue = poll.issues.get(i)
                code = GOOD if issue is None else _CODES[issue[0]]
            metric = add(name=spec.name, timestamp=at, datatype=datatype)
            code = _fill(metric, datatype, value, code)
            if spec.unit:
                props = metric.properties
                props.keys.append(UNIT_KEY)
                props.values.add(type=STRING, string_value=spec.unit)
            if code != GOOD:
                _quality(metric, code)
            sent[i] = code
        if rebirth_metric:
            payload.metrics.add(
                name=DEVICE_REBIRTH, timestamp=ts_ms, datatype=BOOLEAN, boolean_value=False
            )
        return bytes(payload.SerializeToString())

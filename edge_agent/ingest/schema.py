"""What the ingest stores for a data message: validation, then line protocol (or rows).

A data message (README, contract v1) arrives on `{prefix}/{site}/{gateway}/{device}/data`.
`decode_data` checks it completely or raises `Rejected` with a bounded `kind` (the label
the service counts and puts in the dead-letter envelope) and a human `detail`.

Each point becomes one line, i.e. one series per point (narrow schema):

    edge,device=meter-1,gateway=gw-01,point=voltage_a,profile=chint-dtsu666,site=plant-a,unit=V
        value=230.5,quality=0i 1764154930123

- measurement `edge` (configurable); tags in sorted order: device, gateway, point,
  profile (only when the ingest's config knows the device's profile), site, unit (absent
  when the point has none). Every tag value comes from a name the config pattern allows or
  from a profile's unit, so cardinality is the number of configured points.
- `value`: a float for every number (ints too, so a series never changes field type),
  1/0 for booleans. Written only for good and uncertain points: a bad point has no value,
  so sums and averages never include it.
- `quality`: 0 good, 1 uncertain, 2 bad, on every line.
- `reason`: a small integer class (REASON_CODES, Modbus exceptions as 100 + code) on lines
  that are not good; the reason's text is free-form and would make an unbounded tag.
- strings: skipped unless `string_values` (then a `text` string field): VictoriaMetrics
  stores string fields as 0.
- timestamp: the message's `ts_ms`, precision ms, so replayed data keeps its time and a
  reading written twice lands on the same series and timestamp (one point); a point with
  a `ts_ms` of its own (stamped at its source, OPC UA) is written at that time instead.
  It is checked like the message's: an integer, not before 2000, not more than
  `max_future_ms` ahead, or the whole message is rejected naming the point.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

SCHEMA_VERSION = 1
QUALITY_CODES: Mapping[str, int] = {"good": 0, "uncertain": 1, "bad": 2}
QUALITY_NAMES = ("good", "uncertain", "bad")
MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything earlier is a gateway with no clock
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

# Reason classes for the time-series store; the embedded store keeps the full text.
REASON_CODES: Mapping[str, int] = {
    "timeout": 1,
    "connection refused": 2,
    "connection lost": 3,
    "short answer": 4,
    "invalid BCD digit": 5,
    "not finite": 6,
}
REASON_OTHER = 99
REASON_EXCEPTION_BASE = 100  # "exception 02 (...)" -> 102
_EXCEPTION = re.compile(r"exception (\d{1,3})\b")
_CACHE_LIMIT = 10_000  # names, units and reasons remembered; bounded against odd publishers

Value = float | int | bool | str | None
# name, value, unit, quality code, reason
Point = tuple[str, Value, str | None, int, str | None]

REJECT_KINDS = (
    "malformed_json",
    "not_data",
    "schema_version",
    "topic_mismatch",
    "bad_field",
    "bad_timestamp",
    "bad_point",
    "bad_value",
    "not_configured",  # a site, gateway, device or point without series (ingest_series.py)
    "too_large",  # over ingest.max_message_bytes or ingest.max_points_per_message
    "no_metadata",  # a compact message whose device's metadata never came (ingest/meta.py)
    "unexpected",  # the ingest itself failed on it (logged with a traceback)
)
NAME_MAX = 64  # characters of a site, gateway, device or point name (the NAME pattern)


class Rejected(Exception):
    """A message the ingest will not store; `kind` is one of REJECT_KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from, from its topic."""

    topic: str
    site: str
    gateway: str
    device: str


@dataclass(slots=True)
class DataMessage:
    """A validated data message.

    `point_ts` maps an index of `points` to that point's own time (ms) when the message
    gave it one; None when no point has one (every point is at `ts_ms`).
    """

    source: Source
    seq: int
    ts_ms: int
    historical: bool
    points: list[Point]
    point_ts: dict[int, int] | None = None


ENERGY_TOPIC = "energy"  # derived series of the energy stage, ingested like readings


def topic_levels(topic: str, prefix: str) -> list[str] | None:
    """The levels of `topic` under `prefix` (`{prefix}/a/b` -> [a, b]); None outside it."""
    if not topic.startswith(prefix) or topic[len(prefix) : len(prefix) + 1] != "/":
        return None
    return topic[len(prefix) + 1 :].split("/")


def parse_topic(topic: str, prefix: str) -> Source | None:
    """`{prefix}/{site}/{gateway}/{device}/data` or `{prefix}/{site}/{gateway}/energy` -> Source.

    Derived energy series name their meter (or hierarchy node) in the payload, not the
    topic: their Source has device "" until decode_data reads it. None for other topics.
    """
    parts = topic_levels(topic, prefix)
    if parts is None:
        return None
    if len(parts) == 4 and parts[3] == "data":
        return Source(topic, parts[0], parts[1], parts[2])
    if len(parts) == 3 and parts[2] == ENERGY_TOPIC:
        return Source(topic, parts[0], parts[1], "")
    return None


def reason_code(reason: str | None) -> int:
    """The bounded class of a quality reason, e.g. 'exception 02 (...)' -> 102."""
    if reason is None:
        return REASON_OTHER
    code = _reason_cache.get(reason)
    if code is not None:
        return code
    code = REASON_OTHER
    match = _EXCEPTION.match(reason)
    if match is not None and int(match.group(1)) <= 255:
        code = REASON_EXCEPTION_BASE + int(match.group(1))
    else:
        for prefix, value in REASON_CODES.items():
            if reason.startswith(prefix):
                code = value
                break
    if len(_reason_cache) < _CACHE_LIMIT:
        _reason_cache[reason] = code
    return code


_reason_cache: dict[str, int] = {}
_good_names: set[str] = set()
_good_units: set[str] = set()


def _valid_name(name: str) -> bool:
    if name in _good_names:
        return True
    if NAME.fullmatch(name) is None:
        return False
    if len(_good_names) < _CACHE_LIMIT:
        _good_names.add(name)
    return True


def json_object(payload: bytes, what: str) -> dict[str, object]:
    """The payload's JSON object; Rejected (malformed_json, not_data) naming `what` it is."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", str(exc)) from None
    if type(doc) is not dict:
        raise Rejected("not_data", f"{what} is a JSON object, got {type(doc).__name__}")
    return doc


def _int_field(doc: dict[str, object], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int:
        raise Rejected("bad_field", f"{key} must be an integer, got {_shown(value)}")
    return value


def decode_data(
    source: Source, payload: bytes, *, now_ms: int, max_future_ms: int, max_points: int = 0
) -> DataMessage:
    """Validate one data message completely; raises Rejected naming the first problem.

    `max_points` > 0: a message with more points is `too_large`.
    """
    doc = json_object(payload, "a data message")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:
        raise Rejected("schema_version", f"schema_version {_shown(version)}, expected 1")
    if source.device == "":  # an energy message: the device is in the payload
        named = doc.get("device")
        source = Source(
            source.topic, source.site, source.gateway, named if type(named) is str else "?"
        )
    seq, ts_ms, historical = _envelope(doc, source, now_ms=now_ms, max_future_ms=max_future_ms)
    raw_points = doc.get("points")
    if type(raw_points) is not dict or not raw_points:
        raise Rejected("bad_field", "points must be a non-empty object")
    if max_points and len(raw_points) > max_points:
        raise Rejected(
            "too_large",
            f"{len(raw_points):,} points, over ingest.max_points_per_message ({max_points:,})",
        )
    points: list[Point] = []
    append = points.append
    point_ts: dict[int, int] | None = None
    for name, entry in raw_points.items():
        if type(entry) is not dict:
            raise Rejected("bad_point", f"point {shown_name(name)} is not an object")
        value = entry.get("value")
        unit = entry.get("unit")
        quality = QUALITY_CODES.get(entry.get("quality"))  # type: ignore[arg-type]
        reason = entry.get("reason")
        kind = type(value)
        if (
            quality == 0
            and reason is None
            and (kind is float or kind is int)
            and (unit is None or unit in _good_units)
            and name in _good_names
            and len(entry) == 3  # value, unit, quality: no ts_ms of its own
        ):
            append((name, value, unit, 0, None))  # the common case, checked in one go
            continue
        append(_checked_point(name, value, unit, quality, reason, entry))
        if "ts_ms" in entry:
            if point_ts is None:
                point_ts = {}
            point_ts[len(points) - 1] = _point_time(
                name, entry["ts_ms"], now_ms=now_ms, max_future_ms=max_future_ms
            )
    return DataMessage(source, seq, ts_ms, historical, points, point_ts)


def _envelope(
    doc: dict[str, object], source: Source, *, now_ms: int, max_future_ms: int
) -> tuple[int, int, bool]:
    """What every data message version carries alike, checked against its topic: seq,
    ts_ms and the historical flag; Rejected naming the first problem."""
    for name in (source.site, source.gateway, source.device):
        if not _valid_name(name):
            raise Rejected("topic_mismatch", f"topic level {shown_name(name)} is not a valid name")
    if doc.get("gateway") != source.gateway or doc.get("device") != source.device:
        raise Rejected(
            "topic_mismatch",
            f"message says gateway {_shown(doc.get('gateway'))} device "
            f"{_shown(doc.get('device'))}, topic says {source.gateway!r} {source.device!r}",
        )
    seq = _int_field(doc, "seq")
    if seq < 1:
        raise Rejected("bad_field", f"seq must be >= 1, got {seq}")
    ts_ms = _int_field(doc, "ts_ms")
    _check_time(ts_ms, "", now_ms=now_ms, max_future_ms=max_future_ms)
    historical = doc.get("historical")
    if type(historical) is not bool:
        raise Rejected("bad_field", f"historical must be true or false, got {_shown(historical)}")
    return seq, ts_ms, historical


def _check_time(ts_ms: int, point: str, *, now_ms: int, max_future_ms: int) -> None:
    """The message's (or a point's) time must be after 2000 and not far in the future."""
    where = f"point {point!r}: " if point else ""
    if ts_ms < MIN_TS_MS:
        raise Rejected("bad_timestamp", f"{where}ts_ms {ts_ms} is before 2000-01-01")
    if ts_ms > now_ms + max_future_ms:
        ahead = (ts_ms - now_ms) / 1000
        raise Rejected("bad_timestamp", f"{where}ts_ms {ts_ms} is {ahead:.0f} s in the future")


def _point_time(name: str, value: object, *, now_ms: int, max_future_ms: int) -> int:
    if type(value) is not int:
        shown = _shown(value)
        raise Rejected("bad_point", f"point {name!r}: ts_ms must be an integer, got {shown}")
    _check_time(value, name, now_ms=now_ms, max_future_ms=max_future_ms)
    return value


def _checked_point(
    name: str,
    value: object,
    unit: object,
    quality: int | None,
    reason: object,
    entry: dict[str, object],
) -> Point:
    if not _valid_name(name):
        raise Rejected("bad_point", f"point name {shown_name(name)} is not a valid name")
    if quality is None:
        raise Rejected("bad_point", f"point {name!r}: quality {_shown(entry.get('quality'))}")
    if unit is not None and unit not in _good_units:
        # Printable only: a newline would end a line of line protocol.
        if type(unit) is not str or not unit.isprintable() or len(unit) > 32:
            raise Rejected("bad_point", f"point {name!r}: unit {_shown(unit)}")
        if len(_good_units) < _CACHE_LIMIT:
            _good_units.add(unit)
    if quality == 0:
        if reason is not None:
            raise Rejected("bad_point", f"point {name!r}: a good point has no reason")
    elif type(reason) is not str or not reason:
        raise Rejected(
            "bad_point", f"point {name!r}: quality {QUALITY_NAMES[quality]} needs a reason"
        )
    if quality == 2:
        if value is not None:
            raise Rejected("bad_value", f"point {name!r}: a bad point has value {_shown(value)}")
    elif value is None:
        raise Rejected(
            "bad_value", f"point {name!r}: quality {QUALITY_NAMES[quality]} but no value"
        )
    elif type(value) not in (float, int, bool, str):
        raise Rejected("bad_value", f"point {name!r}: value {_shown(value)}")
    return (name, value, unit, quality, reason)  # type: ignore[return-value]


def shown_name(name: str) -> str:
    """A name from a message, quoted, cut so a detail never echoes a runaway one."""
    if len(name) <= NAME_MAX:
        return repr(name)
    return f"{name[:NAME_MAX]!r}... ({len(name):,} characters, at most {NAME_MAX})"


def _shown(value: object) -> str:
    text = orjson.dumps(value).decode() if _dumpable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dumpable(value: object) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def escape_tag(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LineEncoder:
    """Renders data messages as InfluxDB line protocol, one line per point (module docstring).

    Tag prefixes are built once per device and unit tags once per unit.
    """

    def __init__(
        self,
        measurement: str = "edge",
        *,
        profiles: Mapping[tuple[str, str, str], str] | None = None,
        string_values: bool = False,
    ) -> None:
        self.measurement = measurement
        self.string_values = string_values
        self._profiles = dict(profiles or {})
        self._heads: dict[Source, tuple[str, str]] = {}
        self._units: dict[str | None, str] = {None: ""}

    def _head(self, source: Source) -> tuple[str, str]:
        head = self._heads.get(source)
        if head is None:
            profile = self._profiles.get((source.site, source.gateway, source.device))
            before = f"{self.measurement},device={source.device},gateway={source.gateway},point="
            after = f",profile={escape_tag(profile)}" if profile else ""
            head = (before, f"{after},site={source.site}")
            if len(self._heads) < _CACHE_LIMIT:
                self._heads[source] = head
        return head

    def _unit(self, unit: str | None) -> str:
        tag = self._units.get(unit)
        if tag is None:
            tag = f",unit={escape_tag(unit)}" if unit else ""
            if len(self._units) < _CACHE_LIMIT:
                self._units[unit] = tag
        return tag

    def encode(self, message: DataMessage, out: list[str]) -> int:
        """Append one line per point to `out`; returns the number of lines."""
        start = len(out)
        before, after = self._head(message.source)
        ts = f" {message.ts_ms}"
        units = self._units
        for name, value, unit, quality, reason in message.points:
            unit_tag = units.get(unit)
            if unit_tag is None:
                unit_tag = self._unit(unit)
            kind = type(value)
            if quality == 0 and (kind is float or kind is int):
                out.append(f"{before}{name}{after}{unit_tag} value={value!r},quality=0i{ts}")
                continue
            fields = []
            if kind is bool:
                fields.append("value=1" if value else "value=0")
            elif kind is float or kind is int:
                fields.append(f"value={value!r}")
            elif kind is str and self.string_values:
                fields.append(f'text="{_escape_string(value)}"')  # type: ignore[arg-type]
            fields.append(f"quality={quality}i")
            if quality:
                fields.append(f"reason={reason_code(reason)}i")
            out.append(f"{before}{name}{after}{unit_tag} {','.join(fields)}{ts}")
        point_ts = message.point_ts
        if point_ts is not None:
            # A line ends with " <time>" (a space inside a string field comes before it):
            # points with a time of their own get it in place of the message's.
            for k, point_ms in point_ts.items():
                line = out[start + k]
                out[start + k] = f"{line[: line.rindex(' ')]} {point_ms}"
        return len(message.points)


BATCH_SCHEMA_VERSION = 2  # several polls of a device in one message (pipeline/batching.py)
_BATCH_HEAD = b'{"schema_version":2,'


def decode_messages(
    source: Source,
    payload: bytes,
    *,
    now_ms: int,
    max_future_ms: int,
    max_points: int = 0,
    units: UnitsOf | None = None,
) -> list[DataMessage]:
    """A data message as DataMessages: one for v1, one per poll for a batched v2 message,
    one for a compact v3 message (its units from `units`; raises MetaMissing without them).

    Each poll of a batch is checked exactly as a v1 message with the batch's envelope and
    the poll's own `ts_ms` and `points`, so both forms store the same rows.
    """
    if payload.startswith(_COMPACT_HEAD):
        return [
            decode_compact(
                source,
                payload,
                units=units,
                now_ms=now_ms,
                max_future_ms=max_future_ms,
                max_points=max_points,
            )
        ]
    if not payload.startswith(_BATCH_HEAD):
        try:
            return [
                decode_data(
                    source,
                    payload,
                    now_ms=now_ms,
                    max_future_ms=max_future_ms,
                    max_points=max_points,
                )
            ]
        except Rejected as rejected:
            if rejected.kind != "schema_version":
                raise
            try:  # a v2 or v3 message whose keys came in another order
                if b'"values"' in payload:
                    return [
                        decode_compact(
                            source,
                            payload,
                            units=units,
                            now_ms=now_ms,
                            max_future_ms=max_future_ms,
                            max_points=max_points,
                        )
                    ]
                return _decode_batch(
                    source,
                    payload,
                    now_ms=now_ms,
                    max_future_ms=max_future_ms,
                    max_points=max_points,
                )
            except Rejected as batch_rejected:
                if batch_rejected.kind == "schema_version":
                    raise rejected from None
                raise
    return _decode_batch(
        source, payload, now_ms=now_ms, max_future_ms=max_future_ms, max_points=max_points
    )


def _decode_batch(
    source: Source, payload: bytes, *, now_ms: int, max_future_ms: int, max_points: int
) -> list[DataMessage]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", str(exc)) from None
    if type(doc) is not dict or doc.get("schema_version") != BATCH_SCHEMA_VERSION:
        raise Rejected("schema_version", "not a batched (version 2) message")
    if "polls" not in doc:
        # A v1 message with the wrong version, rather than a broken batch.
        raise Rejected("schema_version", "schema_version 2 without polls, expected 1")
    polls = doc.pop("polls")
    if type(polls) is not list or not polls:
        raise Rejected("bad_field", "polls must be a non-empty array")
    if "points" in doc:
        raise Rejected("bad_field", "a batched message has polls, not points")
    doc["schema_version"] = SCHEMA_VERSION
    messages = []
    for k, poll in enumerate(polls):
        if type(poll) is not dict or set(poll) != {"ts_ms", "points"}:
            raise Rejected("bad_field", f"polls[{k}] must be an object of ts_ms and points")
        one = orjson.dumps({**doc, "ts_ms": poll["ts_ms"], "points": poll["points"]})
        messages.append(
            decode_data(
                source, one, now_ms=now_ms, max_future_ms=max_future_ms, max_points=max_points
            )
        )
    return messages


COMPACT_SCHEMA_VERSION = 3  # values only; units in the device's metadata (pipeline/compact.py)
_COMPACT_HEAD = b'{"schema_version":3,'
# (source, meta id) -> point -> unit of that version of the device's metadata, or None.
UnitsOf = Callable[[Source, str], Mapping[str, str | None] | None]


class MetaMissing(Exception):
    """A compact message whose metadata version this worker does not hold (yet)."""

    def __init__(self, meta_id: str) -> None:
        super().__init__(f"metadata {meta_id!r} not received")
        self.meta_id = meta_id


def decode_compact(
    source: Source,
    payload: bytes,
    *,
    units: UnitsOf | None,
    now_ms: int,
    max_future_ms: int,
    max_points: int = 0,
) -> DataMessage:
    """Validate a compact (v3) message and read it as the v1 message it stands for: the
    points get the units of the metadata version it names. Raises Rejected, or MetaMissing
    when `units` has no such version."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", str(exc)) from None
    if type(doc) is not dict or doc.get("schema_version") != COMPACT_SCHEMA_VERSION:
        raise Rejected("schema_version", "not a compact (version 3) message")
    if "values" not in doc:  # another version's message with a wrong number
        raise Rejected("schema_version", "schema_version 3 without values, expected 1")
    seq, ts_ms, historical = _envelope(doc, source, now_ms=now_ms, max_future_ms=max_future_ms)
    meta_id = doc.get("meta")
    if type(meta_id) is not str or not meta_id:
        raise Rejected("bad_field", f"meta must name the metadata, got {_shown(meta_id)}")
    values = doc.get("values")
    if type(values) is not dict or not values:
        raise Rejected("bad_field", "values must be a non-empty object")
    if max_points and len(values) > max_points:
        raise Rejected(
            "too_large",
            f"{len(values):,} points, over ingest.max_points_per_message ({max_points:,})",
        )
    issues = _named_object(doc, "issues", values)
    stamps = _named_object(doc, "point_ts", values)
    unit_of = None if units is None else units(source, meta_id)
    if unit_of is None:
        raise MetaMissing(meta_id)
    points: list[Point] = []
    append = points.append
    point_ts: dict[int, int] | None = None
    for name, value in values.items():
        unit = unit_of.get(name, _NOT_DESCRIBED)
        if unit is _NOT_DESCRIBED:  # not the metadata this message was encoded against
            raise MetaMissing(meta_id)
        issue = issues.get(name)
        kind = type(value)
        if (
            issue is None
            and (kind is float or kind is int)
            and (unit is None or unit in _good_units)
            and name in _good_names
        ):
            append((name, value, unit, 0, None))
        else:
            entry: dict[str, object] = {"value": value, "unit": unit, "quality": "good"}
            if issue is not None:
                if type(issue) is not dict or set(issue) != {"quality", "reason"}:
                    raise Rejected(
                        "bad_point", f"point {shown_name(name)}: an issue is quality and reason"
                    )
                if issue["quality"] == "good":
                    raise Rejected("bad_point", f"point {shown_name(name)}: an issue is not good")
                entry.update(issue)
            quality = QUALITY_CODES.get(entry["quality"])  # type: ignore[call-overload]
            append(_checked_point(name, value, unit, quality, entry.get("reason"), entry))
        if name in stamps:
            if point_ts is None:
                point_ts = {}
            point_ts[len(points) - 1] = _point_time(
                name, stamps[name], now_ms=now_ms, max_future_ms=max_future_ms
            )
    return DataMessage(source, seq, ts_ms, historical, points, point_ts)


def _named_object(doc: dict[str, object], key: str, values: dict[str, object]) -> dict[str, object]:
    """An optional object of a compact message keyed by names among `values`."""
    found = doc.get(key)
    if found is None:
        return {}
    if type(found) is not dict:
        raise Rejected("bad_field", f"{key} must be an object")
    for name in found:
        if name not in values:
            raise Rejected("bad_field", f"{key} names {shown_name(name)}, which has no value")
    return found


_NOT_DESCRIBED = object()  # a point the metadata does not list

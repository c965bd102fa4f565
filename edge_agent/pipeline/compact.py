"""The compact data message (`mqtt: {payload: compact}`, schema `schemas/data-v3.schema.json`).

Same topic as version 1 (`{prefix}/{site}/{gateway}/{device}/data`), one message per
device per poll, with nothing per point that the device's metadata message already says
(units, types: `pipeline/device_meta.py`, retained on `.../{device}/meta`):

    {"schema_version": 3, "gateway": "gw-01", "device": "meter-1", "seq": 42,
     "ts_ms": 1764154930123, "historical": false, "meta": "5c1e09a2",
     "values": {"voltage_a": 230.5, "pf_total": null},
     "issues": {"pf_total": {"quality": "bad", "reason": "exception 02 (illegal data address)"}},
     "point_ts": {"gas_lel": 1764154930412}}

- `values`: every point of the poll (a subset under report by exception), plan order,
  by name: a message stands on its own for its values, and a subscriber that holds
  another version of the metadata still reads every value right.
- `issues`: only the points that are not good, with quality and reason; absent when
  every point is good. A point not listed is good.
- `point_ts`: a point's own time where it differs from `ts_ms` (OPC UA); absent otherwise.
- `meta`: the id of the metadata the message was encoded against.

`"historical":false` comes before the values, as in version 1: the forwarder flips the
first occurrence when it replays a stored message.
"""

from __future__ import annotations

from typing import Any

import orjson

from drivers.reading import PointSpec, Poll
from drivers.weak_shared import WeakShared

SCHEMA_VERSION = 3


class _Names:
    """A point list's names in order and as a set; devices with equal lists share one
    (500 meters of one model: one tuple and one set instead of 500 of each, ~1.3 MB)."""

    __slots__ = ("__weakref__", "known", "names")

    def __init__(self, points: tuple[PointSpec, ...]) -> None:
        self.names = tuple(p.name for p in points)
        self.known = frozenset(self.names)


_names_of: WeakShared[tuple[PointSpec, ...], _Names] = WeakShared(_Names)


class CompactEncoder:
    """Renders the compact data messages of one device; built once per device."""

    def __init__(
        self, *, gateway: str, device: str, points: tuple[PointSpec, ...], meta_id: str
    ) -> None:
        self.points = points
        self.meta_id = meta_id
        self._shared = _names_of(points)
        self._names = self._shared.names
        self._known = self._shared.known
        self._doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "gateway": gateway,
            "device": device,
            "seq": 0,
            "ts_ms": 0,
            "historical": False,
            "meta": meta_id,
            "values": None,
        }
        self.messages = 0  # counted for the live view: uplink messages and bytes per hour
        self.bytes = 0

    def encode(self, poll: Poll, *, seq: int, historical: bool = False) -> bytes:
        """The compact message for one poll (all the device's points, or a subset)."""
        if poll.points is self.points:
            names = self._names
        else:
            names = tuple(p.name for p in poll.points)
            unknown = [n for n in names if n not in self._known]
            if unknown:
                raise ValueError(f"{poll.device}: no point {unknown[0]!r} in this device")
        doc = self._doc
        doc["seq"] = seq
        doc["ts_ms"] = ts_ms = poll.ts_ns // 1_000_000
        doc["historical"] = historical
        doc["values"] = dict(zip(names, poll.values, strict=True))
        extra = doc
        if poll.issues or poll.point_ts:
            extra = dict(doc)
            if poll.issues:
                extra["issues"] = {
                    names[i]: {"quality": quality.value, "reason": reason}
                    for i, (quality, reason) in sorted(poll.issues.items())
                }
            if poll.point_ts:
                stamped = {
                    names[i]: ns // 1_000_000
                    for i, ns in sorted(poll.point_ts.items())
                    if ns // 1_000_000 != ts_ms
                }
                if stamped:
                    extra["point_ts"] = stamped
        out = orjson.dumps(extra)
        self.messages += 1
        self.bytes += len(out)
        return out

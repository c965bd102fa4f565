"""The data message: one JSON document per device per poll (schema `schemas/data-v1.json`).

    {"schema_version": 1, "gateway": "gw-01", "device": "meter-1", "seq": 42,
     "ts_ms": 1764154930123, "historical": false,
     "points": {"voltage_a": {"value": 230.5, "unit": "V", "quality": "good"},
                "pf_total":  {"value": null, "unit": null, "quality": "bad",
                              "reason": "exception 02 (illegal data address)"}}}

orjson renders it; measured here at about 0.26 µs per point, under half the cost of
pre-rendered string templates joined in Python.

A poll thinned by report by exception (edge_agent/report_filter.py) carries a subset of
the device's points, in plan order; its message lists just those points, in the same v1
form. A full poll is recognised by identity (`poll.points is encoder.points`), so the
hot path pays one comparison for the subset case.
"""

from __future__ import annotations

from typing import Any

import orjson

from drivers.reading import PointSpec, Poll

SCHEMA_VERSION = 1


class DeviceEncoder:
    """Renders the data messages of one device; built once per device.

    The document and one entry per point are built once and updated in place on each
    poll (encoding is synchronous, so nothing else sees them half-updated): setting a
    value costs a third of building a fresh dict per point.
    """

    def __init__(self, *, gateway: str, device: str, points: tuple[PointSpec, ...]) -> None:
        self.points = points
        self._entries: list[dict[str, Any]] = [
            {"value": None, "unit": p.unit, "quality": "good"} for p in points
        ]
        self._doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "gateway": gateway,
            "device": device,
            "seq": 0,
            "ts_ms": 0,
            "historical": False,
            "points": {p.name: entry for p, entry in zip(points, self._entries, strict=True)},
        }
        self._by_name: dict[str, dict[str, Any]] = self._doc["points"]
        self._dirty: list[dict[str, Any]] = []
        self.messages = 0  # counted for the live view: uplink messages and bytes per hour
        self.bytes = 0

    def encode(self, poll: Poll, *, seq: int, historical: bool = False) -> bytes:
        """The JSON message for one poll (all the device's points, or a subset of them)."""
        for entry in self._dirty:
            entry["quality"] = "good"
            del entry["reason"]
        self._dirty.clear()
        if poll.points is not self.points:
            return self._encode_subset(poll, seq=seq, historical=historical)
        entries = self._entries
        for entry, value in zip(entries, poll.values, strict=True):
            entry["value"] = value
        for i, (quality, reason) in poll.issues.items():
            entry = entries[i]
            entry["quality"] = quality.value
            entry["reason"] = reason
            self._dirty.append(entry)
        doc = self._doc
        doc["seq"] = seq
        doc["ts_ms"] = poll.ts_ns // 1_000_000
        doc["historical"] = historical
        out = orjson.dumps(doc)
        self.messages += 1
        self.bytes += len(out)
        return out

    def _encode_subset(self, poll: Poll, *, seq: int, historical: bool) -> bytes:
        """A message of only the poll's points (names must be the device's)."""
        by_name = self._by_name
        chosen: dict[str, dict[str, Any]] = {}
        try:
            for spec, value in zip(poll.points, poll.values, strict=True):
                entry = by_name[spec.name]
                entry["value"] = value
                chosen[spec.name] = entry
        except KeyError as exc:
            raise ValueError(f"{poll.device}: no point {exc.args[0]!r} in this device") from None
        points = poll.points
        for i, (quality, reason) in poll.issues.items():
            entry = by_name[points[i].name]
            entry["quality"] = quality.value
            entry["reason"] = reason
            self._dirty.append(entry)
        doc = {
            **self._doc,
            "seq": seq,
            "ts_ms": poll.ts_ns // 1_000_000,
            "historical": historical,
            "points": chosen,
        }
        out = orjson.dumps(doc)
        self.messages += 1
        self.bytes += len(out)
        return out


def decode_message(payload: bytes) -> dict[str, Any]:
    """Parse a data message (for subscribers and tests)."""
    doc = orjson.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("a data message is a JSON object")
    return doc

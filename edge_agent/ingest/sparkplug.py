"""Sparkplug B data into the stores: the ingest reads its site's edge node like a host would.

A site whose agent is a Sparkplug edge node (`sparkplug:`, perhaps with `json: false`) has
its readings on `spBv1.0/<group_id>/DDATA/<edge_node_id>/<device>`. The ingest subscribes
to the node's DBIRTH and DDATA: a birth gives each metric's name, alias, data type and unit
(`engUnit`); a data message becomes one DataMessage of the device, stored exactly as a JSON
data message would be (site and gateway from the site file, device and point names as the
topic and metrics give them):

    metric value          -> the point's value (null: bad, "is_null")
    property Quality      -> 192 good, 500 uncertain, anything else bad
    metric timestamp      -> the point's own time when it differs from the payload's
    is_historical         -> the message is historical (replayed after an outage)

protobuf is imported only when a site has a `sparkplug:` block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_agent.ingest.schema import DataMessage, Point, Rejected, Source, Value
from edge_agent.sparkplug.config import SparkplugConfig
from edge_agent.sparkplug.datatypes import INT8, INT16, INT32, INT64
from edge_agent.sparkplug.topics import NAMESPACE

GOOD, UNCERTAIN = 192, 500  # the Quality property's codes (sparkplug.md)
_QUALITY = {GOOD: 0, UNCERTAIN: 1}  # -> the ingest's quality codes; anything else is bad (2)


@dataclass(slots=True)
class _Metric:
    name: str
    unit: str | None = None


@dataclass(slots=True)
class _Device:
    by_alias: dict[int, _Metric] = field(default_factory=dict)
    units: dict[str, str | None] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # from the birth: data messages
    # need not repeat a metric's datatype


class SparkplugReader:
    """Turns one edge node's births and data messages into DataMessages."""

    def __init__(self, config: SparkplugConfig, *, site: str, gateway: str) -> None:
        from edge_agent.sparkplug.payload import decode

        self._decode = decode
        self.site = site
        self.gateway = gateway
        self.base = f"{NAMESPACE}/{config.group_id}"
        self.node = config.edge_node_id
        self._devices: dict[str, _Device] = {}

    @property
    def filters(self) -> list[str]:
        """The node's device births and data."""
        return [f"{self.base}/{kind}/{self.node}/+" for kind in ("DBIRTH", "DDATA")]

    def owns(self, topic: str) -> bool:
        """Whether a topic is one of this node's device messages."""
        return topic.startswith(f"{NAMESPACE}/")

    def read(self, topic: str, payload: bytes) -> list[DataMessage]:
        """A DDATA as one DataMessage; a DBIRTH is remembered (its values were, or will be,
        in data messages), so it gives none."""
        parts = topic.split("/")
        if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != self.base or parts[3] != self.node:
            raise Rejected("not_data", "not a device message of this site's edge node")
        kind, device = parts[2], parts[4]
        try:
            message = self._decode(payload)
        except Exception as exc:  # protobuf's DecodeError and friends: a bad payload
            raise Rejected("malformed_json", f"not a Sparkplug B payload: {exc}") from None
        known = self._devices.setdefault(device, _Device())
        if kind == "DBIRTH":
            known.by_alias.clear()
            for metric in message.metrics:
                unit = _eng_unit(metric)
                known.units[metric.name] = unit
                known.types[metric.name] = int(metric.datatype)
                if metric.HasField("alias"):
                    known.by_alias[metric.alias] = _Metric(metric.name, unit)
        elif kind != "DDATA":
            raise Rejected("not_data", f"{kind} is not a data message")
        if kind == "DBIRTH":
            return []
        return [self._message(topic, device, known, message)]

    def _message(self, topic: str, device: str, known: _Device, message: Any) -> DataMessage:
        ts_ms = int(message.timestamp)
        points: list[Point] = []
        point_ts: dict[int, int] = {}
        historical = False
        for metric in message.metrics:
            name = metric.name or (
                known.by_alias[metric.alias].name if metric.alias in known.by_alias else ""
            )
            if not name or "/" in name:  # Node Control/..., Device Control/...: not readings
                continue
            historical = historical or metric.is_historical
            code = _quality_code(metric)
            datatype = int(metric.datatype) or known.types.get(name, 0)
            value = None if metric.is_null else _value(metric, datatype)
            quality = _QUALITY.get(code, 2) if not metric.is_null else 2
            if quality == 2:
                value = None
            reason = None if quality == 0 else f"sparkplug quality {code}"
            if metric.timestamp and int(metric.timestamp) != ts_ms:
                point_ts[len(points)] = int(metric.timestamp)
            points.append((name, value, known.units.get(name), quality, reason))
        return DataMessage(
            Source(topic, self.site, self.gateway, device),
            int(message.seq),
            ts_ms,
            historical,
            points,
            point_ts or None,
        )


# Signed integers travel as two's complement in an unsigned field: Int8/16/32 in the 32-bit
# int_value, Int64 in long_value (the specification's datatype table).
_SIGNED_BITS = {INT8: 32, INT16: 32, INT32: 32, INT64: 64}


def _value(metric: Any, datatype: int) -> Value:
    which = metric.WhichOneof("value")
    if which is None:
        return None
    value: Value = getattr(metric, which)
    bits = _SIGNED_BITS.get(datatype)
    if bits and isinstance(value, int) and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _quality_code(metric: Any) -> int:
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key == "Quality":
            return int(value.int_value)
    return GOOD


def _eng_unit(metric: Any) -> str | None:
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key == "engUnit":
            return str(value.string_value) or None
    return None

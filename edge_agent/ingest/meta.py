"""Devices' metadata messages, for reading compact data messages (README, data contract).

A gateway with `mqtt: {payload: compact}` publishes each device's units retained on
`{prefix}/{site}/{gateway}/{device}/meta` (`pipeline/device_meta.py`). Every ingest worker
subscribes to those topics itself (not through the group's shared subscription, which
would hand each message to one worker only and never delivers retained messages), at
QoS 0 so they do not count against the in-flight window that holds data messages back.
On every (re)connect the broker sends the retained ones again.

`MetaBook` keeps, per device, the latest metadata and the few versions before it (by
their `meta` id), so data replayed after a config change still finds the units it was
encoded with when this worker saw that version go by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from edge_agent.ingest.schema import Rejected, Source, shown_name, topic_levels

META_TOPIC = "meta"
SCHEMA_VERSION = 1
VERSIONS_KEPT = 8  # per device: the latest and those before it
DEVICES_MAX = 100_000  # bounded against odd publishers: more devices are not remembered
Units = Mapping[str, str | None]


@dataclass(slots=True)
class _Device:
    latest: str | None
    versions: dict[str, Units]  # meta id -> point -> unit, oldest first


def parse_meta_topic(topic: str, prefix: str) -> Source | None:
    """`{prefix}/{site}/{gateway}/{device}/meta` -> Source; None for other topics."""
    parts = topic_levels(topic, prefix)
    if parts is None:
        return None
    if len(parts) == 4 and parts[3] == META_TOPIC:
        return Source(topic, parts[0], parts[1], parts[2])
    return None


def meta_filters(prefix: str, sites: tuple[str, ...] | None) -> list[str]:
    """The metadata topics of every site under `prefix`, or of the listed ones."""
    return [f"{prefix}/{site}/+/+/{META_TOPIC}" for site in (sites or ["+"])]


class MetaBook:
    """The metadata each device published, by device and version."""

    def __init__(self) -> None:
        self._devices: dict[tuple[str, str, str], _Device] = {}

    def read(self, source: Source, payload: bytes) -> str | None:
        """Take one metadata message; returns its id (None: an empty retained message,
        which clears the device's latest). Raises Rejected when it is not valid."""
        key = (source.site, source.gateway, source.device)
        if not payload:
            known = self._devices.get(key)
            if known is not None:
                known.latest = None
            return None
        meta_id, units = decode_meta(source, payload)
        known = self._devices.get(key)
        if known is None:
            if len(self._devices) >= DEVICES_MAX:
                return meta_id
            known = self._devices[key] = _Device(None, {})
        known.versions.pop(meta_id, None)
        known.versions[meta_id] = units  # latest last
        while len(known.versions) > VERSIONS_KEPT:
            del known.versions[next(iter(known.versions))]
        known.latest = meta_id
        return meta_id

    def units(self, source: Source, meta_id: str) -> Units | None:
        """The units of version `meta_id` of the device's metadata, if this worker has it."""
        known = self._devices.get((source.site, source.gateway, source.device))
        return None if known is None else known.versions.get(meta_id)

    def latest(self, source: Source) -> Units | None:
        """The units of the device's current metadata, if any."""
        known = self._devices.get((source.site, source.gateway, source.device))
        if known is None or known.latest is None:
            return None
        return known.versions[known.latest]


def decode_meta(source: Source, payload: bytes) -> tuple[str, Units]:
    """Validate a metadata message: (its id, point -> unit). Raises Rejected."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", str(exc)) from None
    if type(doc) is not dict:
        raise Rejected("not_data", "a metadata message is a JSON object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise Rejected(
            "schema_version", f"metadata schema_version {doc.get('schema_version')!r}, expected 1"
        )
    if doc.get("gateway") != source.gateway or doc.get("device") != source.device:
        raise Rejected("topic_mismatch", "metadata names another gateway or device than its topic")
    meta_id = doc.get("meta")
    if type(meta_id) is not str or not 1 <= len(meta_id) <= 64:
        raise Rejected("bad_field", "metadata needs a meta id (a string)")
    points = doc.get("points")
    if type(points) is not dict or not points:
        raise Rejected("bad_field", "metadata points must be a non-empty object")
    units: dict[str, str | None] = {}
    for name, entry in points.items():
        unit = entry.get("unit", _MISSING) if type(entry) is dict else _MISSING
        if unit is not None and (type(unit) is not str or not unit.isprintable() or len(unit) > 32):
            raise Rejected("bad_point", f"metadata point {shown_name(name)}: unit {unit!r}")
        units[name] = unit
    return meta_id, units


_MISSING = object()

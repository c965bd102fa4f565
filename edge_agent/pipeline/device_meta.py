"""The metadata message of a device: what its compact data messages do not repeat.

With `mqtt: {payload: compact}` each device's units, value types and profile go up once,
retained, on `{prefix}/{site}/{gateway}/{device}/meta` (schema `schemas/meta-v1.schema.json`):

    {"schema_version": 1, "gateway": "gw-01", "device": "meter-1", "meta": "5c1e09a2",
     "driver": "modbus", "profile": "chint-dtsu666",
     "points": {"voltage_a": {"unit": "V", "type": "float32"},
                "relay":     {"unit": null, "type": "bool"}}}

`meta` names this version of the metadata: the first 8 hex digits of the SHA-256 of the
rest of the document, so the same config gives the same id after a restart, and a change
of a point, unit, type or profile gives another. Every compact data message carries the
id of the metadata it was encoded against (`pipeline/compact.py`), so a subscriber can
tell that the metadata it holds is the one the message needs (replayed data after a
config change, a message that overtook its metadata).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from drivers.reading import PointSpec
from drivers.registry import plugin
from edge_agent.config.site import INLINE, DeviceSetup

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class DeviceMeta:
    """One device's metadata message, rendered once."""

    device: str
    meta_id: str
    payload: bytes


def device_meta(
    *,
    gateway: str,
    device: str,
    driver: str,
    profile: str | None,
    points: tuple[PointSpec, ...],
    types: Mapping[str, str],
) -> DeviceMeta:
    """The metadata of a device whose polls carry `points` (types where the config fixes them)."""
    described: dict[str, dict[str, Any]] = {}
    for p in points:
        entry: dict[str, Any] = {"unit": p.unit}
        kind = types.get(p.name)
        if kind is not None:
            entry["type"] = kind
        described[p.name] = entry
    body = {"driver": driver, "profile": profile, "points": described}
    meta_id = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "gateway": gateway,
        "device": device,
        "meta": meta_id,
        **body,
    }
    return DeviceMeta(device, meta_id, orjson.dumps(doc))


def setup_meta(gateway: str, setup: DeviceSetup, points: tuple[PointSpec, ...]) -> DeviceMeta:
    """The metadata of a configured device whose driver polls `points`."""
    device = setup.device
    return device_meta(
        gateway=gateway,
        device=device.name,
        driver=device.driver,
        profile=None if setup.profile_name == INLINE else setup.profile_name,
        points=points,
        types=plugin(device.driver).value_types(device, setup.profile),
    )

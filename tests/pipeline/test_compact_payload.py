"""The compact data message and the device metadata message: exact bytes (pure logic)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.device_meta import device_meta
from edge_agent.pipeline.payload import DeviceEncoder

SCHEMAS = Path(__file__).resolve().parents[2] / "edge_agent" / "schemas"
TS_MS = 1_764_154_930_123
POINTS = (PointSpec("voltage_a", "V"), PointSpec("relay", None), PointSpec("pf_total", None))


def _meta() -> bytes:
    return device_meta(
        gateway="gw-01",
        device="meter-1",
        driver="modbus",
        profile="chint-dtsu666",
        points=POINTS,
        types={"voltage_a": "float32", "relay": "bool"},
    ).payload


def _encoder() -> CompactEncoder:
    meta = device_meta(
        gateway="gw-01",
        device="meter-1",
        driver="modbus",
        profile="chint-dtsu666",
        points=POINTS,
        types={"voltage_a": "float32", "relay": "bool"},
    )
    return CompactEncoder(gateway="gw-01", device="meter-1", points=POINTS, meta_id=meta.meta_id)


def _validate(payload: bytes, schema: str) -> None:
    jsonschema.validate(orjson.loads(payload), json.loads((SCHEMAS / schema).read_text()))


def test_the_metadata_message_is_exactly_this() -> None:
    payload = _meta()
    assert payload == (
        b'{"schema_version":1,"gateway":"gw-01","device":"meter-1","meta":"'
        + orjson.loads(payload)["meta"].encode()
        + b'","driver":"modbus","profile":"chint-dtsu666","points":{'
        b'"voltage_a":{"unit":"V","type":"float32"},"relay":{"unit":null,"type":"bool"},'
        b'"pf_total":{"unit":null}}}'
    )
    _validate(payload, "meta-v1.schema.json")
    # The id as the schema documents it, so a subscriber can check it.
    doc = orjson.loads(payload)
    body = {k: doc[k] for k in ("driver", "profile", "points")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert doc["meta"] == hashlib.sha256(canonical.encode()).hexdigest()[:8]


def test_the_metadata_id_names_the_content() -> None:
    def meta_id(points: tuple[PointSpec, ...], profile: str | None = "p") -> str:
        return device_meta(
            gateway="gw", device="d", driver="modbus", profile=profile, points=points, types={}
        ).meta_id

    one = meta_id(POINTS)
    assert len(one) == 8 and int(one, 16) >= 0
    assert meta_id(POINTS) == one  # the same config after a restart: the same id
    assert meta_id((PointSpec("voltage_a", "kV"), *POINTS[1:])) != one  # a unit changed
    assert meta_id(POINTS[:2]) != one  # a point removed
    assert meta_id(POINTS, profile=None) != one


def test_a_good_poll_is_values_only() -> None:
    encoder = _encoder()
    poll = Poll("meter-1", TS_MS * 1_000_000, POINTS, [230.5, True, 0.98], {})
    payload = encoder.encode(poll, seq=42)
    assert payload == (
        b'{"schema_version":3,"gateway":"gw-01","device":"meter-1","seq":42,'
        b'"ts_ms":1764154930123,"historical":false,"meta":"' + encoder.meta_id.encode() + b'",'
        b'"values":{"voltage_a":230.5,"relay":true,"pf_total":0.98}}'
    )
    assert (encoder.messages, encoder.bytes) == (1, len(payload))
    _validate(payload, "data-v3.schema.json")


def test_only_points_that_are_not_good_carry_quality_and_reason() -> None:
    encoder = _encoder()
    bad = Poll(
        "meter-1",
        TS_MS * 1_000_000,
        POINTS,
        [None, True, 0.5],
        {2: (Quality.UNCERTAIN, "stale"), 0: (Quality.BAD, "exception 02 (illegal data address)")},
    )
    payload = encoder.encode(bad, seq=43, historical=True)
    assert payload == (
        b'{"schema_version":3,"gateway":"gw-01","device":"meter-1","seq":43,'
        b'"ts_ms":1764154930123,"historical":true,"meta":"' + encoder.meta_id.encode() + b'",'
        b'"values":{"voltage_a":null,"relay":true,"pf_total":0.5},'
        b'"issues":{"voltage_a":{"quality":"bad","reason":"exception 02 (illegal data address)"},'
        b'"pf_total":{"quality":"uncertain","reason":"stale"}}}'
    )
    _validate(payload, "data-v3.schema.json")
    # The next good poll carries no trace of them.
    good = encoder.encode(Poll("meter-1", TS_MS * 1_000_000, POINTS, [1.0, False, 1], {}), seq=44)
    assert b"issues" not in good and b'"historical":false' in good


def test_a_thinned_poll_and_own_times() -> None:
    encoder = _encoder()
    subset = (POINTS[2], POINTS[0])
    poll = Poll(
        "meter-1",
        TS_MS * 1_000_000,
        subset,
        [0.9, 231.0],
        {},
        {0: (TS_MS - 710) * 1_000_000, 1: TS_MS * 1_000_000 + 5},
    )
    payload = encoder.encode(poll, seq=45)
    assert payload.endswith(
        b'"values":{"pf_total":0.9,"voltage_a":231.0},"point_ts":{"pf_total":1764154929413}}'
    )
    _validate(payload, "data-v3.schema.json")
    with pytest.raises(ValueError, match="no point 'nope'"):
        encoder.encode(Poll("meter-1", TS_MS * 1_000_000, (PointSpec("nope"),), [1.0], {}), seq=46)


def test_the_replayed_flag_flips_like_version_1() -> None:
    """The forwarder marks a replayed message by its first `"historical":false`."""
    encoder = _encoder()
    poll = Poll("meter-1", TS_MS * 1_000_000, POINTS, [1.0, False, "historical"], {})
    payload = encoder.encode(poll, seq=1)
    replayed = payload.replace(b'"historical":false', b'"historical":true', 1)
    doc = orjson.loads(replayed)
    assert doc["historical"] is True and doc["values"]["pf_total"] == "historical"


def test_compact_is_smaller_per_point_than_version_1() -> None:
    points = tuple(PointSpec(f"point_{i:02d}", "kWh") for i in range(50))
    values = [230.5 + i for i in range(50)]
    poll = Poll("meter-1", TS_MS * 1_000_000, points, values, {})
    v1 = DeviceEncoder(gateway="gw-01", device="meter-1", points=points).encode(poll, seq=1)
    v3 = CompactEncoder(gateway="gw-01", device="meter-1", points=points, meta_id="0" * 8).encode(
        poll, seq=1
    )
    assert len(v1) > 2.5 * len(v3)


def test_the_metadata_id_of_non_ascii_units_is_over_unescaped_utf8() -> None:
    meta = device_meta(
        gateway="gw",
        device="d",
        driver="modbus",
        profile=None,
        points=(PointSpec("t", "°C"), PointSpec("flow", "m³/h")),
        types={},
    )
    assert "°C".encode() in meta.payload
    body = {k: orjson.loads(meta.payload)[k] for k in ("driver", "profile", "points")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert meta.meta_id == hashlib.sha256(canonical.encode()).hexdigest()[:8]

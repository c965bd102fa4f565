"""The ingest's mapping of a data message: validation, reasons, line protocol (pure logic)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.ingest.deadletter import deadletter_topic, envelope
from edge_agent.ingest.schema import (
    MIN_TS_MS,
    LineEncoder,
    Rejected,
    Source,
    decode_data,
    parse_topic,
    reason_code,
)
from edge_agent.pipeline.payload import DeviceEncoder

NOW_MS = 1_764_154_930_123
SOURCE = Source("f/plant-a/gw-01/meter-1/data", "plant-a", "gw-01", "meter-1")


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "gateway": "gw-01",
        "device": "meter-1",
        "seq": 7,
        "ts_ms": NOW_MS,
        "historical": False,
        "points": {"voltage_a": {"value": 230.5, "unit": "V", "quality": "good"}},
    }
    doc.update(changes)
    return doc


def _decode(doc: dict[str, Any] | bytes) -> Any:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return decode_data(SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000)


def _kind(doc: dict[str, Any] | bytes) -> str:
    with pytest.raises(Rejected) as caught:
        _decode(doc)
    return caught.value.kind


def test_topics_map_to_sources() -> None:
    assert parse_topic("cn/ahs/f/plant-a/gw-01/meter-1/data", "cn/ahs/f") == Source(
        "cn/ahs/f/plant-a/gw-01/meter-1/data", "plant-a", "gw-01", "meter-1"
    )
    assert parse_topic("f/plant-a/gw-01/status", "f") is None
    assert parse_topic("fx/plant-a/gw-01/m/data", "f") is None
    assert parse_topic("f/plant-a/gw-01/m/x/data", "f") is None


def test_a_message_from_the_agents_encoder_decodes_to_its_points() -> None:
    points = (PointSpec("v", "V"), PointSpec("on", None), PointSpec("s", None), PointSpec("p"))
    encoder = DeviceEncoder(gateway="gw-01", device="meter-1", points=points)
    poll = Poll(
        "meter-1",
        NOW_MS * 1_000_000,
        points,
        [230.5, True, "RUN", None],
        {3: (Quality.BAD, "timeout")},
    )
    message = _decode(encoder.encode(poll, seq=3, historical=True))
    assert (message.seq, message.ts_ms, message.historical) == (3, NOW_MS, True)
    assert message.points == [
        ("v", 230.5, "V", 0, None),
        ("on", True, None, 0, None),
        ("s", "RUN", None, 0, None),
        ("p", None, None, 2, "timeout"),
    ]


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "not_data"),
        (_doc(schema_version=2), "schema_version"),
        (_doc(schema_version="1"), "schema_version"),
        ({k: v for k, v in _doc().items() if k != "schema_version"}, "schema_version"),
        (_doc(device="meter-2"), "topic_mismatch"),
        (_doc(seq=0), "bad_field"),
        (_doc(seq=True), "bad_field"),
        (_doc(ts_ms=1.5), "bad_field"),
        (_doc(historical="no"), "bad_field"),
        (_doc(points={}), "bad_field"),
        (_doc(ts_ms=MIN_TS_MS - 1), "bad_timestamp"),
        (_doc(ts_ms=NOW_MS + 300_001), "bad_timestamp"),
        (_doc(points={"a b": {"value": 1, "unit": None, "quality": "good"}}), "bad_point"),
        (_doc(points={"v": {"value": 1, "unit": None, "quality": "fine"}}), "bad_point"),
        (_doc(points={"v": {"value": 1, "unit": "k\nW", "quality": "good"}}), "bad_point"),
        (_doc(points={"v": {"value": 1, "unit": None, "quality": "bad"}}), "bad_point"),
        (
            _doc(points={"v": {"value": 1, "unit": None, "quality": "good", "reason": "x"}}),
            "bad_point",
        ),
        (_doc(points={"v": [1]}), "bad_point"),
        (_doc(points={"v": {"value": None, "unit": None, "quality": "good"}}), "bad_value"),
        (_doc(points={"v": {"value": [1], "unit": None, "quality": "good"}}), "bad_value"),
        (
            _doc(points={"v": {"value": 1, "unit": None, "quality": "bad", "reason": "t"}}),
            "bad_value",
        ),
        (
            _doc(points={"v": {"value": {}, "unit": None, "quality": "uncertain", "reason": "t"}}),
            "bad_value",
        ),
    ],
)
def test_bad_messages_are_rejected_by_kind(doc: dict[str, Any] | bytes, kind: str) -> None:
    assert _kind(doc) == kind


def test_timestamps_up_to_the_allowed_future_pass() -> None:
    assert _decode(_doc(ts_ms=NOW_MS + 300_000)).ts_ms == NOW_MS + 300_000
    assert _decode(_doc(ts_ms=MIN_TS_MS)).ts_ms == MIN_TS_MS


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("timeout", 1),
        ("connection refused", 2),
        ("connection lost", 3),
        ("short answer: 2 of 4 registers", 4),
        ("invalid BCD digit in 0x12A4", 5),
        ("not finite: nan", 6),
        ("exception 02 (illegal data address)", 102),
        ("exception 11 (gateway target device failed to respond)", 111),
        ("exception 999", 99),
        ("stale", 99),
        (None, 99),
    ],
)
def test_reasons_fall_into_bounded_classes(reason: str | None, code: int) -> None:
    assert reason_code(reason) == code


def test_line_protocol_of_every_kind_of_point() -> None:
    points = [
        ("voltage_a", 230.5, "V", 0, None),
        ("energy", 1234, "kWh", 0, None),
        ("relay", True, None, 0, None),
        ("off", False, None, 0, None),
        ("state", 'RUN "x"', None, 0, None),
        ("pf", None, None, 2, "exception 02 (illegal data address)"),
        ("flow", 1.5, "m³/h", 1, "stale"),
        ("odd", 2.0, "a b,c=d", 0, None),
    ]
    message = _decode(_doc())
    message.points = points
    lines: list[str] = []
    encoder = LineEncoder("edge", profiles={("plant-a", "gw-01", "meter-1"): "chint-dtsu666"})
    assert encoder.encode(message, lines) == 8
    head = "edge,device=meter-1,gateway=gw-01,point="
    tail = ",profile=chint-dtsu666,site=plant-a"
    assert lines == [
        f"{head}voltage_a{tail},unit=V value=230.5,quality=0i {NOW_MS}",
        f"{head}energy{tail},unit=kWh value=1234,quality=0i {NOW_MS}",
        f"{head}relay{tail} value=1,quality=0i {NOW_MS}",
        f"{head}off{tail} value=0,quality=0i {NOW_MS}",
        f"{head}state{tail} quality=0i {NOW_MS}",
        f"{head}pf{tail} quality=2i,reason=102i {NOW_MS}",
        f"{head}flow{tail},unit=m³/h value=1.5,quality=1i,reason=99i {NOW_MS}",
        f"{head}odd{tail},unit=a\\ b\\,c\\=d value=2.0,quality=0i {NOW_MS}",
    ]
    with_strings: list[str] = []
    LineEncoder("edge", string_values=True).encode(message, with_strings)
    assert with_strings[4] == (
        f'edge,device=meter-1,gateway=gw-01,point=state,site=plant-a text="RUN \\"x\\"",'
        f"quality=0i {NOW_MS}"
    )


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_numbers_survive_json_and_line_protocol(values: list[float | int]) -> None:
    doc = _doc(
        points={
            f"p{i}": {"value": v, "unit": None, "quality": "good"} for i, v in enumerate(values)
        }
    )
    lines: list[str] = []
    LineEncoder().encode(_decode(doc), lines)
    for value, line in zip(values, lines, strict=True):
        field = line.split(" ")[1].split(",")[0]
        assert float(field.removeprefix("value=")) == float(value)


def test_dead_letters_carry_the_message_and_why() -> None:
    rejected = Rejected("bad_timestamp", "ts_ms 5 is before 2000-01-01")
    doc = orjson.loads(
        envelope(SOURCE.topic, b'{"ts_ms": 5}', rejected, received_ms=NOW_MS, worker="w1")
    )
    assert doc == {
        "topic": SOURCE.topic,
        "kind": "bad_timestamp",
        "detail": "ts_ms 5 is before 2000-01-01",
        "received_ms": NOW_MS,
        "worker": "w1",
        "payload": '{"ts_ms": 5}',
    }
    assert deadletter_topic(SOURCE, prefix="f") == "f/plant-a/gw-01/deadletter"
    assert deadletter_topic(SOURCE, prefix="f", configured="ops/dlq") == "ops/dlq"


def test_decoding_is_cheap() -> None:
    """A guard against accidental slow paths: 50-point messages decode and encode fast."""
    points = {f"p{i}": {"value": 230.0 + i, "unit": "V", "quality": "good"} for i in range(50)}
    payload = orjson.dumps(_doc(points=points))
    encoder = LineEncoder()
    lines: list[str] = []
    began = time.process_time()
    for _ in range(2000):
        lines.clear()
        encoder.encode(_decode(payload), lines)
    per_point_us = (time.process_time() - began) / (2000 * 50) * 1e6
    assert per_point_us < 10, f"{per_point_us:.2f} µs per point"

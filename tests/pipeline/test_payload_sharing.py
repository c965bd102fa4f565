"""Devices with equal point lists share one message document (pipeline/payload.py).

At 500 devices x 50 points a dict per point per device was ~5.8 MB of the agent's RSS
(issue 20); sharing must not let one device's names, values, qualities or reasons show
in another's message.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import jsonschema
import orjson

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.payload import DeviceEncoder

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = orjson.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_bytes())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
S = 1_000_000_000
T0 = 1_764_000_000 * S

TIMEOUT = (Quality.BAD, "timeout")
STALE = (Quality.UNCERTAIN, "last usable value")


def _points(n: int, unit: str = "kWh") -> tuple[PointSpec, ...]:
    return tuple(PointSpec(f"p{i:02d}", unit) for i in range(n))


def _good(value: float | None, unit: str | None = "kWh") -> dict[str, object]:
    return {"value": value, "unit": unit, "quality": "good"}


def test_interleaved_devices_keep_their_own_names_values_and_qualities() -> None:
    points = _points(3)
    a = DeviceEncoder(gateway="gw", device="meter-a", points=points)
    b = DeviceEncoder(gateway="gw", device="meter-b", points=_points(3))  # equal, not same
    docs = [
        orjson.loads(a.encode(Poll("meter-a", T0, points, [1.0, None, 3.0], {1: TIMEOUT}), seq=1)),
        orjson.loads(b.encode(Poll("meter-b", T0, b.points, [4.0, 5.0, 6.0]), seq=7)),
        orjson.loads(
            a.encode(Poll("meter-a", T0 + S, (points[2],), [9.0], {0: STALE}), seq=2)
        ),  # a subset (report by exception)
        orjson.loads(b.encode(Poll("meter-b", T0 + S, b.points, [4.5, 5.5, 6.5]), seq=8)),
        orjson.loads(
            a.encode(Poll("meter-a", T0 + 2 * S, points, [1.5, 2.5, 3.5]), seq=3, historical=True)
        ),
    ]
    for doc in docs:
        VALIDATOR.validate(doc)
    assert [(d["device"], d["seq"], d["ts_ms"], d["historical"]) for d in docs] == [
        ("meter-a", 1, T0 // 1_000_000, False),
        ("meter-b", 7, T0 // 1_000_000, False),
        ("meter-a", 2, (T0 + S) // 1_000_000, False),
        ("meter-b", 8, (T0 + S) // 1_000_000, False),
        ("meter-a", 3, (T0 + 2 * S) // 1_000_000, True),
    ]
    assert docs[0]["points"] == {
        "p00": _good(1.0),
        "p01": {"value": None, "unit": "kWh", "quality": "bad", "reason": "timeout"},
        "p02": _good(3.0),
    }
    # a's bad point is not b's, and the subset message holds only its point
    assert docs[1]["points"] == {"p00": _good(4.0), "p01": _good(5.0), "p02": _good(6.0)}
    assert docs[2]["points"] == {
        "p02": {"value": 9.0, "unit": "kWh", "quality": "uncertain", "reason": "last usable value"}
    }
    assert docs[3]["points"] == {"p00": _good(4.5), "p01": _good(5.5), "p02": _good(6.5)}
    assert docs[4]["points"] == {"p00": _good(1.5), "p01": _good(2.5), "p02": _good(3.5)}
    assert (a.messages, b.messages) == (3, 2)


def test_devices_of_one_model_hold_one_document_between_them() -> None:
    """200 devices of 50 equal points: well under a dict per point per device."""
    lists = [_points(50) for _ in range(200)]  # equal lists, as each device's plan makes
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoders = [
            DeviceEncoder(gateway="gw", device=f"m{d:03d}", points=points)
            for d, points in enumerate(lists)
        ]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A dict per point per device was ~2.3 MB here; the encoders themselves are ~0.1 MB.
    assert held < 300_000, held
    other = DeviceEncoder(gateway="gw", device="x", points=_points(50, unit="V"))
    out = orjson.loads(other.encode(Poll("x", T0, other.points, [1.0] * 50), seq=1))
    assert {e["unit"] for e in out["points"].values()} == {"V"}  # not the kWh devices' entries
    out = orjson.loads(encoders[0].encode(Poll("m000", T0, encoders[0].points, [2.0] * 50), seq=1))
    assert out["device"] == "m000" and {e["unit"] for e in out["points"].values()} == {"kWh"}


def test_compact_encoders_of_one_model_share_their_point_names() -> None:
    lists = [_points(50) for _ in range(200)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoders = [
            CompactEncoder(gateway="gw", device=f"m{d:03d}", points=points, meta_id="0a1b2c3d")
            for d, points in enumerate(lists)
        ]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A tuple and a frozenset of 50 names per device were ~0.5 MB here.
    assert held < 250_000, held
    poll = Poll("m007", T0, lists[7][:2], [1.0, 2.0])
    out = orjson.loads(encoders[7].encode(poll, seq=3))
    assert (out["device"], out["values"]) == ("m007", {"p00": 1.0, "p01": 2.0})

"""S7 read plans: ranges joined within the gap limit, requests within the PDU, offline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drivers.s7.config import S7Device
from drivers.s7.plan import build_plan, max_item_bytes, response_size
from drivers.s7.plugin import PLUGIN


def device(points: list[dict[str, Any]], **kw: Any) -> S7Device:
    return S7Device.model_validate(
        {"name": "plc", "driver": "s7", "url": "s7://10.0.0.5", **kw, "points": points}
    )


ISSUE = [
    {"name": "oil_temp", "address": "DB1.DBD0", "type": "REAL", "unit": "degC"},
    {"name": "strokes", "address": "DB1.DBD4", "type": "DINT"},
    {"name": "pressure_raw", "address": "DB1.DBW8", "type": "INT"},
    {"name": "running", "address": "DB1.DBX10.0"},
    {"name": "mode", "address": "MW20", "type": "WORD"},
]


def items(plan: Any) -> list[tuple[str, int, int, list[str]]]:
    return [
        (r.label, r.item.start, r.item.size, [plan.points[s.index].name for s in r.slots])
        for q in plan.requests
        for r in q.ranges
    ]


def test_issue_block_is_one_request_of_two_items() -> None:
    plan = build_plan(device(ISSUE))
    assert items(plan) == [
        ("DB1", 0, 11, ["oil_temp", "strokes", "pressure_raw", "running"]),
        ("M", 20, 2, ["mode"]),
    ]
    assert len(plan.requests) == 1
    assert [p.name for p in plan.points] == [p["name"] for p in ISSUE]  # config order
    assert plan.requests[0].response_bytes == 14 + 4 + 11 + 1 + 4 + 2  # a fill byte after 11


def test_gap_limit_splits_and_bits_share_a_byte() -> None:
    points = [
        {"name": "a", "address": "DB3.DBW0", "type": "INT"},
        {"name": "b", "address": "DB3.DBW18", "type": "INT"},  # gap 16: joined
        {"name": "c", "address": "DB3.DBW37", "type": "INT"},  # gap 17: new range
        {"name": "d", "address": "DB3.DBX37.1"},  # inside c's bytes
        {"name": "e", "address": "DB4.DBW0", "type": "INT"},  # another DB: new range
    ]
    assert items(build_plan(device(points))) == [
        ("DB3", 0, 20, ["a", "b"]),
        ("DB3", 37, 2, ["c", "d"]),
        ("DB4", 0, 2, ["e"]),
    ]
    assert items(build_plan(device(points, max_gap=0))) == [
        ("DB3", 0, 2, ["a"]),
        ("DB3", 18, 2, ["b"]),
        ("DB3", 37, 2, ["c", "d"]),
        ("DB4", 0, 2, ["e"]),
    ]


def test_requests_fit_the_pdu() -> None:
    # 60 REALs 100 bytes apart: 60 items; a request of 240 bytes carries 19 item specs.
    points = [{"name": f"t{i}", "address": f"DB1.DBD{i * 100}", "type": "REAL"} for i in range(60)]
    plan = build_plan(device(points))
    assert [len(q.ranges) for q in plan.requests] == [19, 19, 19, 3]
    assert all(q.response_bytes <= 240 and q.request_bytes <= 240 for q in plan.requests)
    assert plan.requests[0].request_bytes == 240  # one more item would not fit
    # Where the data is large, the answer is the limit: 4 STRING[40] of 42 bytes each.
    texts = [
        {"name": f"s{i}", "address": f"DB5.DBB{i * 100}", "type": "STRING[40]"} for i in range(6)
    ]
    assert [len(q.ranges) for q in build_plan(device(texts)).requests] == [4, 2]
    assert response_size([42] * 4) <= 240 < response_size([42] * 5)
    # A long contiguous run is cut where one answer is full.
    run = [{"name": f"w{i}", "address": f"DB2.DBW{i * 2}", "type": "INT"} for i in range(200)]
    sizes = [r.item.size for q in build_plan(device(run)).requests for r in q.ranges]
    assert sizes == [222, 178] and max_item_bytes(240) == 222
    assert [
        r.item.size for q in build_plan(device(run, pdu_size=480)).requests for r in q.ranges
    ] == [400]


def test_point_larger_than_an_answer_names_pdu_size() -> None:
    d = device([{"name": "s", "address": "DB1.DBB0", "type": "STRING[254]"}])
    with pytest.raises(ValueError, match=r"STRING\[254\] takes 256 bytes, more than one answer"):
        PLUGIN.compile(d, None)
    PLUGIN.compile(d.model_copy(update={"pdu_size": 480}), None)


def test_connection_keys() -> None:
    d = device(ISSUE, rack=0, slot=1)
    assert d.endpoint.port == 102 and d.remote_tsap_code == 0x0101
    assert device(ISSUE, family="s7-300").remote_tsap_code == 0x0102
    assert device(ISSUE, remote_tsap="03.01").remote_tsap_code == 0x0301
    assert device(ISSUE, rack=1, slot=3, connection_type="basic").remote_tsap_code == 0x0323
    with pytest.raises(ValidationError, match="either rack/slot or remote_tsap"):
        device(ISSUE, slot=1, remote_tsap="0301")
    with pytest.raises(ValidationError, match=r"unknown scheme 'tcp'"):
        device(ISSUE, url="tcp://10.0.0.5:102")
    with pytest.raises(ValidationError, match="duplicate point name 'a'"):
        device([{"name": "a", "address": "MW0"}, {"name": "a", "address": "MW2"}])


def test_plugin_listing_types_and_wire() -> None:
    d = device(ISSUE, rack=0, slot=1)
    summary = PLUGIN.plan_summary(d, None, "")
    assert summary.lines[0] == "plc: s7://10.0.0.5 rack 0 slot 1, PDU 240, every 1 s"
    assert (summary.points, summary.requests) == (5, 1)
    assert PLUGIN.value_types(d, None) == {
        "oil_temp": "float32",
        "strokes": "int32",
        "pressure_raw": "int16",
        "running": "bool",
        "mode": "uint16",
    }
    assert PLUGIN.wrap_counts(d, None) == {"strokes": 2**32, "pressure_raw": 2**16, "mode": 2**16}
    from drivers.s7.driver import S7Driver

    wire = PLUGIN.wire_estimate(S7Driver(d))
    assert wire is not None
    assert (wire.request_bytes, wire.response_bytes) == (7 + 12 + 24, 7 + 36)

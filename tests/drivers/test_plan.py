"""Planner: every point read exactly once, no request over the limits, gaps and unreadables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import Order, PointType, Table, register_count
from drivers.modbus.config import MAX_BITS, ModbusDevice, ModbusPoint, ModbusProfile, Unreadable
from drivers.modbus.plan import Plan, apply_scaling, build_plan, plan_requests

REGISTER_TYPES = [t for t in PointType if t not in (PointType.BOOL, PointType.BIT)]


@st.composite
def point_sets(draw: st.DrawFn) -> list[ModbusPoint]:
    """Non-overlapping points spread over the four tables."""
    points: list[ModbusPoint] = []
    cursor = {t: draw(st.integers(0, 500)) for t in Table}
    for i in range(draw(st.integers(1, 60))):
        table = draw(st.sampled_from(list(Table)))
        if table.is_bits:
            t, length = PointType.BOOL, None
        else:
            t = draw(st.sampled_from(REGISTER_TYPES))
            length = draw(st.integers(1, 10)) if t is PointType.STRING else None
        cursor[table] += draw(st.integers(0, 40))
        address = cursor[table]
        count = register_count(t, length)
        if address + count > 65536:
            break
        points.append(
            ModbusPoint(
                name=f"p{i}",
                table=table,
                address=address,
                type=t,
                length=length,
                order=draw(st.sampled_from(list(Order))),
            )
        )
        cursor[table] = address + count
    return points


@settings(max_examples=200, deadline=None)
@given(point_sets(), st.integers(0, 30), st.integers(1, 125))
def test_every_point_once_and_within_limits(
    points: list[ModbusPoint], max_gap: int, max_registers: int
) -> None:
    if any(p.count > max_registers for p in points if not p.table.is_bits):
        with pytest.raises(ValueError, match="more than one request may read"):
            plan_requests(points, max_gap=max_gap, max_registers=max_registers)
        return
    requests = plan_requests(points, max_gap=max_gap, max_registers=max_registers)
    names = [n for r in requests for n in r.point_names]
    assert sorted(names) == sorted(p.name for p in points)
    assert len(names) == len(set(names))
    by_name = {p.name: p for p in points}
    for r in requests:
        limit = MAX_BITS if r.table.is_bits else max_registers
        assert 1 <= r.count <= limit
        assert r.start + r.count <= 65536
        for name in r.point_names:
            p = by_name[name]
            assert p.table == r.table
            assert r.start <= p.address and p.last_address < r.start + r.count
    # The planner never leaves a gap larger than max_gap inside a request.
    for r in requests:
        if r.table.is_bits:
            continue
        covered = sorted((by_name[n].address, by_name[n].last_address) for n in r.point_names)
        end = covered[0][1]
        for a, b in covered[1:]:
            assert a - end - 1 <= max_gap
            end = max(end, b)


def _p(name: str, address: int, t: PointType = PointType.UINT16, **kw: object) -> ModbusPoint:
    return ModbusPoint(name=name, address=address, type=t, **kw)  # type: ignore[arg-type]


def test_gap_filling_joins_and_splits() -> None:
    points = [_p("a", 0), _p("b", 5), _p("c", 40, PointType.FLOAT32)]
    # Four registers (1..4) lie between a and b; 34 (6..39) between b and c.
    assert [(r.start, r.count) for r in plan_requests(points, max_gap=3)] == [
        (0, 1),
        (5, 1),
        (40, 2),
    ]
    assert [(r.start, r.count) for r in plan_requests(points, max_gap=4)] == [(0, 6), (40, 2)]
    assert [(r.start, r.count) for r in plan_requests(points, max_gap=33)] == [(0, 6), (40, 2)]
    assert [(r.start, r.count) for r in plan_requests(points, max_gap=34)] == [(0, 42)]


def test_never_spans_an_unreadable_range() -> None:
    points = [_p("a", 0), _p("b", 10)]
    blocked = [Unreadable(table=Table.HOLDING, start=5, end=5)]
    requests = plan_requests(points, max_gap=20, unreadable=blocked)
    assert [(r.start, r.count) for r in requests] == [(0, 1), (10, 1)]
    # An unreadable range in another table does not matter.
    other = [Unreadable(table=Table.INPUT, start=5, end=5)]
    assert [(r.start, r.count) for r in plan_requests(points, max_gap=20, unreadable=other)] == [
        (0, 11)
    ]


def test_register_limit_splits_a_long_run() -> None:
    points = [_p(f"f{i}", 2 * i, PointType.FLOAT32) for i in range(100)]  # 200 registers
    requests = plan_requests(points, max_gap=0)
    assert [(r.start, r.count) for r in requests] == [(0, 124), (124, 76)]
    assert plan_requests(points, max_gap=0, max_registers=50)[0].count == 50


def test_function_codes_per_table() -> None:
    points = [
        ModbusPoint(name="c", table=Table.COIL, address=3),
        ModbusPoint(name="d", table=Table.DISCRETE, address=3),
        ModbusPoint(name="h", table=Table.HOLDING, address=3),
        ModbusPoint(name="i", table=Table.INPUT, address=3),
    ]
    assert [(r.function_code, r.point_names) for r in plan_requests(points)] == [
        (1, ("c",)),
        (2, ("d",)),
        (3, ("h",)),
        (4, ("i",)),
    ]


def test_build_plan_applies_device_overrides_and_scaling() -> None:
    profile = ModbusProfile(
        order=Order.ABCD,
        points=(
            _p("v", 0, PointType.UINT16, scale=0.1, unit="V"),
            _p("p", 1, PointType.INT32, scale=2.0, offset=-1.0),
            _p("raw", 3),
        ),
    )
    device = ModbusDevice(
        name="m", driver="modbus", url="tcp://127.0.0.1:5020", profile="x", order=Order.CDAB
    )
    plan = build_plan(device, profile)
    # All three share the device's CDAB order, so one struct group reads them by address.
    assert [p.name for p in plan.points] == ["v", "p", "raw"]
    assert len(plan.requests) == 1
    order_of = {
        name: f.order
        for name, f in zip(
            plan.requests[0].point_names,
            plan.requests[0].decoder.fields_in_output_order,  # type: ignore[union-attr]
            strict=True,
        )
    }
    assert order_of["p"] is Order.CDAB
    values: list[object] = [None] * 3
    index = {p.name: i for i, p in enumerate(plan.points)}
    values[index["v"]] = 2305
    values[index["p"]] = 10
    values[index["raw"]] = 7
    apply_scaling(values, plan.scalings)
    assert values[index["v"]] == 230.5  # divided by 10, not multiplied by 0.1
    assert values[index["p"]] == 19.0
    assert values[index["raw"]] == 7


def test_devices_of_one_model_share_their_block_decoders() -> None:
    """Equal blocks have one decoder between them (issue 20: 500 meters of one model held
    500 of each); another byte order is another decoder, and each decodes its own way."""

    def plan_of(order: Order) -> Plan:
        profile = ModbusProfile(points=(_p("e", 0, PointType.FLOAT32), _p("n", 2)))
        device = ModbusDevice(
            name="m", driver="modbus", url="tcp://127.0.0.1:5020", profile="x", order=order
        )
        return build_plan(device, profile)

    a, b, swapped = plan_of(Order.ABCD), plan_of(Order.ABCD), plan_of(Order.CDAB)
    assert a.requests[0].decoder is b.requests[0].decoder
    assert swapped.requests[0].decoder is not a.requests[0].decoder
    registers = [0x4148, 0x0000, 7]  # 12.5 as ABCD float32, then 7
    assert a.requests[0].decoder.decode(registers)[0] == [12.5, 7]  # type: ignore[union-attr]
    assert b.requests[0].decoder.decode(registers)[0] == [12.5, 7]  # type: ignore[union-attr]
    words = [0x0000, 0x4148, 7]  # the same float with its words swapped
    assert swapped.requests[0].decoder.decode(words)[0] == [12.5, 7]  # type: ignore[union-attr]

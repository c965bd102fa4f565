"""Writes undo reads exactly: registers -> value read -> value written -> the same registers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.contract import WriteRefused
from drivers.modbus.codec import Order, PointType, Table, decode, encode
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import engineering_value
from drivers.modbus.plugin import PLUGIN
from drivers.modbus.write import WriteFrame, encode_write
from drivers.options.writes import WriteOptions

NUMBERS = [
    PointType.INT16,
    PointType.UINT16,
    PointType.INT32,
    PointType.UINT32,
    PointType.INT64,
    PointType.UINT64,
    PointType.FLOAT32,
    PointType.FLOAT64,
    PointType.BCD16,
    PointType.BCD32,
]
NARROW = {PointType.INT16, PointType.UINT16, PointType.INT32, PointType.UINT32}
# Scales and offsets as meter maps have them; wide integers and floats are written unscaled
# here (a float64 cannot hold every int64 divided by ten).
SCALINGS = [(1.0, 0.0), (0.1, 0.0), (0.01, 0.0), (10.0, 0.0), (0.1, -40.0), (0.5, 0.0)]


def _point(t: PointType, order: Order, scale: float = 1.0, offset: float = 0.0) -> ModbusPoint:
    return ModbusPoint(
        name="sp", address=10, type=t, order=order, scale=scale, offset=offset, write=WriteOptions()
    )


def _read(point: ModbusPoint, registers: list[int]) -> object:
    """What a poll gives for these registers (the driver's decode, then its scaling)."""
    raw = decode(registers, point.point_type, point.order or Order.ABCD, length=point.length)
    return engineering_value(point, raw)


@st.composite
def wire_case(draw: st.DrawFn) -> tuple[ModbusPoint, list[int]]:
    t = draw(st.sampled_from(NUMBERS))
    order = draw(st.sampled_from(list(Order)))
    scale, offset = draw(st.sampled_from(SCALINGS)) if t in NARROW else (1.0, 0.0)
    point = _point(t, order, scale, offset)
    if t is PointType.BCD16:
        registers = encode(draw(st.integers(0, 9999)), t, order)
    elif t is PointType.BCD32:
        registers = encode(draw(st.integers(0, 99_999_999)), t, order)
    elif t in (PointType.FLOAT32, PointType.FLOAT64):
        width = 32 if t is PointType.FLOAT32 else 64
        value = draw(st.floats(allow_nan=False, allow_infinity=False, width=width))
        registers = encode(value, t, order)
    else:
        registers = draw(
            st.lists(st.integers(0, 0xFFFF), min_size=point.count, max_size=point.count)
        )
    return point, registers


@given(wire_case())
def test_writing_the_value_read_puts_back_the_same_registers(
    case: tuple[ModbusPoint, list[int]],
) -> None:
    point, registers = case
    value = _read(point, registers)
    frame = encode_write(point, point.order or Order.ABCD, value)  # type: ignore[arg-type]
    assert frame.table is Table.HOLDING and frame.address == 10
    assert list(frame.registers) == registers
    assert frame.function_code == (6 if point.count == 1 else 16)


@given(st.sampled_from(list(Order)), st.text(max_size=8))
@example(Order.ABCD, " \x00")
def test_text_round_trips_in_every_order(order: Order, text: str) -> None:
    point = ModbusPoint(
        name="tag", address=0, type=PointType.STRING, length=16, order=order, write={}
    )
    frame = encode_write(point, order, text)
    # As a device's string is read: up to the first NUL, trailing spaces dropped.
    assert _read(point, list(frame.registers)) == text.split("\0", 1)[0].rstrip(" ")


@pytest.mark.parametrize("value", [True, False])
def test_a_coil_takes_fc05(value: bool) -> None:
    point = ModbusPoint(name="pump_run", table=Table.COIL, address=5, write=WriteOptions())
    assert encode_write(point, Order.ABCD, value) == WriteFrame(Table.COIL, 5, (int(value),))
    assert encode_write(point, Order.ABCD, value).function_code == 5


def test_hand_checked_frames() -> None:
    flow = _point(PointType.FLOAT32, Order.ABCD)
    assert encode_write(flow, Order.ABCD, 42.5).registers == (0x422A, 0x0000)
    assert encode_write(flow, Order.CDAB, 42.5).registers == (0x0000, 0x422A)
    tenths = _point(PointType.UINT16, Order.ABCD, scale=0.1)
    assert encode_write(tenths, Order.ABCD, 42.5).registers == (425,)
    kelvin = _point(PointType.INT16, Order.ABCD, scale=0.1, offset=-40.0)
    assert encode_write(kelvin, Order.ABCD, -12.5).registers == (275,)
    elsewhere = ModbusPoint(name="sp", address=10, write=WriteOptions(address=200))
    assert encode_write(elsewhere, Order.ABCD, 7).address == 200
    assert struct.pack(">2H", *encode_write(flow, Order.ABCD, 0.1).registers) == struct.pack(
        ">f", 0.1
    )


@pytest.mark.parametrize(
    ("point", "value", "code", "reason"),
    [
        (_point(PointType.UINT16, Order.ABCD, 0.1), 42.55, "wrong_type", "steps of 0.1"),
        (_point(PointType.INT16, Order.ABCD), 40000, "out_of_range", "range of int16"),
        (_point(PointType.UINT16, Order.ABCD), -1, "out_of_range", "range of uint16"),
        (_point(PointType.UINT16, Order.ABCD), 1.5, "wrong_type", "whole numbers"),
        (_point(PointType.FLOAT32, Order.ABCD), True, "wrong_type", "takes a number"),
        (_point(PointType.FLOAT32, Order.ABCD), "42", "wrong_type", "takes a number"),
        (_point(PointType.FLOAT32, Order.ABCD), 1e39, "out_of_range", "range of float32"),
        (_point(PointType.BCD16, Order.ABCD), 10000, "out_of_range", "range of bcd16"),
        (
            ModbusPoint(name="run", table=Table.COIL, address=1, write={}),
            1,
            "wrong_type",
            "true or false",
        ),
        (
            ModbusPoint(name="tag", address=0, type=PointType.STRING, length=2, write={}),
            "hello",
            "out_of_range",
            "does not fit 2 registers",
        ),
    ],
)
def test_values_that_cannot_be_written_exactly_are_refused(
    point: ModbusPoint, value: object, code: str, reason: str
) -> None:
    with pytest.raises(WriteRefused) as refused:
        encode_write(point, Order.ABCD, value)  # type: ignore[arg-type]
    assert refused.value.code == code
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"table": "input"}, "write: input registers are read-only"),
        ({"table": "discrete"}, "write: discrete inputs are read-only"),
        ({"type": "bit", "bit": 3}, "one bit of a register cannot be written safely"),
        ({"table": "coil", "write": {"max": 1}}, "min and max apply only to numbers, not bool"),
        ({"write": {"min": 5, "max": 1}}, "min 5 is above max 1"),
        ({"write": {"min": 0, "values": [1, 2]}}, "either values"),
    ],
)
def test_config_refuses_writes_it_cannot_honour(point: dict[str, object], message: str) -> None:
    doc: dict[str, object] = {"name": "p", "address": 0, "write": {}, **point}
    with pytest.raises(ValidationError, match=message):
        ModbusPoint.model_validate(doc)


def test_limits_name_the_bound() -> None:
    limits = WriteOptions(min=0, max=50)
    assert limits.refusal(42.5) is None
    assert limits.refusal(50.5) == "above max 50"
    assert limits.refusal(-1) == "below min 0"
    modes = WriteOptions(values=(0, 1, 2))
    assert modes.refusal(2) is None
    assert modes.refusal(True) == "true is not one of 0, 1, 2"
    assert modes.refusal(3) == "3 is not one of 0, 1, 2"


def test_the_points_by_name_are_made_on_the_first_write_only() -> None:
    """Polling never asks for them: 500 devices held a dict each (issue 20)."""
    profile = ModbusProfile(
        points=(
            ModbusPoint(name="setpoint", address=0, write=WriteOptions()),
            ModbusPoint(name="reading", address=1),
        )
    )
    device = ModbusDevice(name="m", driver="modbus", url="tcp://127.0.0.1:9", profile="x")
    driver = ModbusDriver(device, profile)
    assert "map" not in vars(driver)
    assert list(PLUGIN.write_options(driver)) == ["setpoint"]
    assert list(vars(driver)["map"]) == ["setpoint", "reading"]
    assert driver.writable("setpoint").address == 0
    with pytest.raises(WriteRefused, match="reading is not writable"):
        driver.writable("reading")
    with pytest.raises(WriteRefused, match="m has no point 'other'"):
        driver.writable("other")

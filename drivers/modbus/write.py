"""A point's engineering value turned back into what goes on the wire, exactly.

Reading applies `raw / divisor (or raw * scale) + offset`, then the type and order
(plan.py, codec.py); writing undoes it in reverse: the offset comes off, the scale is
divided out, the raw value is checked against the type and encoded in the point's byte and
word order. A value that would not survive the trip is refused before anything is sent:

    scale 0.1, uint16   42.5 -> 425          42.55 -> refused (steps of 0.1)
    int16               40000 -> refused (outside the range of int16)
    float32             42.5 -> 0x422A 0x0000 (ABCD)   the read-back may round (float32)

The function codes: a coil takes FC05 (0xFF00 / 0x0000), one register FC06, several
registers FC16, the way devices document their set-points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.contract import WriteRefused
from drivers.modbus.codec import FLOAT_TYPES, Order, PointType, Table, encode, value_range
from drivers.modbus.config import ModbusPoint
from drivers.reading import Value

# Relative slack when a scaled value is checked for landing on a whole raw count: binary
# floats make 42.5 / 0.1 come out as 424.99999999999994.
_WHOLE_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class WriteFrame:
    """What one write puts on the wire."""

    table: Table
    address: int
    registers: tuple[int, ...]  # coil: (0,) or (1,)

    @property
    def function_code(self) -> int:
        """FC05 for a coil, FC06 for one register, FC16 for several."""
        if self.table is Table.COIL:
            return 5
        return 6 if len(self.registers) == 1 else 16


def divisor_of(point: ModbusPoint) -> int | None:
    """The divisor the reading side uses for this scale (plan.py's rule), or None."""
    inverse = 1 / point.scale
    if abs(point.scale) < 1 and abs(inverse - round(inverse)) < 1e-9 * abs(inverse):
        return round(inverse)
    return None


def raw_of(point: ModbusPoint, value: float | int) -> float | int:
    """The raw number that reads back as `value` (before the type's range check)."""
    if point.scale == 1 and point.offset == 0:
        return value
    shifted = value - point.offset
    divisor = divisor_of(point)
    return shifted * divisor if divisor is not None else shifted / point.scale


def encode_write(point: ModbusPoint, order: Order, value: Value) -> WriteFrame:
    """The frame that writes `value` (engineering units) to `point`; WriteRefused if none."""
    t = point.point_type
    address = (
        point.address
        if point.write is None or point.write.address is None
        else (point.write.address)
    )
    if t is PointType.BOOL:
        if not isinstance(value, bool):
            raise WriteRefused("wrong_type", f"{point.name} takes true or false")
        return WriteFrame(Table.COIL, address, (1 if value else 0,))
    if t is PointType.BIT:
        raise WriteRefused("not_writable", f"{point.name} is one bit of a register")
    if t is PointType.STRING:
        if not isinstance(value, str):
            raise WriteRefused("wrong_type", f"{point.name} takes text")
        try:
            registers = encode(value, t, order, length=point.length)
        except ValueError as exc:
            raise WriteRefused("out_of_range", str(exc)) from exc
        return WriteFrame(Table.HOLDING, address, tuple(registers))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused("wrong_type", f"{point.name} takes a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused("wrong_type", f"{point.name} takes a finite number")
    raw = raw_of(point, value)
    if t in FLOAT_TYPES:
        raw = float(raw)
        if t is PointType.FLOAT32 and abs(raw) > 3.4028234663852886e38:
            raise WriteRefused("out_of_range", f"{value:g} is outside the range of float32")
    else:
        whole = round(raw)
        if abs(raw - whole) > _WHOLE_SLACK * max(1.0, abs(raw)):
            step = "whole numbers" if point.scale == 1 else f"steps of {point.scale:g}"
            raise WriteRefused(
                "wrong_type", f"{_num(value)} cannot be written exactly ({point.name} takes {step})"
            )
        bounds = value_range(t)
        assert bounds is not None
        if not bounds[0] <= whole <= bounds[1]:
            raise WriteRefused("out_of_range", f"{_num(value)} is outside the range of {t}")
        raw = whole
    try:
        registers = encode(raw, t, order, length=point.length)
    except ValueError as exc:
        raise WriteRefused("out_of_range", str(exc)) from exc
    return WriteFrame(Table.HOLDING, address, tuple(registers))


def _num(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

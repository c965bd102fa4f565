"""Deterministic test patterns for a PLC-like profile: counters, sawtooths, toggling bits.

Patterns are made in the raw (register) domain so each exercises its type's edges, then
turned into engineering units with the point's scale and offset:

    bool, bit        toggles, period 0.5 s * (1 + index mod 4)
    int16            sawtooth -1000 .. 999            (crosses zero: sign handling)
    uint16           counter from 40000, wraps        (above int16: signedness)
    int32            sawtooth -100000 .. 99999        (needs both words)
    uint32           counter from 70000               (above 16 bits)
    int64 / uint64   counters around -2^40 / 2^40     (needs all four words)
    float32          sawtooth -500.25 .. 500          (fractions survive float32)
    float64          1e9 + pi t                       (not representable in float32)
    bcd16 / bcd32    counters 0 .. 9999 / 12345678 .. (decimal digits)
    string           "PLC-01" (cut to the point's length)

Every value is a pure function of (seed, point index, t), so two runs with the same clock
serve the same registers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint
from drivers.reading import Value
from simulators.modbus.register_image import engineering

PLC_TEXT = "PLC-01"
RATE_PER_S = 10.0  # counter steps per second

_Raw = Callable[[float], int | float | bool | str]


def _pattern(point_type: PointType, index: int, seed: int) -> _Raw:
    shift = index * 37 + seed * 101
    rate = RATE_PER_S * (1 + index % 3)
    match point_type:
        case PointType.BOOL | PointType.BIT:
            period = 0.5 * (1 + index % 4)
            return lambda t: int(t / period + index) % 2 == 1
        case PointType.INT16:
            return lambda t: int(t * rate + shift) % 2000 - 1000
        case PointType.UINT16:
            return lambda t: (40_000 + int(t * rate) + shift) % 65_536
        case PointType.INT32:
            return lambda t: int(t * rate * 7 + shift) % 200_000 - 100_000
        case PointType.UINT32:
            return lambda t: (70_000 + int(t * rate) + shift) % 2**32
        case PointType.INT64:
            return lambda t: -(2**40) + int(t * rate) + shift
        case PointType.UINT64:
            return lambda t: (2**40 + int(t * rate) + shift) % 2**64
        case PointType.FLOAT32:
            return lambda t: (t * rate + shift) % 1000.0 - 500.25
        case PointType.FLOAT64:
            return lambda t: 1e9 + math.pi * t + shift
        case PointType.BCD16:
            return lambda t: (int(t * rate) + shift) % 10_000
        case PointType.BCD32:
            return lambda t: (12_345_678 + int(t * rate) + shift) % 100_000_000
        case PointType.STRING:
            return lambda t: PLC_TEXT
    raise ValueError(f"no pattern for {point_type}")


class PlcSignals:
    """Per-point deterministic patterns; sample(t) gives engineering values by point name."""

    def __init__(self, points: Sequence[ModbusPoint], *, seed: int = 0) -> None:
        self.seed = seed
        self._points = [
            (p.name, _pattern(p.point_type, i, seed), p.scale, p.offset)
            for i, p in enumerate(points)
        ]

    def sample(self, t: float) -> dict[str, Value]:
        """Every point's value at time t."""
        return {
            name: engineering(raw(t), scale, offset) for name, raw, scale, offset in self._points
        }

    def apply_written(self, values: Mapping[str, Value]) -> None:
        """Written points are pinned in the image; the patterns need nothing."""

"""The benchmark's device model: M contiguous float32 holding registers, ABCD."""

from __future__ import annotations

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile


def bench_profile(points: int) -> ModbusProfile:
    """A profile of `points` float32 values at holding 0, 2, 4, ..."""
    return ModbusProfile(
        name="bench",
        points=tuple(
            ModbusPoint(name=f"p{i:03d}", address=2 * i, type=PointType.FLOAT32, unit="V")
            for i in range(points)
        ),
    )

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

Set-points written by a client drive the simulated process, by name, where that is simple
(issue 21: the tests run every write end to end and see the process react):

    {stem}_setpoint / {stem}_sp    once written, the point {stem} (or {stem}_pv) follows it
                                   as a first-order lag (time constant FOLLOW_TAU_S) from
                                   the value it had: flow_setpoint 42.5 -> flow moves to 42.5
    {stem}_run (bool, coil)        once written false, every number {stem}_* reads 0 (the
                                   pump stopped: pump_current, pump_power, pump_speed ...,
                                   not pump_run_hours nor a set-point);
                                   written true, they follow their patterns (or set-point)

Before any write the patterns above rule, so a device nobody writes serves what it always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint
from drivers.reading import Value
from simulators.modbus.register_image import engineering

PLC_TEXT = "PLC-01"
SETPOINT_SUFFIXES = ("_setpoint", "_sp")
RUN_SUFFIX = "_run"
FOLLOW_TAU_S = 1.0  # a process value covers 63 % of a set-point step in this long
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
        self.follows = _followers(points)  # process value -> its set-point
        self._set_points = frozenset(self.follows.values())
        # number -> the run command that zeroes it (not a set-point: that is the operator's)
        self.stopped_by = {
            name: run for name, run in _run_commands(points).items() if name not in self._set_points
        }
        self._drivers = self._set_points | frozenset(self.stopped_by.values())
        self._written: dict[str, Value] = {}  # set-points and run commands, as last written
        self._stepped: set[str] = set()  # set-points written since the last sample
        self._steps: dict[str, tuple[float, float]] = {}  # process value -> (t0, value at t0)
        self._last: dict[str, Value] = {}

    def sample(self, t: float) -> dict[str, Value]:
        """Every point's value at time t."""
        values = {
            name: engineering(raw(t), scale, offset) for name, raw, scale, offset in self._points
        }
        written = self._written
        if written:
            self._drive(values, t)
        self._last = values
        return values

    def _drive(self, values: dict[str, Value], t: float) -> None:
        """What the written set-points and run commands do to the process values."""
        written = self._written
        for pv, sp in self.follows.items():
            target = written.get(sp)
            if not isinstance(target, int | float) or isinstance(target, bool):
                continue
            if sp in self._stepped or pv not in self._steps:
                start = self._last.get(pv, values[pv])
                x0 = float(start) if isinstance(start, int | float) else float(target)
                self._steps[pv] = (t, x0)
            t0, x0 = self._steps[pv]
            values[pv] = target + (x0 - target) * math.exp(-max(0.0, t - t0) / FOLLOW_TAU_S)
        self._stepped.clear()
        for name, run in self.stopped_by.items():
            if written.get(run) is False:
                values[name] = 0

    def apply_written(self, values: Mapping[str, Value]) -> None:
        """Take note of written set-points and run commands (the image pins them); the
        process values they drive move from the next sample on."""
        for name, value in values.items():
            if name in self._drivers:
                self._written[name] = value
                if name in self._set_points:
                    self._stepped.add(name)


def _followers(points: Sequence[ModbusPoint]) -> dict[str, str]:
    """{process value: set-point} for the set-points named {stem}_setpoint or {stem}_sp."""
    numbers = {p.name for p in points if _numeric(p)}
    follows: dict[str, str] = {}
    for p in points:
        if p.name not in numbers:
            continue
        for suffix in SETPOINT_SUFFIXES:
            stem = p.name.removesuffix(suffix)
            if stem == p.name:
                continue
            for pv in (stem, f"{stem}_pv"):
                if pv in numbers and pv not in follows:
                    follows[pv] = p.name
                    break
    return follows


def _run_commands(points: Sequence[ModbusPoint]) -> dict[str, str]:
    """{number: run command} for the boolean points named {stem}_run."""
    stopped_by: dict[str, str] = {}
    for run in points:
        if run.point_type not in (PointType.BOOL, PointType.BIT) or not run.name.endswith(
            RUN_SUFFIX
        ):
            continue
        prefix = run.name.removesuffix(RUN_SUFFIX) + "_"
        for p in points:
            if (
                p.name.startswith(prefix)
                and not p.name.startswith(run.name)  # pump_run_hours: not the pump's output
                and _numeric(p)
                and p.name not in stopped_by
            ):
                stopped_by[p.name] = run.name
    return stopped_by


def _numeric(point: ModbusPoint) -> bool:
    return point.point_type not in (PointType.BOOL, PointType.BIT, PointType.STRING)

"""The simulated PLC's process signals: what an OPC UA plant PLC exposes, seeded and repeatable.

Address space (namespace `urn:plant:plc` unless told otherwise), under Objects/PLC1:

    Tank1/Temperature   s=Tank1.Temperature   Double  degC   60 ± 8, slow swing
    Tank1/Pressure      s=Tank1.Pressure      Double  bar    2.5 ± 0.2
    Tank2/Temperature   s=Tank2.Temperature   Double  degC   45 ± 5
    Line1/Flow          s=Line1.Flow          Double  m3/h   12 ± 3 while Pump1 runs, else 0
    Line1/Pressure      s=Line1.Pressure      Double  bar    4 ± 0.3 while Pump1 runs, else 0.2
    Pump1/Run           i=1002                Boolean        on 40 s, off 20 s
    Pump1/RunHours      s=Pump1.RunHours      Double  h      grows only while running
    Motor1/Run          i=1003                Boolean        on 50 s, off 10 s
    Motor1/Current      s=Motor1.Current      Double  A      14.5 ± 0.8 while running, else 0
    Motor1/RunHours     s=Motor1.RunHours     Double  h
    GasDetector1/LEL    s=GasDetector1.LEL    Double  %LEL   1-3, a 22 %LEL peak every 2 min
    GasDetector1/Alarm  s=GasDetector1.Alarm  Boolean        LEL >= 10
    Counter             i=1001                Int32          10 counts per second
    Status              s=PLC1.Status         String         "RUN"

Writable (AccessLevel CurrentRead|CurrentWrite), kept as written, read by the process:

    Line2/FlowSetpoint  s=Line2.FlowSetpoint  Double  m3/h   20; EURange 0-50, else BadOutOfRange
    Line2/Flow          s=Line2.Flow          Double  m3/h   read-only: the set-point ± 0.5 %
                                                             while Pump2 runs, else 0
    Pump2/Run           i=1004                Boolean        the pump's run command, on
    Mixer1/Speed        s=Mixer1.Speed        Int32   rpm    600; EURange 0-1500
    Dosing1/Ratio       s=Dosing1.Ratio       Float   %      2.5
    Recipe              s=PLC1.Recipe         String         "BATCH-1"
    Line2/FlowLimit     s=Line2.FlowLimit     Double  m3/h   45: writable, but not by users
                                                             (UserAccessLevel read-only)
    Dosing1/Interval    s=Dosing1.Interval    Duration ms    1500 (a subtype of Double)
    Line2/Profile       s=Line2.Profile       Double[3] m3/h an array node (ValueRank 1)

Every value is a pure function of (seed, t) and the set-points written, so two simulators
with one seed and one clock serve the same values; run hours integrate the run pattern in
closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

PLC_NAMESPACE = "urn:plant:plc"

Kind = Literal["double", "float", "bool", "int32", "string"]
Sample = float | int | bool | str | tuple[float, ...]  # a tuple: an array node
DURATION = 290  # ns=0 DataType Duration: a subtype of Double (ms)


@dataclass(frozen=True, slots=True)
class Signal:
    """One variable of the PLC: where it sits, its node id, type and pattern."""

    folder: str  # object under PLC1 ("" for PLC1 itself)
    name: str  # browse name
    identifier: str | int  # s= or i= identifier in the PLC namespace
    kind: Kind
    unit: str | None
    eu_range: tuple[float, float] | None
    pattern: Callable[[float], Sample]
    writable: bool = False  # AccessLevel CurrentWrite: clients may write it
    user_writable: bool = True  # UserAccessLevel CurrentWrite too (else BadUserAccessDenied)
    data_type: int | None = None  # ns=0 DataType when not the kind's own (a subtype)

    @property
    def node(self) -> str:
        """The identifier part of the node id, `s=...` or `i=...`."""
        return (
            f"i={self.identifier}" if isinstance(self.identifier, int) else f"s={self.identifier}"
        )


def _running(t: float, on_s: float, off_s: float, phase: float) -> bool:
    return (t + phase) % (on_s + off_s) < on_s


def _run_hours(t: float, on_s: float, off_s: float, phase: float, start_h: float) -> float:
    """Hours spent running from t=0 to t, in closed form (starting hours plus the integral)."""

    def until(x: float) -> float:
        period = on_s + off_s
        cycles, rest = divmod(x, period)
        return cycles * on_s + min(rest, on_s)

    return start_h + (until(t + phase) - until(phase)) / 3600.0


SETPOINTS: dict[str | int, Sample] = {
    "Line2.FlowSetpoint": 20.0,
    1004: True,
    "Mixer1.Speed": 600,
    "Dosing1.Ratio": 2.5,
    "PLC1.Recipe": "BATCH-1",
    "Line2.FlowLimit": 45.0,
    "Dosing1.Interval": 1500.0,
    "Line2.Profile": (10.0, 20.0, 30.0),
}


_WRITABLE: tuple[tuple[str, str, str | int, Kind, str | None, tuple[float, float] | None], ...] = (
    ("Line2", "FlowSetpoint", "Line2.FlowSetpoint", "double", "m3/h", (0, 50)),
    ("Pump2", "Run", 1004, "bool", None, None),
    ("Mixer1", "Speed", "Mixer1.Speed", "int32", "rpm", (0, 1500)),
    ("Dosing1", "Ratio", "Dosing1.Ratio", "float", "%", None),
    ("", "Recipe", "PLC1.Recipe", "string", None, None),
)


def plc_signals(
    seed: int = 0, setpoints: dict[str | int, Sample] | None = None
) -> tuple[Signal, ...]:
    """The PLC's signals; `seed` shifts phases so two PLCs differ. `setpoints` holds what
    clients wrote (identifier -> value), read by the writable signals and the process;
    missing ones take their initial values (SETPOINTS)."""
    ph = (seed * 7919) % 997 / 997.0  # 0..1, stable per seed
    held = setpoints if setpoints is not None else {}

    def setpoint(identifier: str | int) -> Callable[[float], Sample]:
        return lambda t: held.get(identifier, SETPOINTS[identifier])

    def flow2(t: float) -> float:
        if not held.get(1004, SETPOINTS[1004]):
            return 0.0
        target = held.get("Line2.FlowSetpoint", SETPOINTS["Line2.FlowSetpoint"])
        if not isinstance(target, int | float):
            return 0.0
        return round(target * (1.0 + 0.005 * math.sin(2 * math.pi * t / 7.0)), 6)

    def swing(mean: float, amp: float, period: float, k: float = 0.0) -> Callable[[float], float]:
        return lambda t: mean + amp * math.sin(2 * math.pi * (t / period + ph + k))

    def pump_on(t: float) -> bool:
        return _running(t, 40.0, 20.0, ph * 60)

    def motor_on(t: float) -> bool:
        return _running(t, 50.0, 10.0, ph * 60 + 17)

    def lel(t: float) -> float:
        peak = max(0.0, math.sin(2 * math.pi * (t / 120.0 + ph))) ** 16
        return 2.0 + math.sin(2 * math.pi * t / 13.0) + 20.0 * peak

    return (
        Signal(
            "Tank1",
            "Temperature",
            "Tank1.Temperature",
            "double",
            "degC",
            (0, 150),
            swing(60.0, 8.0, 90.0),
        ),
        Signal(
            "Tank1",
            "Pressure",
            "Tank1.Pressure",
            "double",
            "bar",
            (0, 10),
            swing(2.5, 0.2, 37.0, 0.3),
        ),
        Signal(
            "Tank2",
            "Temperature",
            "Tank2.Temperature",
            "double",
            "degC",
            (0, 150),
            swing(45.0, 5.0, 75.0, 0.6),
        ),
        Signal(
            "Line1",
            "Flow",
            "Line1.Flow",
            "double",
            "m3/h",
            (0, 50),
            lambda t: swing(12.0, 3.0, 23.0)(t) if pump_on(t) else 0.0,
        ),
        Signal(
            "Line1",
            "Pressure",
            "Line1.Pressure",
            "double",
            "bar",
            (0, 10),
            lambda t: swing(4.0, 0.3, 19.0)(t) if pump_on(t) else 0.2,
        ),
        Signal("Pump1", "Run", 1002, "bool", None, None, pump_on),
        Signal(
            "Pump1",
            "RunHours",
            "Pump1.RunHours",
            "double",
            "h",
            None,
            lambda t: _run_hours(t, 40.0, 20.0, ph * 60, 1200.0 + seed % 100),
        ),
        Signal("Motor1", "Run", 1003, "bool", None, None, motor_on),
        Signal(
            "Motor1",
            "Current",
            "Motor1.Current",
            "double",
            "A",
            (0, 40),
            lambda t: swing(14.5, 0.8, 11.0)(t) if motor_on(t) else 0.0,
        ),
        Signal(
            "Motor1",
            "RunHours",
            "Motor1.RunHours",
            "double",
            "h",
            None,
            lambda t: _run_hours(t, 50.0, 10.0, ph * 60 + 17, 8400.0 + seed % 50),
        ),
        Signal("GasDetector1", "LEL", "GasDetector1.LEL", "double", "%LEL", (0, 100), lel),
        Signal(
            "GasDetector1",
            "Alarm",
            "GasDetector1.Alarm",
            "bool",
            None,
            None,
            lambda t: lel(t) >= 10.0,
        ),
        Signal("", "Counter", 1001, "int32", None, None, lambda t: int(t * 10) % 2**31),
        Signal("", "Status", "PLC1.Status", "string", None, None, lambda t: "RUN"),
        *(
            Signal(folder, name, key, kind, unit, eu, setpoint(key), writable=True)
            for folder, name, key, kind, unit, eu in _WRITABLE
        ),
        Signal("Line2", "Flow", "Line2.Flow", "double", "m3/h", (0, 50), flow2),
        Signal(
            "Line2",
            "FlowLimit",
            "Line2.FlowLimit",
            "double",
            "m3/h",
            (0, 50),
            setpoint("Line2.FlowLimit"),
            writable=True,
            user_writable=False,
        ),
        Signal(
            "Dosing1",
            "Interval",
            "Dosing1.Interval",
            "double",
            "ms",
            None,
            setpoint("Dosing1.Interval"),
            writable=True,
            data_type=DURATION,
        ),
        Signal(
            "Line2",
            "Profile",
            "Line2.Profile",
            "double",
            "m3/h",
            None,
            setpoint("Line2.Profile"),
            writable=True,
        ),
    )


def extra_signal(identifier: str | int, index: int) -> Signal:
    """A generic Double for a node a config names that the PLC model does not have."""
    name = str(identifier)
    return Signal(
        "Extra",
        name,
        identifier,
        "double",
        None,
        None,
        lambda t: round(100.0 + 10.0 * math.sin(2 * math.pi * (t / 30.0 + index / 7.0)), 6),
    )

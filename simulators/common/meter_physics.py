"""Three-phase meter physics: consistent electrical values for a profile's points.

Given a seed and the simulated time t (seconds, from an injected clock), `MeterPhysics`
produces one value per point, in the point's unit. Everything but the energy counters is a
pure function of (seed, t); the counters integrate power between successive samples and
never decrease.

    per phase x in a, b, c (primary side, base units V, A, W, var, VA):
        V_x  = 230 V * (1 + slow drift + small noise)        L-N voltage
        V_xy = sqrt(V_x^2 + V_y^2 + V_x V_y)                  L-L, 120 degrees apart
        I_x  = I_nominal_x * load(t)                          slow load curve
        S_x  = V_x I_x,  P_x = S_x pf_x,  Q_x = sqrt(S_x^2 - P_x^2)   (lagging, Q > 0)
    totals:  P = sum P_x,  Q = sum Q_x,  S = sqrt(P^2 + Q^2),  PF = P / S (1 when S = 0)
    energy:  E_import_x += max(P_x, 0) dt,  E_export_x += max(-P_x, 0) dt, same for Q

Point names select quantities (`VOCABULARY`); a name that extends a known one with a
suffix (`energy_import_mbmd`) mirrors it. Other names get a seeded slow signal that fits the
point's type. The point's `unit` converts from the base unit (kW, kvarh, kWh, ...); a unit
that does not fit the quantity is an error, so a profile typo fails at load.

A profile that exposes `pt_ratio`/`ct_ratio` registers reports secondary-side values
(meters.md 3.3): voltages / PT, currents / CT, powers and energies / (PT x CT).
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.modbus.codec import FLOAT_TYPES, PointType, value_range
from drivers.modbus.config import ModbusPoint
from drivers.reading import Value
from simulators.modbus.register_image import engineering


class Kind(enum.Enum):
    """What a quantity is, which decides its units and its CT/PT ratio."""

    VOLTAGE = "voltage"
    CURRENT = "current"
    ACTIVE_POWER = "active power"
    REACTIVE_POWER = "reactive power"
    APPARENT_POWER = "apparent power"
    ACTIVE_ENERGY = "active energy"
    REACTIVE_ENERGY = "reactive energy"
    FREQUENCY = "frequency"
    POWER_FACTOR = "power factor"
    PERCENT = "percent"
    SETTING = "setting"  # configuration registers: no unit conversion, no ratio


_UNITS: dict[Kind, dict[str | None, float]] = {
    Kind.VOLTAGE: {None: 1.0, "V": 1.0, "kV": 1e3, "mV": 1e-3},
    Kind.CURRENT: {None: 1.0, "A": 1.0, "mA": 1e-3, "kA": 1e3},
    Kind.ACTIVE_POWER: {None: 1.0, "W": 1.0, "kW": 1e3, "MW": 1e6},
    Kind.REACTIVE_POWER: {
        None: 1.0,
        "var": 1.0,
        "VAr": 1.0,
        "kvar": 1e3,
        "kVAr": 1e3,
        "Mvar": 1e6,
        "MVAr": 1e6,
    },
    Kind.APPARENT_POWER: {None: 1.0, "VA": 1.0, "kVA": 1e3, "MVA": 1e6},
    Kind.ACTIVE_ENERGY: {None: 1.0, "Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
    Kind.REACTIVE_ENERGY: {
        None: 1.0,
        "varh": 1.0,
        "VArh": 1.0,
        "kvarh": 1e3,
        "kVArh": 1e3,
        "Mvarh": 1e6,
    },
    Kind.FREQUENCY: {None: 1.0, "Hz": 1.0},
    Kind.POWER_FACTOR: {None: 1.0, "": 1.0, "%": 0.01},
    Kind.PERCENT: {None: 1.0, "%": 1.0},
}

# Divisor applied on the secondary side: 1 = none, "pt", "ct", "ptct".
_RATIO = {
    Kind.VOLTAGE: "pt",
    Kind.CURRENT: "ct",
    Kind.ACTIVE_POWER: "ptct",
    Kind.REACTIVE_POWER: "ptct",
    Kind.APPARENT_POWER: "ptct",
    Kind.ACTIVE_ENERGY: "ptct",
    Kind.REACTIVE_ENERGY: "ptct",
}

_PHASES = ("a", "b", "c")
_TARIFFS = {"sharp": 0.10, "peak": 0.30, "flat": 0.35, "valley": 0.25}  # 尖峰平谷 shares


def _vocabulary() -> dict[str, Kind]:
    v: dict[str, Kind] = {}
    for x in (*_PHASES, "avg"):
        v[f"voltage_{x}"] = Kind.VOLTAGE
    for x in ("ab", "bc", "ca", "ll_avg"):
        v[f"voltage_{x}"] = Kind.VOLTAGE
    for x in (*_PHASES, "n", "avg", "sum"):
        v[f"current_{x}"] = Kind.CURRENT
    for x in (*_PHASES, "total"):
        v[f"power_{x}"] = Kind.ACTIVE_POWER
        v[f"reactive_power_{x}"] = Kind.REACTIVE_POWER
        v[f"apparent_power_{x}"] = Kind.APPARENT_POWER
        v[f"pf_{x}"] = Kind.POWER_FACTOR
    v["frequency"] = Kind.FREQUENCY
    for direction in ("import", "export", "total"):
        v[f"energy_{direction}"] = Kind.ACTIVE_ENERGY
        v[f"reactive_energy_{direction}"] = Kind.REACTIVE_ENERGY
        for x in _PHASES:
            v[f"energy_{direction}_{x}"] = Kind.ACTIVE_ENERGY
            v[f"reactive_energy_{direction}_{x}"] = Kind.REACTIVE_ENERGY
        for tariff in _TARIFFS:
            v[f"energy_{direction}_{tariff}"] = Kind.ACTIVE_ENERGY
    for name in ("demand_total", "demand_max", "demand_import", "demand_export"):
        v[name] = Kind.ACTIVE_POWER
    for x in (*_PHASES, "avg"):
        v[f"thd_voltage_{x}"] = Kind.PERCENT
        v[f"thd_current_{x}"] = Kind.PERCENT
    for name in (
        "pt_ratio",
        "ct_ratio",
        "demand_period",
        "system_type",
        "parity_stop",
        "device_address",
        "baud_rate",
        "serial_number",
        "status",
    ):
        v[name] = Kind.SETTING
    return v


VOCABULARY: Mapping[str, Kind] = _vocabulary()
"""Point names the physics understands, with their kind."""


def resolve_name(name: str) -> str | None:
    """The vocabulary name a point name stands for: itself, or the longest known prefix."""
    if name in VOCABULARY:
        return name
    parts = name.split("_")
    for end in range(len(parts) - 1, 0, -1):
        candidate = "_".join(parts[:end])
        if candidate in VOCABULARY:
            return candidate
    return None


def _unit_factor(point: ModbusPoint, kind: Kind) -> float:
    if kind is Kind.SETTING:
        return 1.0
    units = _UNITS[kind]
    if point.unit not in units:
        known = ", ".join(u for u in units if u)
        raise ValueError(
            f"point {point.name!r}: unit {point.unit!r} does not fit {kind.value} (use {known})"
        )
    return units[point.unit]


class _Wobble:
    """A smooth, seeded signal in about [-1, 1]: a sum of three slow sines."""

    __slots__ = ("_terms",)

    def __init__(self, rng: random.Random, period_s: float) -> None:
        self._terms = [
            (amp, 2 * math.pi / (period_s * rng.uniform(0.5, 2.0)), rng.uniform(0, 2 * math.pi))
            for amp in (0.6, 0.3, 0.1)
        ]

    def __call__(self, t: float) -> float:
        return sum(a * math.sin(w * t + p) for a, w, p in self._terms)


def seeded_rng(seed: int, key: str) -> random.Random:
    """A random generator for one (seed, key); stable across processes and Python runs."""
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def slow_signal(point: ModbusPoint, seed: int) -> _SlowSignal:
    """A deterministic slow signal that fits the point's type (for names not in VOCABULARY)."""
    return _SlowSignal(point, seeded_rng(seed, point.name))


class _SlowSignal:
    __slots__ = ("_fixed", "_lo", "_point", "_span", "_wobble")

    def __init__(self, point: ModbusPoint, rng: random.Random) -> None:
        self._point = point
        t = point.point_type
        self._fixed: Value = None
        if t in (PointType.BOOL, PointType.BIT):
            self._fixed = rng.random() < 0.5
        elif t is PointType.STRING:
            self._fixed = f"SIM-{point.name}"
        bounds = value_range(t)
        if t in FLOAT_TYPES or bounds is None:
            self._lo, self._span = 0.0, 100.0
        else:
            lo = max(bounds[0], -500)
            self._lo, self._span = float(lo), float(min(bounds[1], lo + 1000) - lo)
        self._wobble = _Wobble(rng, period_s=rng.uniform(20, 120))

    def __call__(self, t: float) -> Value:
        if self._fixed is not None:
            return self._fixed
        raw: int | float = self._lo + self._span * (
            0.5 + 0.5 * max(-1.0, min(1.0, self._wobble(t)))
        )
        if self._point.point_type not in FLOAT_TYPES:
            raw = round(raw)
        return engineering(raw, self._point.scale, self._point.offset)


@dataclass(frozen=True, slots=True)
class _Binding:
    """How one point gets its value: a quantity with a conversion divisor, or a signal."""

    name: str
    quantity: str | None
    divisor: float
    ratio: str | None
    signal: _SlowSignal | None


class MeterPhysics:
    """Seeded three-phase meter: sample(t) gives every point's value in its unit."""

    def __init__(
        self,
        points: Sequence[ModbusPoint],
        *,
        seed: int = 0,
        device_id: int = 1,
        pt_ratio: float = 1.0,
        ct_ratio: float = 20.0,
    ) -> None:
        self.seed = seed
        rng = seeded_rng(seed, "meter")
        names = {p.name for p in points}
        # Secondary-side registers only on meters that expose their ratios (meters.md 3.3).
        self.secondary = bool(names & {"pt_ratio", "ct_ratio"})
        self.pt_ratio = pt_ratio
        self.ct_ratio = ct_ratio
        self.load_scale = 1.0  # scales every phase current; 0 = no load (PF reads 1)
        self._settings: dict[str, float] = {
            "demand_period": 15.0,  # minutes, as Chinese billing (meters.md 3.1 tip)
            "system_type": 3.0,  # 3P4W
            "parity_stop": 0.0,
            "device_address": float(device_id),
            "baud_rate": 2.0,  # SDM630 code for 9600
            "serial_number": float(rng.randrange(10_000_000, 99_999_999)),
            "status": 0.0,
        }
        self._bindings: list[_Binding] = []
        for p in points:
            quantity = resolve_name(p.name)
            if quantity is None:
                self._bindings.append(_Binding(p.name, None, 1.0, None, slow_signal(p, seed)))
                continue
            kind = VOCABULARY[quantity]
            ratio = _RATIO.get(kind) if self.secondary else None
            self._bindings.append(_Binding(p.name, quantity, _unit_factor(p, kind), ratio, None))
        self._i_nominal = [rng.uniform(8.0, 25.0) for _ in _PHASES]
        self._load_phase = [rng.uniform(0, 2 * math.pi) for _ in _PHASES]
        self._load_period_s = rng.uniform(240.0, 480.0)
        self._v_wobble = [_Wobble(seeded_rng(seed, f"v{x}"), 30.0) for x in _PHASES]
        self._v_noise = [_Wobble(seeded_rng(seed, f"vn{x}"), 2.0) for x in _PHASES]
        self._i_noise = [_Wobble(seeded_rng(seed, f"in{x}"), 3.0) for x in _PHASES]
        self._pf_wobble = [_Wobble(seeded_rng(seed, f"pf{x}"), 90.0) for x in _PHASES]
        self._f_wobble = _Wobble(seeded_rng(seed, "f"), 20.0)
        self._thd_wobble = [_Wobble(seeded_rng(seed, f"thd{i}"), 60.0) for i in range(6)]
        # Counters in Wh / varh, per phase; seeded so two meters never read alike.
        start = rng.uniform(10_000.0, 200_000.0) * 1e3
        self._e_import = [start / 3 * (1 + 0.05 * k) for k in (-1, 0, 1)]
        self._e_export = [rng.uniform(0.0, 500.0) * 1e3 / 3 for _ in _PHASES]
        self._q_import = [e * 0.3 for e in self._e_import]
        self._q_export = [rng.uniform(0.0, 100.0) * 1e3 / 3 for _ in _PHASES]
        self._demand: float | None = None
        self._demand_max = 0.0
        self._t_last: float | None = None

    def apply_written(self, values: Mapping[str, Value]) -> None:
        """Take over settings a client wrote (a new CT ratio rescales what follows)."""
        for name, value in values.items():
            if name in ("pt_ratio", "ct_ratio") and isinstance(value, int | float) and value > 0:
                setattr(self, name, float(value))

    def quantities(self, t: float) -> dict[str, float]:
        """Every VOCABULARY quantity at time t, primary side, base units; advances counters."""
        q: dict[str, float] = {}
        tau = 2 * math.pi
        v = []
        p_sum = q_sum = 0.0
        for k, x in enumerate(_PHASES):
            vk = 230.0 * (1 + 0.01 * self._v_wobble[k](t) + 0.002 * self._v_noise[k](t))
            load = 0.65 + 0.35 * math.sin(tau * t / self._load_period_s + self._load_phase[k])
            ik = self._i_nominal[k] * self.load_scale * load * (1 + 0.01 * self._i_noise[k](t))
            pf = 0.93 + 0.05 * self._pf_wobble[k](t)
            s = vk * ik
            p = s * pf
            qr = math.sqrt(max(s * s - p * p, 0.0))
            v.append(vk)
            q[f"voltage_{x}"] = vk
            q[f"current_{x}"] = ik
            q[f"power_{x}"] = p
            q[f"reactive_power_{x}"] = qr
            q[f"apparent_power_{x}"] = s
            q[f"pf_{x}"] = p / s if s else 1.0
            p_sum += p
            q_sum += qr
        for pair, (i, j) in zip(("ab", "bc", "ca"), ((0, 1), (1, 2), (2, 0)), strict=True):
            q[f"voltage_{pair}"] = math.sqrt(v[i] ** 2 + v[j] ** 2 + v[i] * v[j])
        q["voltage_avg"] = sum(v) / 3
        q["voltage_ll_avg"] = (q["voltage_ab"] + q["voltage_bc"] + q["voltage_ca"]) / 3
        currents = [q[f"current_{x}"] for x in _PHASES]
        q["current_avg"] = sum(currents) / 3
        q["current_sum"] = sum(currents)
        # Neutral current: phasor sum of the phase currents (each lags its voltage by acos pf).
        re = im = 0.0
        for k, x in enumerate(_PHASES):
            angle = -2 * math.pi * k / 3 - math.acos(max(-1.0, min(1.0, q[f"pf_{x}"])))
            re += currents[k] * math.cos(angle)
            im += currents[k] * math.sin(angle)
        q["current_n"] = math.hypot(re, im)
        s_total = math.hypot(p_sum, q_sum)
        q["power_total"] = p_sum
        q["reactive_power_total"] = q_sum
        q["apparent_power_total"] = s_total
        q["pf_total"] = p_sum / s_total if s_total else 1.0
        q["frequency"] = 50.0 + 0.03 * self._f_wobble(t)
        for k, x in enumerate(_PHASES):
            q[f"thd_voltage_{x}"] = 2.2 + 0.6 * self._thd_wobble[k](t)
            q[f"thd_current_{x}"] = 10.0 + 4.0 * self._thd_wobble[3 + k](t)
        for which in ("voltage", "current"):
            q[f"thd_{which}_avg"] = sum(q[f"thd_{which}_{x}"] for x in _PHASES) / 3
        self._integrate(t, q)
        return q

    def _integrate(self, t: float, q: dict[str, float]) -> None:
        dt = 0.0 if self._t_last is None else max(0.0, t - self._t_last)
        self._t_last = t if self._t_last is None else max(self._t_last, t)
        hours = dt / 3600.0
        for k, x in enumerate(_PHASES):
            p, qr = q[f"power_{x}"], q[f"reactive_power_{x}"]
            self._e_import[k] += max(p, 0.0) * hours
            self._e_export[k] += max(-p, 0.0) * hours
            self._q_import[k] += max(qr, 0.0) * hours
            self._q_export[k] += max(-qr, 0.0) * hours
        for k, x in enumerate(_PHASES):
            q[f"energy_import_{x}"] = self._e_import[k]
            q[f"energy_export_{x}"] = self._e_export[k]
            q[f"energy_total_{x}"] = self._e_import[k] + self._e_export[k]
            q[f"reactive_energy_import_{x}"] = self._q_import[k]
            q[f"reactive_energy_export_{x}"] = self._q_export[k]
            q[f"reactive_energy_total_{x}"] = self._q_import[k] + self._q_export[k]
        for direction in ("import", "export", "total"):
            total = sum(q[f"energy_{direction}_{x}"] for x in _PHASES)
            q[f"energy_{direction}"] = total
            q[f"reactive_energy_{direction}"] = sum(
                q[f"reactive_energy_{direction}_{x}"] for x in _PHASES
            )
            for tariff, share in _TARIFFS.items():
                q[f"energy_{direction}_{tariff}"] = total * share
        # Demand: power averaged over the demand period (an exponential window).
        p_total = q["power_total"]
        if self._demand is None:
            self._demand = p_total
        else:
            period_s = 60.0 * self._settings["demand_period"]
            self._demand += (p_total - self._demand) * (1.0 - math.exp(-dt / period_s))
        self._demand_max = max(self._demand_max, self._demand)
        q["demand_total"] = self._demand
        q["demand_import"] = max(self._demand, 0.0)
        q["demand_export"] = max(-self._demand, 0.0)
        q["demand_max"] = self._demand_max

    def sample(self, t: float) -> dict[str, Value]:
        """Every point's value at time t, in the point's unit (and side of the CT/PT)."""
        q = self.quantities(t)
        settings = self._settings
        ratios = {"pt": self.pt_ratio, "ct": self.ct_ratio, "ptct": self.pt_ratio * self.ct_ratio}
        out: dict[str, Value] = {}
        for b in self._bindings:
            if b.signal is not None:
                out[b.name] = b.signal(t)
            elif b.quantity in ("pt_ratio", "ct_ratio"):
                out[b.name] = self.pt_ratio if b.quantity == "pt_ratio" else self.ct_ratio
            elif b.quantity in settings:
                out[b.name] = settings[b.quantity]
            else:
                assert b.quantity is not None
                value = q[b.quantity] / b.divisor
                if b.ratio is not None:
                    value /= ratios[b.ratio]
                out[b.name] = value
        return out

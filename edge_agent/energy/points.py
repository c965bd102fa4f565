"""Which points are energy counters, and how to read each: from `energy:` point options.

A device's points (a Modbus profile's, or a driver's own point models carrying `energy`)
are resolved once at start: a counter's modulus comes from `rollover`, from `width_bits` x
`resolution`, or from the register type and scale (uint32 x 0.01 kWh wraps at
42 949 672.96 kWh; BCD at 10^8 counts; floats never wrap); its unit is converted to the
kind's canonical unit; demand registers are converted to kW.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drivers.options.energy import EnergyOptions
from drivers.registry import plugin
from edge_agent.energy.coefficients import CANONICAL, demand_factor, unit_factor
from edge_agent.energy.counter import CounterSpec
from edge_agent.energy.hierarchy import CounterInfo


@dataclass(frozen=True, slots=True)
class CounterPoint:
    """An `energy:` point of a device, resolved against the point's register model."""

    device: str
    point: str
    options: EnergyOptions
    spec: CounterSpec
    poll_interval_s: float
    unit: str  # canonical unit (kWh, kvarh, m3, t) or kW for demand registers

    @property
    def info(self) -> CounterInfo:
        """What the hierarchy needs."""
        return CounterInfo(
            (self.device, self.point), self.options.kind, self.options.direction, self.options.role
        )


def counter_spec(
    options: EnergyOptions,
    *,
    wrap_counts: int | None,
    scale: float,
    unit: str | None,
    poll_interval_s: float,
) -> CounterSpec:
    """How to unwrap a counter: modulus from rollover, width x resolution, or the type."""
    modulus: float | None = options.rollover
    if modulus is None:
        resolution = options.resolution if options.resolution is not None else abs(scale)
        if options.width_bits is not None:
            modulus = float(2**options.width_bits) * resolution
        elif wrap_counts is not None:
            modulus = float(wrap_counts) * resolution
    return CounterSpec(
        modulus=modulus,
        max_rate=options.max_rate,
        factor=unit_factor(options.kind, options.unit or unit),
        gap_ms=int(2.5 * poll_interval_s * 1000),
    )


def energy_points(devices: Sequence[Any]) -> list[CounterPoint]:
    """Every `energy:` point of every enabled device; ValueError on a unit that does not fit."""
    found: list[CounterPoint] = []
    for setup in devices:  # DeviceSetup: .device, .profile
        device = setup.device
        if not device.enabled:
            continue
        points: Sequence[Any] = (
            setup.profile.points if setup.profile is not None else device.points
        ) or ()
        wraps = plugin(device.driver).wrap_counts(device, setup.profile)
        for p in points:
            options: EnergyOptions | None = p.energy
            if options is None:
                continue
            unit = options.unit or p.unit
            where = f"device {device.name} point {p.name}"
            try:
                if options.role == "counter":
                    spec = counter_spec(
                        options,
                        wrap_counts=wraps.get(p.name),
                        scale=float(p.scale),
                        unit=unit,
                        poll_interval_s=device.interval_s,
                    )
                    canonical = CANONICAL[options.kind]
                else:
                    spec = CounterSpec(factor=demand_factor(unit))
                    canonical = "kW"
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            found.append(
                CounterPoint(device.name, p.name, options, spec, device.interval_s, canonical)
            )
    return found

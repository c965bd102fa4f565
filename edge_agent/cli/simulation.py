"""Turns a site config into simulators, so `simulate` serves what `run` reads: each
protocol's devices go to the simulators' plugin its driver plugin names."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from drivers.registry import PROTOCOLS, plugin
from edge_agent.config.site import LoadedConfig
from edge_agent.energy.tariffs import PERIODS, DayTable, find_calendar, load_calendar
from simulators.common.contract import SimulatedDevice, SimulatorPlugin


def simulated(loaded: LoadedConfig) -> dict[str, list[SimulatedDevice]]:
    """The site's devices by protocol, in the registry's order."""
    by_protocol: dict[str, list[SimulatedDevice]] = {name: [] for name in PROTOCOLS}
    for d in loaded.devices:
        by_protocol[d.device.driver].append(SimulatedDevice(d.device, d.profile, d.profile_name))
    return {name: devices for name, devices in by_protocol.items() if devices}


def simulator(protocol: str) -> SimulatorPlugin:
    """The simulators' plugin of a protocol, named by its driver plugin."""
    module, _, attribute = plugin(protocol).simulator.partition(":")
    found: SimulatorPlugin = getattr(importlib.import_module(module), attribute)
    return found


def specs(loaded: LoadedConfig, protocol: str) -> list[Any]:
    """What `simulate` serves for the site's devices of one protocol."""
    devices = simulated(loaded).get(protocol, [])
    if not devices:
        return []
    return simulator(protocol).specs(
        devices, site_dir=loaded.path.parent, tariff_at=tariff_clock(loaded)
    )


def tariff_clock(loaded: LoadedConfig) -> Callable[[dt.datetime], int] | None:
    """Meter tariff 1..4 (尖 峰 平 谷) at a time, from the site's TOU calendar, or None."""
    energy = loaded.site.energy
    if energy.tariff is None:
        return None
    table = DayTable(load_calendar(find_calendar(energy.tariff, base=loaded.path.parent)))
    zone = ZoneInfo(energy.timezone)

    def tariff_at(when: dt.datetime) -> int:
        local = when.astimezone(zone)  # a naive time is the machine's local time
        minutes, _ = table.of(local.date())
        if minutes is None:  # no calendar version in force that day: flat
            return PERIODS.index("flat") + 1
        return minutes[local.hour * 60 + local.minute] + 1

    return tariff_at

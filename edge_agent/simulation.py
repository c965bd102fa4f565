"""Turns a site config into simulator specs, so `simulate` serves what `run` reads."""

from __future__ import annotations

import zlib

from edge_agent.config import LoadedConfig
from simulators.site import SimDeviceSpec


def sim_specs(loaded: LoadedConfig) -> list[SimDeviceSpec]:
    """One spec per Modbus device, seeded from its name so runs repeat."""
    return [
        SimDeviceSpec(
            name=d.device.name,
            url=d.device.url,
            device_id=d.device.device_id,
            profile=d.profile,
            order=d.device.order,
            seed=zlib.crc32(d.device.name.encode()),
        )
        for d in loaded.devices
    ]

"""Modbus devices (TCP, RTU, RTU over TCP) simulated from their profiles, as a plugin."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from simulators.common.contract import Served, SimulatedDevice, TariffClock
from simulators.common.control import LineControl
from simulators.modbus.site import SimDeviceSpec, serve


class ModbusSimulator:
    """One simulated device per Modbus entry, serving its profile through the codec."""

    def specs(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        site_dir: Path,
        tariff_at: TariffClock | None,
    ) -> list[SimDeviceSpec]:
        return [
            SimDeviceSpec(
                name=d.device.name,
                url=d.device.url,
                device_id=d.device.device_id,
                profile=d.profile,
                order=d.device.order,
                seed=zlib.crc32(d.device.name.encode()),
                label=d.profile_name,
            )
            for d in devices
        ]

    @contextlib.asynccontextmanager
    async def serve(self, specs: Sequence[SimDeviceSpec]) -> AsyncIterator[Served]:
        async with serve(specs) as site:
            served = Served()
            for spec in specs:
                device = site.device(spec.name)
                served.controls[spec.name] = LineControl(device, "modbus")
                where = f"{device.url} id {device.device_id}"
                served.lines[spec.name] = [f"serving {spec.name} ({spec.label}) at {where}"]
            yield served


SIMULATOR = ModbusSimulator()

"""DL/T 645 meters simulated on their lines, as a plugin."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from simulators.common.contract import Served, SimulatedDevice, TariffClock
from simulators.common.control import LineControl
from simulators.dlt645.site import Dlt645MeterSpec, serve


class Dlt645Simulator:
    """One simulated meter per entry (a wildcard address gets 00 digits); its tariff
    registers follow the site's TOU calendar when it has one."""

    def specs(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        site_dir: Path,
        tariff_at: TariffClock | None,
    ) -> list[Dlt645MeterSpec]:
        return [
            Dlt645MeterSpec(
                name=d.device.name,
                url=d.device.url,
                address=d.device.address.replace("AA", "00"),
                seed=zlib.crc32(d.device.name.encode()),
                tariff_at=tariff_at,
            )
            for d in devices
        ]

    @contextlib.asynccontextmanager
    async def serve(self, specs: Sequence[Dlt645MeterSpec]) -> AsyncIterator[Served]:
        async with serve(specs) as site:
            served = Served()
            for spec in specs:
                served.controls[spec.name] = LineControl(site.meter(spec.name), "dlt645")
                served.lines[spec.name] = [
                    f"serving {spec.name} (DL/T 645 {spec.address}) at {spec.url}"
                ]
            yield served


SIMULATOR = Dlt645Simulator()

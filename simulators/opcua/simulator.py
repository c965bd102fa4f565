"""OPC UA PLCs simulated with the nodes a site's config names, as a plugin (imported only
for sites with OPC UA devices: it loads asyncua)."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from drivers.opcua.config import SecurityMode
from drivers.opcua.nodeid import NodeRef
from simulators.common.contract import Served, SimulatedDevice, TariffClock
from simulators.common.control import OpcUaControl
from simulators.opcua.server import OpcUaSimSpec, serve_opcua


class OpcUaSimulator:
    """One PLC per OPC UA device: the PLC model plus every node the config names.

    It offers security None (for `edge-agent browse`) and the device's own mode and policy,
    accepts the device's username and password, makes the nodes the config writes writable
    (those of the PLC model keep their own access), and keeps its server certificate in
    pki/simulator/<device>/ beside the site file (trust it by copying it into the device's
    trust directory).
    """

    def specs(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        site_dir: Path,
        tariff_at: TariffClock | None,
    ) -> list[OpcUaSimSpec]:
        specs: list[OpcUaSimSpec] = []
        for d in devices:
            device = d.device
            security = device.security
            endpoints: list[tuple[str, str | None]] = [("None", None)]
            secure = security.mode is not SecurityMode.NONE
            if secure:
                endpoints.append((str(security.mode), str(security.effective_policy)))
            users = {}
            if device.username is not None and device.password is not None:
                users[device.username] = device.password.get_secret_value()
            extra = tuple(
                target
                for p in device.points
                if isinstance(target := p.target(device.namespace), NodeRef)
            )
            written = tuple(
                target
                for p in device.points
                if p.write is not None and isinstance(target := p.target(device.namespace), NodeRef)
            )
            specs.append(
                OpcUaSimSpec(
                    name=device.name,
                    url=device.url,
                    seed=zlib.crc32(device.name.encode()),
                    endpoints=tuple(endpoints),
                    users=users,
                    allow_anonymous=not users,
                    pki_dir=site_dir / "pki" / "simulator" / device.name if secure else None,
                    extra_nodes=extra,
                    writable_nodes=written,
                )
            )
        return specs

    @contextlib.asynccontextmanager
    async def serve(self, specs: Sequence[OpcUaSimSpec]) -> AsyncIterator[Served]:
        async with serve_opcua(specs) as site:
            served = Served()
            for spec in specs:
                sim = site.device(spec.name)
                served.controls[spec.name] = OpcUaControl(sim)
                lines = [f"serving {spec.name} (OPC UA PLC, {sim.spec.namespace}) at {sim.url}"]
                if sim.server_certificate is not None:
                    lines.append(f"  its certificate: {sim.certificate_file} (copy it to trust it)")
                served.lines[spec.name] = lines
            yield served


SIMULATOR = OpcUaSimulator()

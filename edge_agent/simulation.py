"""Turns a site config into simulator specs, so `simulate` serves what `run` reads."""

from __future__ import annotations

import zlib

from drivers.dlt645.config import Dlt645Device
from drivers.modbus.config import ModbusDevice, ModbusProfile
from drivers.opcua.config import OpcUaDevice, SecurityMode
from drivers.opcua.nodeid import NodeRef
from edge_agent.config import LoadedConfig
from simulators.dlt645_site import Dlt645MeterSpec
from simulators.opcua_server import OpcUaSimSpec
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
        if isinstance(d.device, ModbusDevice) and isinstance(d.profile, ModbusProfile)
    ]


def dlt645_specs(loaded: LoadedConfig) -> list[Dlt645MeterSpec]:
    """One simulated meter per DL/T 645 device (a wildcard address gets 00 digits)."""
    return [
        Dlt645MeterSpec(
            name=d.device.name,
            url=d.device.url,
            address=d.device.address.replace("AA", "00"),
            seed=zlib.crc32(d.device.name.encode()),
        )
        for d in loaded.devices
        if isinstance(d.device, Dlt645Device)
    ]


def opcua_specs(loaded: LoadedConfig) -> list[OpcUaSimSpec]:
    """One simulated PLC per OPC UA device: the PLC model plus every node the config names.

    The simulator offers security None (for `edge-agent browse`) and the device's own
    mode and policy, accepts the device's username and password, and keeps its server
    certificate in pki/simulator/<device>/ beside the site file (trust it by copying it
    into the device's trust directory).
    """
    specs: list[OpcUaSimSpec] = []
    for d in loaded.devices:
        device = d.device
        if not isinstance(device, OpcUaDevice):
            continue
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
        specs.append(
            OpcUaSimSpec(
                name=device.name,
                url=device.url,
                seed=zlib.crc32(device.name.encode()),
                endpoints=tuple(endpoints),
                users=users,
                allow_anonymous=not users,
                pki_dir=loaded.path.parent / "pki" / "simulator" / device.name if secure else None,
                extra_nodes=extra,
            )
        )
    return specs

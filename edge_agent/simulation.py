"""Turns a site config into simulator specs, so `simulate` serves what `run` reads."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable
from zoneinfo import ZoneInfo

from drivers.dlt645.config import Dlt645Device
from drivers.modbus.config import ModbusDevice, ModbusProfile
from drivers.opcua.config import OpcUaDevice, SecurityMode
from drivers.opcua.nodeid import NodeRef
from edge_agent.config import LoadedConfig
from edge_agent.energy_tariffs import PERIODS, DayTable, find_calendar, load_calendar
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
    """One simulated meter per DL/T 645 device (a wildcard address gets 00 digits).

    The meters' tariff registers follow the site's TOU calendar when it has one.
    """
    tariff_at = tariff_clock(loaded)
    return [
        Dlt645MeterSpec(
            name=d.device.name,
            url=d.device.url,
            address=d.device.address.replace("AA", "00"),
            seed=zlib.crc32(d.device.name.encode()),
            tariff_at=tariff_at,
        )
        for d in loaded.devices
        if isinstance(d.device, Dlt645Device)
    ]


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

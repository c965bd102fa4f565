"""Modbus TCP, RTU and RTU over TCP as a protocol plugin (drivers/contract.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from drivers.contract import (
    LineParts,
    PlanSummary,
    PointChecks,
    PolledDriver,
    SiteIssue,
    ValueType,
    WireEstimate,
)
from drivers.modbus.codec import PointType
from drivers.modbus.config import (
    ModbusDevice,
    ModbusPoint,
    ModbusProfile,
    Unreadable,
    address_clashes,
    map_clashes,
    point_issues,
    span_text,
)
from drivers.modbus.connection import ModbusConnection
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import Request, build_plan
from drivers.modbus.write import encode_write
from drivers.options.writes import WriteOptions
from drivers.reading import PointSpec, Value

MBAP_SIZE = 7  # Modbus TCP header: transaction, protocol, length, unit id
RTU_OVERHEAD = 3  # unit id and CRC


def _request_line(request: Request) -> str:
    return (
        f"  FC{request.function_code:02d} {request.table:<9} "
        f"start {request.start:5d} (0x{request.start:04X})  count {request.count:4d}  "
        + ", ".join(request.point_names)
    )


def _covers(device: ModbusDevice, profile: ModbusProfile) -> list[tuple[int, int, str]]:
    """The device's own unreadable ranges that cover points of its profile's map."""
    found = []
    for k, u in enumerate(device.unreadable):
        for j, p in enumerate(profile.points):
            if u.table == p.table and p.address <= u.end and u.start <= p.last_address:
                message = (
                    f"unreadable {u.table} range {u.start}-{u.end} covers {p.name!r} at "
                    f"{span_text(p)} of profile {device.profile!r}"
                )
                found.append((k, j, message))
    return found


_TYPES: dict[PointType, ValueType] = {
    PointType.BOOL: "bool",
    PointType.BIT: "bool",
    PointType.INT16: "int16",
    PointType.UINT16: "uint16",
    PointType.INT32: "int32",
    PointType.UINT32: "uint32",
    PointType.INT64: "int64",
    PointType.UINT64: "uint64",
    PointType.FLOAT32: "float32",
    PointType.FLOAT64: "float64",
    PointType.STRING: "string",
    PointType.BCD16: "uint16",
    PointType.BCD32: "uint32",
}


WRAP_COUNTS = {
    PointType.INT16: 2**16,
    PointType.UINT16: 2**16,
    PointType.INT32: 2**32,
    PointType.UINT32: 2**32,
    PointType.INT64: 2**64,
    PointType.UINT64: 2**64,
    PointType.BCD16: 10**4,
    PointType.BCD32: 10**8,
}


class ModbusPlugin:
    """Devices on a TCP connection of their own, or units sharing a serial line."""

    name = "modbus"
    title = "Modbus"
    device_model = ModbusDevice
    profile_model = ModbusProfile
    simulator = "simulators.modbus.simulator:SIMULATOR"
    point_checks = PointChecks(ModbusPoint, Unreadable, point_issues, _covers)

    def resolved(self, device: ModbusDevice, base: Path) -> ModbusDevice:
        return device

    def wrong_profile(self, name: str) -> str:
        return f"{name!r} is a DL/T 645 profile, not a Modbus register map"

    def line_key(self, device: ModbusDevice) -> str:
        ep = device.endpoint
        # Entries on one TCP unit (one meter polled at several rates) share its connection.
        return ep.bus_key or f"tcp:{ep.host}:{ep.port}#{device.device_id}"

    def serial_path(self, device: ModbusDevice) -> str | None:
        return device.endpoint.bus_key or None

    def site_issues(self, devices: Sequence[tuple[int, ModbusDevice]]) -> list[SiteIssue]:
        return address_clashes(devices)

    def map_clashes(
        self, entries: Sequence[tuple[int, ModbusDevice, ModbusProfile]]
    ) -> list[SiteIssue]:
        """Entries on one unit whose loaded maps (a profile's too) share a register."""
        return map_clashes(entries)

    def compile(self, device: ModbusDevice, profile: ModbusProfile | None) -> None:
        build_plan(device, profile or device.inline_profile())

    def open_line(
        self, key: str, devices: Sequence[tuple[ModbusDevice, ModbusProfile | None]]
    ) -> LineParts:
        first = devices[0][0]
        connection = None
        if first.endpoint.bus_key or len(devices) > 1:
            # One client per bus (or per TCP unit polled by several entries); it waits as
            # long as the slowest entry is allowed to.
            connection = ModbusConnection(
                first.endpoint,
                name=first.endpoint.bus_key or key,
                timeout_s=max(d.timeout_s for d, _ in devices),
            )
        drivers: list[PolledDriver] = [
            ModbusDriver(d, p or d.inline_profile(), connection=connection) for d, p in devices
        ]
        return LineParts(drivers, frame_gap_s=max(d.frame_gap_s for d, _ in devices))

    def plan_summary(
        self, device: ModbusDevice, profile: ModbusProfile | None, profile_name: str
    ) -> PlanSummary:
        plan = build_plan(device, profile or device.inline_profile())
        state = "" if device.enabled else ", disabled"
        header = (
            f"{device.name}: {device.url} device_id {device.device_id}, "
            f"profile {profile_name}, every {device.interval_s:g} s{state}"
        )
        return PlanSummary(
            [header, *(_request_line(r) for r in plan.requests)],
            points=len(plan.points),
            requests=len(plan.requests),
            registers=sum(r.count for r in plan.requests if not r.table.is_bits),
            bits=sum(r.count for r in plan.requests if r.table.is_bits),
        )

    def point_specs(
        self, device: ModbusDevice, profile: ModbusProfile | None
    ) -> tuple[PointSpec, ...]:
        return build_plan(device, profile or device.inline_profile()).points

    def value_types(
        self, device: ModbusDevice, profile: ModbusProfile | None
    ) -> dict[str, ValueType]:
        """The register type; engineering values (scale, offset, decimals) are float64."""
        types: dict[str, ValueType] = {}
        for p in (profile or device.inline_profile()).points:
            kind = _TYPES[p.point_type]
            scaled = p.scale != 1 or p.offset != 0 or p.decimals is not None
            types[p.name] = "float64" if scaled and kind != "bool" else kind
        return types

    def wrap_counts(self, device: ModbusDevice, profile: ModbusProfile | None) -> dict[str, int]:
        points = (profile or device.inline_profile()).points
        return {p.name: WRAP_COUNTS[p.point_type] for p in points if p.point_type in WRAP_COUNTS}

    def wire_estimate(self, driver: PolledDriver) -> WireEstimate | None:
        """A read request PDU is 5 bytes (function, start, count); its answer 2 bytes
        (function, byte count) plus the data: 2 bytes per register, a bit per coil rounded
        up to whole bytes. TCP adds the 7-byte MBAP header, RTU a unit id and a 2-byte CRC."""
        assert isinstance(driver, ModbusDriver)
        overhead = RTU_OVERHEAD if driver.device.endpoint.is_serial_line else MBAP_SIZE
        sizes: list[tuple[int, int]] = []
        for req in driver.plan.requests:
            data = math.ceil(req.count / 8) if req.table.is_bits else 2 * req.count
            sizes.append((overhead + 5, overhead + 2 + data))
        if not sizes:
            return None
        return WireEstimate(
            request_bytes=sum(s[0] for s in sizes),
            response_bytes=sum(s[1] for s in sizes),
            first_request_bytes=sizes[0][0],
        )

    def bad_answers(self, driver: PolledDriver) -> int | None:
        assert isinstance(driver, ModbusDriver)
        return driver.bad_answers

    # -- writes (drivers/contract.py: WritablePlugin) ------------------------------------

    def write_options(self, driver: PolledDriver) -> Mapping[str, WriteOptions]:
        assert isinstance(driver, ModbusDriver)
        return {name: p.write for name, p in driver.map.items() if p.write is not None}

    def check_write(self, driver: PolledDriver, point: str, value: Value) -> None:
        assert isinstance(driver, ModbusDriver)
        found = driver.writable(point)
        encode_write(found, driver.order_of(found), value)

    async def write(self, driver: PolledDriver, point: str, value: Value) -> Value:
        assert isinstance(driver, ModbusDriver)
        return await driver.write(point, value)

    # drivers/contract.py: ReadBackLater (a shared RS-485 line's read-back is its next poll)

    async def write_only(self, driver: PolledDriver, point: str, value: Value) -> None:
        assert isinstance(driver, ModbusDriver)
        await driver.write(point, value, read_back=False)

    async def read_back(self, driver: PolledDriver, point: str) -> Value:
        assert isinstance(driver, ModbusDriver)
        return await driver.read_back(driver.writable(point))


PLUGIN = ModbusPlugin()

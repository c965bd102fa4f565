"""OPC UA as a protocol plugin (drivers/contract.py): one session per server.

The driver, and with it asyncua, is imported only when a line is opened, so a site without
OPC UA devices never loads the stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from drivers.contract import (
    LineParts,
    PlanSummary,
    PolledDriver,
    SiteIssue,
    ValueType,
    WireEstimate,
)
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.plan import describe_device, read_requests
from drivers.options.writes import WriteOptions
from drivers.reading import PointSpec, Value


class OpcUaPlugin:
    """Every server is a line of its own: one session, one task."""

    name = "opcua"
    title = "OPC UA"
    device_model = OpcUaDevice
    profile_model = None
    simulator = "simulators.opcua.simulator:SIMULATOR"
    point_checks = None

    def resolved(self, device: OpcUaDevice, base: Path) -> OpcUaDevice:
        return device.resolved(base)  # certificate paths are relative to the site file

    def wrong_profile(self, name: str) -> str:
        return "OPC UA devices have no profile"

    def line_key(self, device: OpcUaDevice) -> str:
        return f"opcua:{device.name}"

    def serial_path(self, device: OpcUaDevice) -> str | None:
        return None

    def site_issues(self, devices: Sequence[tuple[int, OpcUaDevice]]) -> list[SiteIssue]:
        return []  # two entries may name one server: each has a session of its own

    def compile(self, device: OpcUaDevice, profile: None) -> None:
        return None  # node ids are checked by the model; nothing else to plan offline

    def open_line(self, key: str, devices: Sequence[tuple[OpcUaDevice, None]]) -> LineParts:
        from drivers.opcua.driver import OpcUaDriver

        return LineParts([OpcUaDriver(device) for device, _ in devices])

    def plan_summary(self, device: OpcUaDevice, profile: None, profile_name: str) -> PlanSummary:
        return PlanSummary(
            describe_device(device), points=len(device.points), requests=read_requests(device)
        )

    def point_specs(self, device: OpcUaDevice, profile: None) -> tuple[PointSpec, ...]:
        return tuple(PointSpec(p.name, p.unit) for p in device.points)

    def value_types(self, device: OpcUaDevice, profile: None) -> dict[str, ValueType]:
        return {}  # the server's data types: known from the values read, not the config

    def wrap_counts(self, device: OpcUaDevice, profile: None) -> dict[str, int]:
        return {}  # counters are read as decimal numbers: their width is not configured

    def wire_estimate(self, driver: PolledDriver) -> WireEstimate | None:
        return None  # binary encoding and subscriptions: no fixed cost per poll

    def bad_answers(self, driver: PolledDriver) -> int | None:
        return None

    # -- writes (drivers/contract.py: WritablePlugin) ------------------------------------

    def write_options(self, driver: PolledDriver) -> Mapping[str, WriteOptions]:
        from drivers.opcua.driver import OpcUaDriver  # loaded already: the line is open

        assert isinstance(driver, OpcUaDriver)
        return {p.name: p.write for p in driver.device.points if p.write is not None}

    def check_write(self, driver: PolledDriver, point: str, value: Value) -> None:
        from drivers.opcua.driver import OpcUaDriver

        assert isinstance(driver, OpcUaDriver)
        driver.check_write(point, value)

    async def write(self, driver: PolledDriver, point: str, value: Value) -> Value:
        from drivers.opcua.driver import OpcUaDriver

        assert isinstance(driver, OpcUaDriver)
        return await driver.write(point, value)


PLUGIN = OpcUaPlugin()

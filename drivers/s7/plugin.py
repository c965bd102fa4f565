"""Siemens S7 PLCs (S7comm over ISO-on-TCP) as a protocol plugin (drivers/contract.py)."""

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
from drivers.options.writes import WriteOptions
from drivers.reading import PointSpec, Value
from drivers.s7.address import S7Type
from drivers.s7.config import S7Device
from drivers.s7.driver import S7Driver
from drivers.s7.plan import build_plan
from drivers.s7.values import encode_write

FRAMING = 4 + 3  # TPKT header and COTP data TPDU around every S7 PDU

_TYPES: dict[S7Type, ValueType] = {
    S7Type.BOOL: "bool",
    S7Type.BYTE: "uint16",
    S7Type.WORD: "uint16",
    S7Type.INT: "int16",
    S7Type.DWORD: "uint32",
    S7Type.DINT: "int32",
    S7Type.REAL: "float32",
    S7Type.LREAL: "float64",
    S7Type.STRING: "string",
    S7Type.DATE_AND_TIME: "string",
}
_WRAPS = {
    S7Type.BYTE: 2**8,
    S7Type.WORD: 2**16,
    S7Type.INT: 2**16,
    S7Type.DWORD: 2**32,
    S7Type.DINT: 2**32,
}


class S7Plugin:
    """Every PLC is a line of its own: one ISO-on-TCP connection, one job at a time."""

    name = "s7"
    title = "Siemens S7"
    device_model = S7Device
    profile_model = None
    simulator = "simulators.s7.simulator:SIMULATOR"
    point_checks = None  # the model checks its points as a whole

    def resolved(self, device: S7Device, base: Path) -> S7Device:
        return device

    def wrong_profile(self, name: str) -> str:
        return "S7 devices have no profile: their points are the PLC program's addresses"

    def line_key(self, device: S7Device) -> str:
        return f"s7:{device.name}"

    def serial_path(self, device: S7Device) -> str | None:
        return None

    def site_issues(self, devices: Sequence[tuple[int, S7Device]]) -> list[SiteIssue]:
        return []  # two entries may name one CPU: each has a connection of its own

    def compile(self, device: S7Device, profile: None) -> None:
        build_plan(device)

    def open_line(self, key: str, devices: Sequence[tuple[S7Device, None]]) -> LineParts:
        return LineParts([S7Driver(device) for device, _ in devices])

    def plan_summary(self, device: S7Device, profile: None, profile_name: str) -> PlanSummary:
        plan = build_plan(device)
        state = "" if device.enabled else ", disabled"
        where = (
            f"TSAP {device.remote_tsap}"
            if device.remote_tsap is not None
            else f"rack {device.rack} slot {device.effective_slot}"
        )
        header = (
            f"{device.name}: {device.url} {where}, PDU {plan.pdu_size}, "
            f"every {device.interval_s:g} s{state}"
        )
        return PlanSummary(
            [header, *(f"  {line}" for line in plan.describe())],
            points=len(plan.points),
            requests=len(plan.requests),
            data_bytes=plan.bytes_read,
        )

    def point_specs(self, device: S7Device, profile: None) -> tuple[PointSpec, ...]:
        return tuple(PointSpec(p.name, p.unit) for p in device.points)

    def value_types(self, device: S7Device, profile: None) -> dict[str, ValueType]:
        """The S7 type; scaled numbers are float64."""
        types: dict[str, ValueType] = {}
        for p in device.points:
            kind = _TYPES[p.data_type.kind]
            types[p.name] = "float64" if p.scale != 1 else kind
        return types

    def wrap_counts(self, device: S7Device, profile: None) -> dict[str, int]:
        return {
            p.name: _WRAPS[p.data_type.kind] for p in device.points if p.data_type.kind in _WRAPS
        }

    def wire_estimate(self, driver: PolledDriver) -> WireEstimate | None:
        """Each read-var: 12 bytes of request per item; its answer 4 per item plus the data
        (and fill bytes); TPKT and COTP add 7 bytes to each. The CPU state read every few
        seconds is left out."""
        assert isinstance(driver, S7Driver)
        requests = driver.plan.requests
        if not requests:
            return None
        return WireEstimate(
            request_bytes=sum(FRAMING + r.request_bytes for r in requests),
            response_bytes=sum(FRAMING + r.response_bytes for r in requests),
            first_request_bytes=FRAMING + requests[0].request_bytes,
        )

    def bad_answers(self, driver: PolledDriver) -> int | None:
        assert isinstance(driver, S7Driver)
        return driver.bad_answers

    # -- writes (drivers/contract.py: WritablePlugin) ------------------------------------

    def write_options(self, driver: PolledDriver) -> Mapping[str, WriteOptions]:
        assert isinstance(driver, S7Driver)
        return {p.name: p.write for p in driver.device.points if p.write is not None}

    def check_write(self, driver: PolledDriver, point: str, value: Value) -> None:
        assert isinstance(driver, S7Driver)
        encode_write(driver.writable(point), value)

    async def write(self, driver: PolledDriver, point: str, value: Value) -> Value:
        assert isinstance(driver, S7Driver)
        return await driver.write(point, value)


PLUGIN = S7Plugin()

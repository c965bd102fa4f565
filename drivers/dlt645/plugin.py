"""DL/T 645-2007 meters as a protocol plugin (drivers/contract.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drivers.contract import (
    LineParts,
    PlanSummary,
    PolledDriver,
    SiteIssue,
    ValueType,
    WireEstimate,
)
from drivers.dlt645.config import Dlt645Device, Dlt645Profile
from drivers.dlt645.driver import Dlt645Driver
from drivers.dlt645.formats import FieldKind
from drivers.dlt645.line import Dlt645Line
from drivers.reading import PointSpec


class Dlt645Plugin:
    """Meters on RS-485 lines (or behind a transparent converter), one frame at a time."""

    name = "dlt645"
    title = "DL/T 645"
    device_model = Dlt645Device
    profile_model = Dlt645Profile
    simulator = "simulators.dlt645.simulator:SIMULATOR"
    point_checks = None  # the model checks its points as a whole

    def resolved(self, device: Dlt645Device, base: Path) -> Dlt645Device:
        return device

    def wrong_profile(self, name: str) -> str:
        return f"{name!r} is not a DL/T 645 profile (its points need di:, not address:)"

    def line_key(self, device: Dlt645Device) -> str:
        return device.endpoint.bus_key

    def serial_path(self, device: Dlt645Device) -> str | None:
        return device.endpoint.bus_key

    def site_issues(self, devices: Sequence[tuple[int, Dlt645Device]]) -> list[SiteIssue]:
        """Meters on one line need distinct addresses, and a wildcard only on its own."""
        issues: list[SiteIssue] = []
        lines: dict[str, list[tuple[int, Dlt645Device]]] = {}
        for i, d in devices:
            if d.enabled:
                lines.setdefault(d.endpoint.bus_key, []).append((i, d))
        for key, on_line in lines.items():
            seen: dict[str, int] = {}
            for i, d in on_line:
                if d.address in seen:
                    first = seen[d.address]
                    message = f"address {d.address} is already used on {key} by devices[{first}]"
                    issues.append((i, "address", message))
                seen.setdefault(d.address, i)
                if "AA" in d.address and len(on_line) > 1:
                    message = (
                        f"wildcard address {d.address} on {key}, which has "
                        f"{len(on_line)} meters: every meter would answer"
                    )
                    issues.append((i, "address", message))
        return issues

    def compile(self, device: Dlt645Device, profile: Dlt645Profile | None) -> None:
        Dlt645Driver(device, profile)  # compiles the plan; opens nothing

    def open_line(
        self, key: str, devices: Sequence[tuple[Dlt645Device, Dlt645Profile | None]]
    ) -> LineParts:
        # The meter line keeps its own frame gap between any two transactions.
        gap = max(d.frame_gap_s for d, _ in devices)
        line = Dlt645Line(devices[0][0].endpoint, name=key, frame_gap_s=gap)
        return LineParts([Dlt645Driver(d, p, line=line) for d, p in devices])

    def plan_summary(
        self, device: Dlt645Device, profile: Dlt645Profile | None, profile_name: str
    ) -> PlanSummary:
        plan = Dlt645Driver(device, profile).plan  # compiles only; opens nothing
        state = "" if device.enabled else ", disabled"
        header = (
            f"{device.name}: {device.url} address {device.address}, "
            f"profile {profile_name}, every {device.interval_s:g} s{state}"
        )
        return PlanSummary(
            [header, *(f"  {line}" for line in plan.describe())],
            points=len(plan.points),
            requests=len(plan.requests),
        )

    def point_specs(
        self, device: Dlt645Device, profile: Dlt645Profile | None
    ) -> tuple[PointSpec, ...]:
        return Dlt645Driver(device, profile).plan.points

    def value_types(
        self, device: Dlt645Device, profile: Dlt645Profile | None
    ) -> dict[str, ValueType]:
        """Numbers are float64; hex fields uint64 (float64 when scaled); digits and times
        strings."""
        kinds: dict[FieldKind, ValueType] = {
            FieldKind.NUMBER: "float64",
            FieldKind.HEX: "uint64",
            FieldKind.DIGITS: "string",
            FieldKind.TIME: "string",
        }
        types: dict[str, ValueType] = {}
        for p in (profile or device.inline_profile()).points:
            kind = kinds[p.data_format.fields[p.field].kind]
            types[p.name] = "float64" if kind == "uint64" and p.scale != 1 else kind
        return types

    def wrap_counts(self, device: Dlt645Device, profile: Dlt645Profile | None) -> dict[str, int]:
        return {}  # counters are read as decimal numbers: their width is not configured

    def wire_estimate(self, driver: PolledDriver) -> WireEstimate | None:
        return None

    def bad_answers(self, driver: PolledDriver) -> int | None:
        return None


PLUGIN = Dlt645Plugin()

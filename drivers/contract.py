"""The driver contract: what the core asks of a protocol, and of each device's driver.

A protocol is one package under drivers/ exposing one `ProtocolPlugin` object (its
`plugin.py`), named in drivers/registry.py. The core (config loading, line building, plan
listing, simulation, metrics) talks to protocols only through it, never by type or name:

    site file ─► registry.plugin(device.driver) ─► device_model validates the entry
                                                 ├─ line_key: which devices share a connection
                                                 ├─ open_line: their drivers on that connection
                                                 ├─ plan_summary: `edge-agent plan`
                                                 └─ wire_estimate / bad_answers: metrics

`PolledDriver` is what the poller drives, one per device: it compiles its read plan in
`__init__` (so `check` and `plan` work offline, opening nothing) and answers `read()` with
a `Poll`, or raises `DeviceUnreachable` when nothing answered. An error *answer* is data:
points marked BAD with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from drivers.options.alarms import AlarmRule, DeviceAlarmRule
from drivers.options.energy import EnergyOptions
from drivers.options.report import BatchOptions, ReportOptions
from drivers.options.writes import WriteOptions
from drivers.reading import PointSpec, Poll, Value

__all__ = [
    "DeviceEntry",
    "LineParts",
    "PlanSummary",
    "PointChecks",
    "PointEntry",
    "PointIssue",
    "PolledDriver",
    "ProfileEntry",
    "ProtocolPlugin",
    "SiteIssue",
    "ValueType",
    "WireEstimate",
    "WritablePlugin",
    "WriteFailed",
    "WriteRefused",
]

SiteIssue = tuple[int, str, str]  # (index in devices:, key to point at, message)
# What a point's configuration says its values are, in words every encoding can map.
ValueType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]


class PointEntry(Protocol):
    """What every protocol's point model has: the stages read these fields, typed."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def scale(self) -> float: ...
    @property
    def energy(self) -> EnergyOptions | None: ...
    @property
    def alarms(self) -> tuple[AlarmRule, ...]: ...
    @property
    def report(self) -> ReportOptions | None: ...


class ProfileEntry(Protocol):
    """What every profile model has (a device model's map, shared by its devices)."""

    @property
    def points(self) -> Sequence[PointEntry]: ...
    @property
    def report(self) -> ReportOptions | None: ...
    @property
    def alarms(self) -> tuple[DeviceAlarmRule, ...]: ...


class DeviceEntry(Protocol):
    """What every protocol's device model has: the core and the stages read these fields."""

    @property
    def name(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...
    @property
    def points(self) -> Sequence[PointEntry] | None: ...
    @property
    def report(self) -> ReportOptions | None: ...
    @property
    def batch(self) -> BatchOptions | None: ...
    @property
    def alarms(self) -> tuple[DeviceAlarmRule, ...]: ...


class PolledDriver(Protocol):
    """One device's driver, as the poller drives it."""

    name: str
    protocol: str  # the registry name of its plugin
    points: tuple[PointSpec, ...]

    async def read(self) -> Poll:
        """Execute the plan compiled in __init__; DeviceUnreachable when nothing answered."""
        ...

    async def close(self) -> None:
        """Close what the driver opened; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class LineParts:
    """The drivers of the devices that share one line, in the order they were given."""

    drivers: list[PolledDriver]
    frame_gap_s: float = 0.0  # quiet time between two transactions on the line


@dataclass(slots=True)
class PlanSummary:
    """One device's part of `edge-agent plan`: its text and what a poll costs."""

    lines: list[str]
    points: int = 0
    requests: int = 0
    registers: int = 0
    bits: int = 0
    data_bytes: int = 0  # for protocols that read bytes, not registers (S7)


@dataclass(frozen=True, slots=True)
class WireEstimate:
    """Bytes of one complete poll on the wire (framing included), from the read plan."""

    request_bytes: int  # every request of the plan
    response_bytes: int  # every normal answer
    first_request_bytes: int  # what a poll sends before it times out on the first request


D = TypeVar("D")  # the protocol's device model
P = TypeVar("P", contravariant=True)  # the protocol's profile model


@dataclass(frozen=True, slots=True)
class PointIssue:
    """A problem of one point in a list: `index` is that point; `other` the point it
    clashes with, `unreadable` the range it lies in (so a loader can add their lines)."""

    index: int
    message: str
    other: int | None = None
    unreadable: int | None = None


@dataclass(frozen=True, slots=True)
class PointChecks:
    """Checks across a map's points that the config loader places at each point's line.

    For register maps: overlaps, duplicates, points inside unreadable ranges. `covers`
    names a device's own unreadable ranges (index k) that cover points of its profile's
    map (index j).
    """

    point_model: type[Any]
    unreadable_model: type[Any]
    check: Callable[[Sequence[Any], Sequence[Any]], list[PointIssue]]
    covers: Callable[[Any, Any], list[tuple[int, int, str]]]


class ProtocolPlugin(Protocol[D, P]):
    """Everything the core needs of one protocol."""

    @property
    def name(self) -> str:
        """The `driver:` value in site files."""
        ...

    @property
    def title(self) -> str:
        """For people: "Modbus", "OPC UA", "DL/T 645"."""
        ...

    @property
    def device_model(self) -> type[Any]:
        """Pydantic model of a device entry; its `driver` field is a Literal of `name`."""
        ...

    @property
    def profile_model(self) -> type[Any] | None:
        """Pydantic model of a profile file (a device model's map); None: no profiles."""
        ...

    @property
    def simulator(self) -> str:
        """Import string of its simulators' plugin ("package.module:NAME"): a name, not an
        import, so drivers never depend on the simulators built on them."""
        ...

    @property
    def point_checks(self) -> PointChecks | None:
        """Checks placed point by point, for maps where points can clash; None: none."""
        ...

    def resolved(self, device: D, base: Path) -> D:
        """The device with paths it names (certificates) made relative to `base`."""
        ...

    def wrong_profile(self, name: str) -> str:
        """Why the profile `name`, a map of another protocol, cannot serve this one."""
        ...

    def line_key(self, device: D) -> str:
        """Devices with the same key share one connection and one transaction at a time."""
        ...

    def serial_path(self, device: D) -> str | None:
        """The serial line a device is on (one protocol per line), or None."""
        ...

    def site_issues(self, devices: Sequence[tuple[int, D]]) -> list[SiteIssue]:
        """Clashes between enabled entries of this protocol: (index, key, message)."""
        ...

    def compile(self, device: D, profile: P | None) -> None:
        """Build the device's read plan (opens nothing); ValueError says what is wrong."""
        ...

    def open_line(self, key: str, devices: Sequence[tuple[D, P | None]]) -> LineParts:
        """The drivers of the devices sharing the line `key` (nothing is opened yet)."""
        ...

    def plan_summary(self, device: D, profile: P | None, profile_name: str) -> PlanSummary:
        """The device's lines in `edge-agent plan` and its cost per poll."""
        ...

    def point_specs(self, device: D, profile: P | None) -> tuple[PointSpec, ...]:
        """The points as the device's polls carry them (name and published unit), offline."""
        ...

    def value_types(self, device: D, profile: P | None) -> dict[str, ValueType]:
        """Point name -> the type its configuration fixes (points it does not fix: absent)."""
        ...

    def wrap_counts(self, device: D, profile: P | None) -> dict[str, int]:
        """Point name -> raw counts at which its value wraps (a 32-bit register: 2**32;
        BCD32: 10**8); points that never wrap, or whose width is unknown: absent."""
        ...

    def wire_estimate(self, driver: PolledDriver) -> WireEstimate | None:
        """Bytes one poll of this driver puts on the wire, where the protocol can tell."""
        ...

    def bad_answers(self, driver: PolledDriver) -> int | None:
        """Answers refused as malformed or mismatched so far, where the protocol counts them."""
        ...


class WriteRefused(ValueError):
    """A value the point cannot take; nothing was sent. `code` is a short fixed word
    (wrong_type, out_of_range, not_writable, unknown_point), `reason` the text for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WriteFailed(Exception):
    """The device answered the write with a refusal (a Modbus exception, an OPC UA status)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class WritablePlugin(Protocol):
    """What a protocol whose points can be written adds to `ProtocolPlugin`; the command
    path asks `isinstance(plugin, WritablePlugin)` and refuses writes of other protocols."""

    def write_options(self, driver: PolledDriver) -> Mapping[str, WriteOptions]:
        """Point name -> its `write:` options, for the points the config made writable."""
        ...

    def check_write(self, driver: PolledDriver, point: str, value: Value) -> None:
        """WriteRefused when `value` cannot be written to `point` exactly; opens nothing."""
        ...

    async def write(self, driver: PolledDriver, point: str, value: Value) -> Value:
        """Write `value` (engineering units) and read the point back: the value read.

        One transaction at a time, on the line's connection: the caller runs it between
        polls. WriteRefused, WriteFailed (the device refused), DeviceUnreachable (no answer).
        """
        ...


@runtime_checkable
class ReadBackLater(Protocol):
    """A WritablePlugin whose write and read-back can be two steps: on a busy shared line
    the read-back is the device's next regular poll (edge_agent/commands/readback.py)."""

    async def write_only(self, driver: PolledDriver, point: str, value: Value) -> None:
        """Write `value` in one transaction, without reading it back; as `write` raises."""
        ...

    async def read_back(self, driver: PolledDriver, point: str) -> Value:
        """Read the written point once: the value read; WriteFailed when it cannot."""
        ...

"""Config models of the Modbus driver: endpoint URL, device, point, profile.

A profile is the register map of a device model (points, types, orders, scales); a device
entry in a site config says where one such device is and how often to poll it. Every model
is frozen and forbids unknown keys, so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.config_numbers import BackoffCap, Number, PollInterval, Seconds, Timeout, Whole
from drivers.contract import PointIssue
from drivers.modbus.addressing import (
    Addressing,
    looks_modicon,
    modicon_warning,
    parse_number,
    to_protocol,
)
from drivers.modbus.codec import Order, PointType, Table, register_count
from drivers.modbus.type_names import order_name, point_type_name
from drivers.names import NAME_PATTERN
from drivers.options.alarms import DeviceAlarms, PointAlarms
from drivers.options.energy import EnergyOptions
from drivers.options.report import BatchOptions, ReportOptions
from drivers.options.writes import WriteOptions

MAX_REGISTERS = 125  # FC03/FC04 protocol limit
MAX_BITS = 2000  # FC01/FC02 protocol limit
MAX_IN_FLIGHT = 16  # pipelined requests per poll window; gateways that take any take a few

_PARITIES = {"N", "E", "O", "M", "S"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _addressing(value: object) -> Addressing | None:
    try:
        return Addressing(value) if isinstance(value, str) else None
    except ValueError:
        return None  # the field's own validation names the choices


def _number(value: object) -> tuple[int, int | None] | None:
    """An address as written (int, or text with its digit count); None: not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, None
    if isinstance(value, str):
        try:
            return parse_number(value)
        except ValueError:
            return None
    return None


def _table(value: object) -> Table | None:
    try:
        return Table(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _to_protocol(data: dict[str, object], keys: tuple[str, ...]) -> dict[str, object]:
    """`data` with the addresses at `keys` (and its table) in the protocol's 0-based form,
    marked zero_based so that validating the result again changes nothing."""
    mode = _addressing(data.get("addressing"))
    given = data.get("table")
    table = _table(given)
    if given is not None and table is None:
        return data  # the table field reports the unknown name
    if mode is None or mode is Addressing.ZERO_BASED:
        for key in keys:
            written = _number(data.get(key))
            if (
                written is not None
                and written[0] > 65535
                and looks_modicon(table or Table.HOLDING, written[0]) is not None
            ):
                to_protocol(Addressing.ZERO_BASED, written[0], table)  # raises, with a hint
        return data
    out = dict(data)
    named: Table | None = None
    for key in keys:
        written = _number(data.get(key))
        if written is None:
            return data  # the field reports what is wrong with it
        first = named
        try:
            named, out[key] = to_protocol(mode, written[0], table or named, digits=written[1])
        except ValueError:
            if table is not None or first is None:
                raise
            to_protocol(mode, written[0], None, digits=written[1])  # a bad number: its reason
            start = data.get(keys[0])
            raise ValueError(
                f"{keys[0]} {start} and {key} {written[0]} are in different tables"
            ) from None
    if named is not None:
        out["table"] = named.value
    out["addressing"] = Addressing.ZERO_BASED.value
    return out


def _inherit_addressing(data: object) -> object:
    """A map's `addressing` handed to its points and unreadable ranges (their own wins)."""
    if not isinstance(data, dict) or _addressing(data.get("addressing")) is None:
        return data  # an unknown name is the map's own error, reported once
    mode = data["addressing"]
    out = dict(data)
    for key in ("points", "unreadable"):
        items = data.get(key)
        if isinstance(items, list):
            out[key] = [
                {"addressing": mode, **item} if isinstance(item, dict) else item for item in items
            ]
    return out


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed Modbus URL: tcp://host:port, rtu+tcp://host:port, rtu:///dev/tty?...."""

    transport: Literal["tcp", "rtu", "rtu+tcp"]
    host: str = ""
    port: int = 502
    path: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def bus_key(self) -> str:
        """Devices with the same key share one line: one transaction at a time."""
        if self.transport == "rtu":
            return f"rtu:{self.path}"
        if self.transport == "rtu+tcp":
            return f"rtu+tcp:{self.host}:{self.port}"
        return ""  # Modbus TCP: every device gets its own connection

    @property
    def is_serial_line(self) -> bool:
        """True when units behind this endpoint share an RS-485 line."""
        return self.transport != "tcp"


def parse_endpoint(url: str) -> Endpoint:
    """Parse a Modbus URL; raises ValueError with a message fit for a config error."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "rtu+tcp"):
        if parts.query or parts.path not in ("", "/"):
            raise ValueError(f"{scheme}:// takes only host and port, got {url!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r} (use 1-65535)") from exc
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        return Endpoint(
            transport="tcp" if scheme == "tcp" else "rtu+tcp",
            host=parts.hostname,
            port=port if port is not None else 502,
        )
    if scheme == "rtu":
        path = parts.path or ""
        if parts.netloc:
            raise ValueError(
                "rtu URL needs three slashes and a device path, e.g. rtu:///dev/ttyUSB0, "
                f"got {url!r}"
            )
        if not path:
            raise ValueError(f"no serial device path in {url!r}")
        settings: dict[str, int | str] = {}
        for key, values in parse_qs(
            parts.query, keep_blank_values=True, strict_parsing=False
        ).items():
            value = values[-1]
            if key == "parity":
                if value.upper() not in _PARITIES:
                    raise ValueError(f"parity must be one of N, E, O, M, S, got {value!r}")
                settings[key] = value.upper()
            elif key in ("baudrate", "stopbits", "bytesize"):
                if not value.isdigit():
                    raise ValueError(f"{key} must be a whole number, got {value!r}")
                settings[key] = int(value)
            else:
                raise ValueError(
                    f"unknown serial setting {key!r} (known: baudrate, parity, stopbits, bytesize)"
                )
        ep = Endpoint(transport="rtu", path=path, **settings)  # type: ignore[arg-type]
        if ep.stopbits not in (1, 2) or ep.bytesize not in (5, 6, 7, 8) or ep.baudrate <= 0:
            raise ValueError(f"impossible serial settings in {url!r}")
        return ep
    raise ValueError(f"unknown scheme {parts.scheme!r} in {url!r} (use tcp://, rtu://, rtu+tcp://)")


class ModbusPoint(_Model):
    """One value in a device's register map."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    table: Table = Table.HOLDING
    address: Annotated[Whole, Field(ge=0, le=65535)]
    type: PointType | None = None  # default: bool for bit tables, uint16 otherwise
    order: Order | None = None  # default: the profile's or device's order
    length: Annotated[Whole, Field(ge=1, le=MAX_REGISTERS)] | None = None  # string registers
    bit: Annotated[Whole, Field(ge=0, le=15)] | None = None
    scale: Number = 1.0
    offset: Number = 0.0
    decimals: Annotated[Whole, Field(ge=0, le=12)] | None = None
    unit: Annotated[str, Field(max_length=16)] | None = None
    description: str | None = None
    # How `address` was written; validation turns it into the 0-based address (below).
    addressing: Addressing = Addressing.ZERO_BASED
    # Read by the agent's stages (drivers/options/), never by the driver.
    energy: EnergyOptions | None = None
    alarms: PointAlarms = ()
    report: ReportOptions | None = None
    write: WriteOptions | None = None  # writable over the command topic (edge_agent/commands)

    @model_validator(mode="before")
    @classmethod
    def _notation(cls, data: object) -> object:
        return _to_protocol(data, ("address",)) if isinstance(data, dict) else data

    @field_validator("type", mode="before")
    @classmethod
    def _type_name(cls, value: object) -> object:
        return point_type_name(value)  # FLOAT32 accepted; 32float refused with float32

    @field_validator("order", mode="before")
    @classmethod
    def _order_name(cls, value: object) -> object:
        return order_name(value)

    @model_validator(mode="after")
    def _fits_table(self) -> ModbusPoint:
        t = self.point_type
        if self.table.is_bits and t is not PointType.BOOL:
            raise ValueError(f"a {self.table} point must be type bool, not {t}")
        if not self.table.is_bits and t is PointType.BOOL:
            raise ValueError(
                f"type bool needs table coil or discrete; use type bit on a {self.table}"
            )
        if t is PointType.STRING and self.length is None:
            raise ValueError("a string point needs length (registers)")
        if t is not PointType.STRING and self.length is not None:
            raise ValueError(f"length applies only to string points, not {t}")
        if t is PointType.BIT and self.bit is None:
            raise ValueError("a bit point needs bit (0..15)")
        if t is not PointType.BIT and self.bit is not None:
            raise ValueError(f"bit applies only to type bit, not {t}")
        if self.scale == 0:
            raise ValueError("scale 0 would erase every value")
        numeric = t not in (PointType.BOOL, PointType.BIT, PointType.STRING)
        if not numeric and (self.scale != 1 or self.offset != 0 or self.decimals is not None):
            raise ValueError(f"scale, offset and decimals apply only to numbers, not {t}")
        if self.address + self.count > 65536:
            raise ValueError(
                f"registers {self.address}..{self.address + self.count - 1} run past 65535"
            )
        if self.write is not None:
            self._check_write(self.write, t, numeric)
        return self

    def _check_write(self, write: WriteOptions, t: PointType, numeric: bool) -> None:
        if self.table not in (Table.COIL, Table.HOLDING):
            kind = "discrete input" if self.table is Table.DISCRETE else "input register"
            raise ValueError(f"write: {kind}s are read-only (writable tables: coil, holding)")
        if t is PointType.BIT:
            # Read-modify-write of a shared register: the device may change the other bits
            # between our read and our write.
            raise ValueError("write: one bit of a register cannot be written safely; use a coil")
        if not numeric and (write.min is not None or write.max is not None):
            raise ValueError(f"write: min and max apply only to numbers, not {t}")
        if write.address is not None and write.address + self.count > 65536:
            raise ValueError(f"write: address {write.address} runs past 65535")

    @property
    def point_type(self) -> PointType:
        """The type, with the table's default applied."""
        if self.type is not None:
            return self.type
        return PointType.BOOL if self.table.is_bits else PointType.UINT16

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        return register_count(self.point_type, self.length)

    @property
    def last_address(self) -> int:
        """The last register (or bit) address the point occupies."""
        return self.address + self.count - 1


class Unreadable(_Model):
    """An address range a device refuses to read; no request may span it."""

    table: Table = Table.HOLDING
    start: Annotated[Whole, Field(ge=0, le=65535)]
    end: Annotated[Whole, Field(ge=0, le=65535)]
    addressing: Addressing = Addressing.ZERO_BASED  # how start and end were written

    @model_validator(mode="before")
    @classmethod
    def _notation(cls, data: object) -> object:
        return _to_protocol(data, ("start", "end")) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _ordered(self) -> Unreadable:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


def _span(p: ModbusPoint) -> str:
    return str(p.address) if p.count == 1 else f"{p.address}-{p.last_address}"


def span_text(p: ModbusPoint) -> str:
    """A point's addresses in decimal and hex, as engineers read both."""
    if p.count == 1:
        return f"{p.address} (0x{p.address:04X})"
    return f"{p.address}-{p.last_address} (0x{p.address:04X}-0x{p.last_address:04X})"


def _words(p: ModbusPoint) -> str:
    unit = "bit" if p.table.is_bits else "register"
    return f"{p.table} {unit}{'s' if p.count > 1 else ''} {span_text(p)}"


def _may_share(a: ModbusPoint, b: ModbusPoint) -> bool:
    """Bit points may share their register with other one-register points, but not a bit."""
    if a.count != 1 or b.count != 1 or PointType.BIT not in (a.point_type, b.point_type):
        return False
    return not (a.point_type is b.point_type and a.bit == b.bit)


def point_issues(
    points: Sequence[ModbusPoint], unreadable: Sequence[Unreadable] = ()
) -> list[PointIssue]:
    """Duplicate names, points claiming the same registers, points in unreadable ranges."""
    issues: list[PointIssue] = []
    first: dict[str, int] = {}
    for i, p in enumerate(points):
        if p.name in first:
            issues.append(PointIssue(i, f"duplicate point name {p.name!r}", other=first[p.name]))
        else:
            first[p.name] = i
    by_table: dict[Table, list[int]] = {}
    for i, p in enumerate(points):
        by_table.setdefault(p.table, []).append(i)
    for indexes in by_table.values():
        indexes.sort(key=lambda i: (points[i].address, points[i].last_address))
        for k, ia in enumerate(indexes):
            a = points[ia]
            for ib in indexes[k + 1 :]:
                b = points[ib]
                if b.address > a.last_address:
                    break
                if not _may_share(a, b):
                    verb = "overlap" if b.count > 1 else "overlaps"
                    issues.append(
                        PointIssue(
                            ib,
                            f"{_words(b)} of {b.name!r} {verb} {a.name!r} ({_span(a)})",
                            other=ia,
                        )
                    )
    for i, p in enumerate(points):
        for k, u in enumerate(unreadable):
            if u.table == p.table and p.address <= u.end and u.start <= p.last_address:
                verb = "lie" if p.count > 1 else "lies"
                issues.append(
                    PointIssue(
                        i,
                        f"{_words(p)} of {p.name!r} {verb} in unreadable range {u.start}-{u.end}",
                        unreadable=k,
                    )
                )
    return issues


def _check_points(points: tuple[ModbusPoint, ...], unreadable: tuple[Unreadable, ...]) -> None:
    issues = point_issues(points, unreadable)
    if issues:
        raise ValueError("; ".join(i.message for i in issues))


class ModbusProfile(_Model):
    """A device model's register map, shared by every device of that model."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    manufacturer: str | None = None
    model: str | None = None
    description: str | None = None
    source: str | None = None
    order: Order = Order.ABCD
    addressing: Addressing | None = None  # of its points and unreadable ranges; None: 0-based
    max_gap: Annotated[Whole, Field(ge=0, le=MAX_REGISTERS)] = 10
    max_registers: Annotated[Whole, Field(ge=1, le=MAX_REGISTERS)] = MAX_REGISTERS
    unreadable: tuple[Unreadable, ...] = ()
    report: ReportOptions | None = None  # default of the points (drivers/options/report.py)
    points: Annotated[tuple[ModbusPoint, ...], Field(min_length=1)]
    alarms: DeviceAlarms = ()  # for every device of the profile: comm_loss, rules by point

    @field_validator("order", mode="before")
    @classmethod
    def _order_name(cls, value: object) -> object:
        return order_name(value)

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: object) -> object:
        return _inherit_addressing(data)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusProfile:
        _check_points(self.points, self.unreadable)
        return self

    def notation_warnings(self) -> list[tuple[int, str]]:
        """(point index, message) for a map whose numbers look Modicon but say nothing."""
        return notation_warnings(self.points, self.addressing)


class ModbusDevice(_Model):
    """A Modbus device in a site config: where it is, which map, how often."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    driver: Literal["modbus"]
    url: str
    device_id: Annotated[Whole, Field(ge=0, le=255)] = 1
    interval_s: PollInterval = 1.0
    timeout_s: Annotated[Timeout, Field(le=60.0)] = 1.0
    backoff_max_s: BackoffCap = 30.0
    # quiet time between bus transactions
    frame_gap_s: Annotated[Seconds, Field(ge=0.0, le=1.0)] = 0.0
    profile: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None
    points: Annotated[tuple[ModbusPoint, ...], Field(min_length=1)] | None = None
    order: Order | None = None  # overrides the profile's default order
    addressing: Addressing | None = None  # of inline points and `unreadable`; None: 0-based
    max_gap: Annotated[Whole, Field(ge=0, le=MAX_REGISTERS)] | None = None
    max_registers: Annotated[Whole, Field(ge=1, le=MAX_REGISTERS)] | None = None
    # requests of one poll sent before their answers come (Modbus TCP devices that take
    # pipelined requests); 1: one at a time, what every device supports
    max_in_flight: Annotated[Whole, Field(ge=1, le=MAX_IN_FLIGHT)] = 1
    unreadable: tuple[Unreadable, ...] = ()
    report: ReportOptions | None = None  # default of the points, over the profile's
    batch: BatchOptions | None = None  # several polls per data message (schema v2)
    alarms: DeviceAlarms = ()  # added to the profile's; same name (and point) replaces it
    enabled: bool = True

    @field_validator("order", mode="before")
    @classmethod
    def _order_name(cls, value: object) -> object:
        return order_name(value)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parse_endpoint(url)
        return url

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: object) -> object:
        return _inherit_addressing(data)

    @model_validator(mode="after")
    def _one_map(self) -> ModbusDevice:
        if (self.profile is None) == (self.points is None):
            raise ValueError("give exactly one of profile (a file in profiles/) or points (inline)")
        if self.points is not None:
            _check_points(self.points, self.unreadable)
        if self.endpoint.transport != "rtu" and self.endpoint.port == 0:
            raise ValueError(f"port 0 in {self.url!r}: give the device's port (Modbus TCP: 502)")
        if self.endpoint.is_serial_line and not 1 <= self.device_id <= 247:
            raise ValueError(f"device_id {self.device_id} is outside 1..247 for a serial line")
        if self.max_in_flight > 1 and self.endpoint.transport != "tcp":
            raise ValueError(
                f"max_in_flight {self.max_in_flight} needs a tcp:// device: RTU answers carry "
                "no transaction id to match them to their requests"
            )
        return self

    @property
    def endpoint(self) -> Endpoint:
        """The parsed URL."""
        return parse_endpoint(self.url)

    def notation_warnings(self) -> list[tuple[int, str]]:
        """(point index, message) for inline points that look Modicon on a 0-based map."""
        return notation_warnings(self.points or (), self.addressing)

    def inline_profile(self) -> ModbusProfile:
        """The profile made from inline points (only when `points` is given)."""
        assert self.points is not None
        return ModbusProfile(name=self.name, points=self.points)


def notation_warnings(
    points: Sequence[ModbusPoint], addressing: Addressing | None
) -> list[tuple[int, str]]:
    """The first point of a map that says nothing of its addressing whose number looks like
    Modicon notation: one warning per map, since one such number means the whole map."""
    if addressing is not None:
        return []
    for i, p in enumerate(points):
        message = modicon_warning(p.table, p.address)
        if message is not None:
            return [(i, message)]
    return []


# Profile names go into file names; keep them path-safe.
PROFILE_NAME = re.compile(NAME_PATTERN)


def _registers(points: Sequence[ModbusPoint]) -> dict[tuple[Table, int], ModbusPoint]:
    """The registers (and bits) points read, each with its point."""
    found: dict[tuple[Table, int], ModbusPoint] = {}
    for p in points:
        for address in range(p.address, p.last_address + 1):
            found.setdefault((p.table, address), p)
    return found


def _shared_register(first: Sequence[ModbusPoint], second: Sequence[ModbusPoint]) -> str | None:
    """The first register of `second` that `first` reads too, in words, or None."""
    theirs = _registers(first)
    for p in second:
        for address in range(p.address, p.last_address + 1):
            other = theirs.get((p.table, address))
            if other is not None:
                unit = "bit" if p.table.is_bits else "register"
                return (
                    f"which also reads {p.table} {unit} {address} (0x{address:04X}) "
                    f"of {other.name!r}"
                )
    return None


def _same_reads(first: ModbusDevice, device: ModbusDevice) -> str | None:
    """Why two entries on one unit read the same thing (a copy-paste), or None.

    Entries on one unit are how one meter is polled at several rates (power every second,
    counters every minute), so they must read different registers: the same profile twice,
    or an inline register both list, is the same points twice. An entry with a profile
    beside another map is compared once the profiles are loaded (`map_clashes`).
    """
    if first.profile is not None and first.profile == device.profile:
        return f"which reads the same profile {device.profile!r}"
    if first.points is None or device.points is None:
        return None
    return _shared_register(first.points, device.points)


def _unit(device: ModbusDevice) -> tuple[str, int]:
    ep = device.endpoint
    line = f"rtu:{ep.path}" if ep.transport == "rtu" else f"{ep.transport}:{ep.host}:{ep.port}"
    return line, device.device_id


def _clash(index: int, device: ModbusDevice, first: int, other: ModbusDevice, why: str) -> str:
    also = "" if other.url == device.url else f" at {other.url!r}"
    return (
        f"device_id {device.device_id} at {device.url!r} is already used by "
        f"devices[{first}] {other.name!r}{also}, {why} (entries on one unit must "
        "read different registers)"
    )


def map_clashes(
    entries: Sequence[tuple[int, ModbusDevice, ModbusProfile]],
) -> list[tuple[int, str, str]]:
    """Entries on one unit whose loaded maps read a register in common, where one of them
    uses a profile (the pairs `address_clashes` could not compare): (index, key, message)."""
    told = {index for index, _, _ in address_clashes([(i, d) for i, d, _ in entries])}
    clashes: list[tuple[int, str, str]] = []
    seen: dict[tuple[str, int], list[tuple[int, ModbusDevice, ModbusProfile]]] = {}
    for index, device, profile in entries:
        if not device.enabled:
            continue
        if index in told:  # one error per entry is enough
            continue
        earlier = seen.setdefault(_unit(device), [])
        for first, other, other_profile in earlier:
            if (device.profile is None and other.profile is None) or (
                device.profile is not None and device.profile == other.profile
            ):
                continue  # compared (and reported) by address_clashes
            why = _shared_register(other_profile.points, profile.points)
            if why is not None:
                clashes.append((index, "device_id", _clash(index, device, first, other, why)))
                break
        earlier.append((index, device, profile))
    return clashes


def address_clashes(devices: Sequence[tuple[int, ModbusDevice]]) -> list[tuple[int, str, str]]:
    """Enabled entries on the same line (host:port or serial port) with the same device_id
    that read the same registers: (index, key to point at, message).

    Several entries on one unit are allowed (each its own interval and phase, one
    connection between them); reading the same points twice is the copy-paste mistake.
    """
    clashes: list[tuple[int, str, str]] = []
    seen: dict[tuple[str, int], list[tuple[int, ModbusDevice]]] = {}
    for index, device in devices:
        # A disabled entry is a spare (e.g. the old profile kept while trying a new one).
        if not device.enabled:
            continue
        earlier = seen.setdefault(_unit(device), [])
        for first, other in earlier:
            why = _same_reads(other, device)
            if why is not None:
                clashes.append((index, "device_id", _clash(index, device, first, other, why)))
                break
        earlier.append((index, device))
    return clashes

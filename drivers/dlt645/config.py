"""Config models of the DL/T 645-2007 driver: line URL, device, point, profile.

    - name: meter-645
      driver: dlt645
      url: rtu:///dev/ttyUSB1?baudrate=2400&parity=E   # or rtu+tcp://host:port
      address: "000000123456"
      interval_s: 5.0
      points:
        - {name: import_kwh, di: "00010000", unit: kWh}
        - {name: voltage_a, di: "02010100", unit: V}

URLs, one vocabulary with the Modbus driver so one physical line has one key:

    rtu:///dev/ttyUSB1?baudrate=2400&parity=E&stopbits=1&bytesize=8
        a serial port; the defaults are the meters' usual 2400 baud 8E1
    rtu+tcp://host:port
        the same frames, unchanged, through a transparent serial-to-Ethernet converter
        (its serial settings are configured in the converter)

A point names a DI; the built-in table (`drivers.dlt645.identifiers`) gives its format
and unit, or the point gives `format` (any DI). Points that share a DI are read with one
request; `field` picks a field of a multi-field format (1 = the time of a maximum demand).
Every model is frozen and forbids unknown keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.config_numbers import BackoffCap, Number, PollInterval, Seconds, Timeout, Whole
from drivers.dlt645.formats import DataFormat, FieldKind, parse_format
from drivers.dlt645.frame import BROADCAST_ADDRESS, MAX_PREAMBLE, address_bytes
from drivers.dlt645.identifiers import lookup, parse_di
from drivers.names import NAME_PATTERN
from drivers.options.alarms import DeviceAlarms, PointAlarms
from drivers.options.energy import EnergyOptions
from drivers.options.report import BatchOptions, ReportOptions
from drivers.options.writes import WriteOptions

DEFAULT_BAUDRATE = 2400
DEFAULT_PARITY = "E"
_PARITIES = {"N", "E", "O", "M", "S"}
_SERIAL_KEYS = ("baudrate", "parity", "stopbits", "bytesize")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class LineEndpoint:
    """A parsed DL/T 645 URL: a serial port, or serial-over-TCP through a converter."""

    transport: Literal["rtu", "rtu+tcp"]
    path: str = ""
    host: str = ""
    port: int = 0
    baudrate: int = DEFAULT_BAUDRATE
    parity: str = DEFAULT_PARITY
    stopbits: int = 1
    bytesize: int = 8

    @property
    def bus_key(self) -> str:
        """Devices with the same key share one line (the Modbus driver's keys are the same)."""
        if self.transport == "rtu":
            return f"rtu:{self.path}"
        return f"rtu+tcp:{self.host}:{self.port}"

    @property
    def char_bits(self) -> int:
        """Bits on the wire per byte: start, data, parity, stop."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    def airtime_s(self, nbytes: int) -> float:
        """Time `nbytes` take on the serial wire (0 behind a TCP converter: unknown there)."""
        if self.transport != "rtu":
            return 0.0
        return nbytes * self.char_bits / self.baudrate


def parse_endpoint(url: str) -> LineEndpoint:
    """Parse a DL/T 645 line URL; raises ValueError with a message fit for a config error."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "rtu+tcp":
        if parts.query or parts.path not in ("", "/"):
            raise ValueError(f"rtu+tcp:// takes only host and port, got {url!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r} (use 1-65535)") from exc
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        if port is None:
            raise ValueError("rtu+tcp:// needs the converter's port, e.g. rtu+tcp://host:8899")
        return LineEndpoint(transport="rtu+tcp", host=parts.hostname, port=port)
    if scheme == "rtu":
        if parts.netloc:
            raise ValueError(
                "rtu URL needs three slashes and a device path, e.g. rtu:///dev/ttyUSB0, "
                f"got {url!r}"
            )
        if not parts.path:
            raise ValueError(f"no serial device path in {url!r}")
        settings: dict[str, Any] = {}
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            value = values[-1]
            if key == "parity":
                if value.upper() not in _PARITIES:
                    raise ValueError(f"parity must be one of N, E, O, M, S, got {value!r}")
                settings[key] = value.upper()
            elif key in _SERIAL_KEYS:
                if not value.isdigit():
                    raise ValueError(f"{key} must be a whole number, got {value!r}")
                settings[key] = int(value)
            else:
                known = ", ".join(_SERIAL_KEYS)
                raise ValueError(f"unknown serial setting {key!r} (known: {known})")
        ep = LineEndpoint(transport="rtu", path=parts.path, **settings)
        if ep.stopbits not in (1, 2) or ep.bytesize not in (5, 6, 7, 8) or ep.baudrate <= 0:
            raise ValueError(f"impossible serial settings in {url!r}")
        return ep
    if scheme == "tcp":
        raise ValueError(
            f"DL/T 645 has no TCP framing of its own: use rtu+tcp://host:port for a "
            f"transparent serial-to-Ethernet converter, got {url!r}"
        )
    raise ValueError(f"unknown scheme {parts.scheme!r} in {url!r} (use rtu:// or rtu+tcp://)")


def _text_only(value: object, what: str, example: str) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"write the {what} in quotes, e.g. {example} (unquoted digits are a YAML number, "
            "and with leading zeros even an octal one)"
        )
    return value


def resolve_format(di: int, fmt: str | None) -> DataFormat:
    """The point's own format, else the table's; ValueError for an unknown DI without one."""
    if fmt is not None:
        return parse_format(fmt)
    known = lookup(di)
    if known is None:
        raise ValueError(
            f'DI {di:08X} is not in the built-in table: give its format (e.g. format: "XXXX.XX")'
        )
    return known.format


class Dlt645Point(_Model):
    """One value read by data identifier."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    di: str
    field: Annotated[Whole, Field(ge=0, le=63)] = 0
    format: str | None = None  # default: the built-in table's
    unit: Annotated[str, Field(max_length=16)] | None = None  # default: the table's
    scale: Number = 1.0
    description: str | None = None
    # Read by the agent's stages (drivers/options/), never by the driver.
    energy: EnergyOptions | None = None
    alarms: PointAlarms = ()
    report: ReportOptions | None = None
    # Refused with the reason: a DL/T 645 write (time sync, demand reset, parameters) needs the
    # meter's password and operator code, and changes what the utility bills on.
    write: WriteOptions | None = None

    @field_validator("di", mode="before")
    @classmethod
    def _di_text(cls, value: object) -> object:
        return _text_only(value, "DI", '"00010000"')

    @field_validator("di")
    @classmethod
    def _valid_di(cls, value: str) -> str:
        return f"{parse_di(value):08X}"

    @model_validator(mode="after")
    def _fits_format(self) -> Dlt645Point:
        if self.write is not None:
            raise ValueError(
                "write: DL/T 645 points cannot be written: a meter's writes need its password "
                "and operator code and change billing data (not supported)"
            )
        fmt = self.data_format
        if self.field >= len(fmt.fields):
            raise ValueError(
                f"field {self.field} does not exist: {fmt.text} has {len(fmt.fields)} "
                f"field{'s' if len(fmt.fields) > 1 else ''} (0..{len(fmt.fields) - 1})"
            )
        if self.scale == 0:
            raise ValueError("scale 0 would erase every value")
        kind = fmt.fields[self.field].kind
        if self.scale != 1 and kind not in (FieldKind.NUMBER, FieldKind.HEX):
            raise ValueError(f"scale applies only to numbers, not to {fmt.fields[self.field].text}")
        known = lookup(self.di_code)
        if (
            known is not None
            and self.format is None
            and self.unit is not None
            and self.unit != known.unit
            and kind is FieldKind.NUMBER
            and self.scale == 1
        ):
            raise ValueError(
                f"DI {self.di} ({known.description}) reads {known.unit or 'no unit'}, not "
                f"{self.unit!r}: leave unit out, or give a scale that converts to it"
            )
        return self

    @property
    def di_code(self) -> int:
        """The DI as a number."""
        return int(self.di, 16)

    @property
    def data_format(self) -> DataFormat:
        """The format this point's DI is read with."""
        return resolve_format(self.di_code, self.format)

    @property
    def effective_unit(self) -> str | None:
        """The unit carried in messages: the point's, else the table's (for numbers)."""
        if self.unit is not None:
            return self.unit
        known = lookup(self.di_code)
        if known is None or self.format is not None:
            return None
        if known.format.fields[self.field].kind is FieldKind.TIME:
            return None  # the time of a maximum demand has no unit
        return known.unit


@dataclass(frozen=True, slots=True)
class PointIssue:
    """A problem of one point in a list; `other` is the point it clashes with."""

    index: int
    message: str
    other: int | None = None


def point_issues(points: Sequence[Dlt645Point]) -> list[PointIssue]:
    """Duplicate names; points of one DI that disagree on its format."""
    issues: list[PointIssue] = []
    names: dict[str, int] = {}
    formats: dict[str, int] = {}
    for i, p in enumerate(points):
        if p.name in names:
            issues.append(PointIssue(i, f"duplicate point name {p.name!r}", other=names[p.name]))
        else:
            names[p.name] = i
        first = formats.setdefault(p.di, i)
        other = points[first]
        if first != i and other.data_format.text != p.data_format.text:
            issues.append(
                PointIssue(
                    i,
                    f"DI {p.di} of {p.name!r} is read as {p.data_format.text}, but "
                    f"{other.name!r} reads it as {other.data_format.text}",
                    other=first,
                )
            )
    return issues


def _check_points(points: Sequence[Dlt645Point]) -> None:
    issues = point_issues(points)
    if issues:
        raise ValueError("; ".join(i.message for i in issues))


class Dlt645Profile(_Model):
    """A meter model's points, shared by every meter of that model."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    manufacturer: str | None = None
    model: str | None = None
    description: str | None = None
    source: str | None = None
    points: Annotated[tuple[Dlt645Point, ...], Field(min_length=1)]
    report: ReportOptions | None = None  # default of the points (drivers/options/report.py)
    alarms: DeviceAlarms = ()  # for every meter of the profile: comm_loss, rules by point

    @model_validator(mode="after")
    def _consistent(self) -> Dlt645Profile:
        _check_points(self.points)
        return self


class Dlt645Device(_Model):
    """A DL/T 645-2007 meter in a site config: which line, which address, what to read."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    driver: Literal["dlt645"]
    url: str
    address: str
    interval_s: PollInterval = 5.0  # 2400 baud: ~0.2 s per DI
    timeout_s: Annotated[Timeout, Field(le=60.0)] = 1.0
    backoff_max_s: BackoffCap = 30.0
    frame_gap_s: Annotated[Seconds, Field(ge=0.0, le=1.0)] = 0.0  # quiet time between transactions
    preamble: Annotated[Whole, Field(ge=0, le=MAX_PREAMBLE)] = 4  # FEH wake-up bytes
    profile: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None
    points: tuple[Dlt645Point, ...] | None = None
    report: ReportOptions | None = None  # default of the points, over the profile's
    batch: BatchOptions | None = None  # several polls per data message (schema v2)
    alarms: DeviceAlarms = ()  # added to the profile's; same name (and point) replaces it
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parse_endpoint(url)
        return url

    @field_validator("address", mode="before")
    @classmethod
    def _address_text(cls, value: object) -> object:
        return _text_only(value, "address", '"000000123456"')

    @field_validator("address")
    @classmethod
    def _valid_address(cls, address: str) -> str:
        address_bytes(address)  # 12 characters: digit pairs or AA
        address = address.upper()
        if address == BROADCAST_ADDRESS:
            raise ValueError(
                "999999999999 is the broadcast address, which no meter answers; give the "
                "meter's address (or AAAAAAAAAAAA when it is the only meter on its line)"
            )
        groups = [address[i : i + 2] for i in range(0, 12, 2)]
        wild = [g == "AA" for g in groups]
        if any(wild) and wild != sorted(wild, reverse=True):
            raise ValueError(
                f"address {address!r}: AA wildcards may only fill the high (leading) bytes, "
                "as in AAAAAA123456"
            )
        return address

    @model_validator(mode="after")
    def _one_map(self) -> Dlt645Device:
        if (self.profile is None) == (self.points is None):
            raise ValueError("give exactly one of profile (a file in profiles/) or points (inline)")
        if self.points is not None:
            if not self.points:
                raise ValueError("points: a meter needs at least one point")
            _check_points(self.points)
        if self.endpoint.transport == "rtu+tcp" and self.endpoint.port == 0:
            raise ValueError(f"port 0 in {self.url!r}: give the converter's port")
        return self

    @property
    def endpoint(self) -> LineEndpoint:
        """The parsed URL."""
        return parse_endpoint(self.url)

    @property
    def wire_address(self) -> bytes:
        """The 6 address bytes as sent (lowest first; AA for wildcards)."""
        return address_bytes(self.address)

    def inline_profile(self) -> Dlt645Profile:
        """The profile made from inline points (only when `points` is given)."""
        assert self.points is not None
        return Dlt645Profile(name=self.name, points=self.points)

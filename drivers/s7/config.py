"""Config models of the S7 driver: a PLC reached over ISO-on-TCP, and its points.

    - name: press-plc
      driver: s7
      url: s7://192.168.1.20         # port 102 unless given
      rack: 0
      slot: 1
      interval_s: 1.0
      points:
        - {name: oil_temp, address: DB1.DBD0, type: REAL, unit: degC}
        - {name: running, address: DB1.DBX10.0}

The connection is addressed by rack and slot (defaults by `family`: an S7-300 CPU sits in
slot 2, S7-1200/1500 and S7-200 SMART in slot 1, an S7-400 usually in slot 3) or by
`remote_tsap` ("03.01") for CPUs and CPs configured by TSAP. `pdu_size` is what the driver
asks for; the plan is made for it, and made again for less if the CPU grants less.
Addresses and types: drivers/s7/address.py. Every model is frozen and forbids unknown keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.config_numbers import BackoffCap, Number, PollInterval, Timeout, Whole
from drivers.names import NAME_PATTERN
from drivers.options.alarms import DeviceAlarms, PointAlarms
from drivers.options.energy import EnergyOptions
from drivers.options.report import BatchOptions, ReportOptions
from drivers.options.writes import WriteOptions
from drivers.s7.address import (
    Address,
    Area,
    DataType,
    S7Type,
    check_fits,
    default_type,
    parse_address,
    parse_type,
)

DEFAULT_PORT = 102
MIN_PDU, MAX_PDU = 240, 960  # S7-300 and S7-1200 grant 240, S7-1500 up to 960
Family = Literal["s7-200smart", "s7-300", "s7-400", "s7-1200", "s7-1500", "logo"]
DEFAULT_SLOTS: dict[str, int] = {
    "s7-200smart": 1,
    "s7-300": 2,
    "s7-400": 3,
    "s7-1200": 1,
    "s7-1500": 1,
    "logo": 1,
}
CONNECTION_TYPES = {"pg": 1, "op": 2, "basic": 3}
_TSAP = re.compile(r"^([0-9A-Fa-f]{2})\.?([0-9A-Fa-f]{2})$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed s7:// URL."""

    host: str
    port: int = DEFAULT_PORT


def parse_endpoint(url: str) -> Endpoint:
    """Parse s7://host[:port]; ValueError with a message fit for a config error."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s7":
        raise ValueError(f"unknown scheme {parts.scheme!r} in {url!r} (use s7://host[:port])")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"s7:// takes only host and port, got {url!r} (rack and slot are keys)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r} (use 1-65535)") from exc
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if port == 0:
        raise ValueError(f"port 0 in {url!r}: leave it out for 102")
    return Endpoint(parts.hostname, DEFAULT_PORT if port is None else port)


def parse_tsap(text: str) -> int:
    """A TSAP written as two hex bytes, "03.01" or "0301"."""
    m = _TSAP.match(text.strip())
    if not m:
        raise ValueError(f'TSAP {text!r}: write two hex bytes, e.g. "03.01"')
    return int(m.group(1), 16) << 8 | int(m.group(2), 16)


class S7Point(_Model):
    """One variable of the PLC, by absolute address."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    address: str
    type: str | None = None  # default by the address's width: BOOL, BYTE, WORD, DWORD
    unit: Annotated[str, Field(max_length=16)] | None = None
    scale: Number = 1.0
    description: str | None = None
    # Read by the agent's stages (drivers/options/), never by the driver.
    energy: EnergyOptions | None = None
    alarms: PointAlarms = ()
    report: ReportOptions | None = None
    write: WriteOptions | None = None  # writable over the command topic (edge_agent/commands)

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return parse_address(value).text()

    @field_validator("type")
    @classmethod
    def _valid_type(cls, value: str | None) -> str | None:
        return None if value is None else parse_type(value).text()

    @model_validator(mode="after")
    def _fits(self) -> S7Point:
        check_fits(self.location, self.data_type)
        if self.scale == 0:
            raise ValueError("scale 0 would erase every value")
        numeric = self.data_type.kind not in (S7Type.BOOL, S7Type.STRING, S7Type.DATE_AND_TIME)
        if self.scale != 1 and not numeric:
            raise ValueError(f"scale applies only to numbers, not to {self.data_type.text()}")
        if self.write is not None:
            if self.location.area is Area.I:
                raise ValueError("write: inputs (I) are read-only; write outputs (Q), M or a DB")
            if self.write.address is not None:
                raise ValueError("write: address is for Modbus set-points; give the S7 address")
            if not numeric and (self.write.min is not None or self.write.max is not None):
                raise ValueError(f"write: min and max are for numbers, not {self.data_type.text()}")
        return self

    @property
    def location(self) -> Address:
        """The parsed address."""
        return parse_address(self.address)

    @property
    def data_type(self) -> DataType:
        """The point's type, or the address's default."""
        return default_type(self.location) if self.type is None else parse_type(self.type)


class S7Device(_Model):
    """A Siemens S7 PLC in a site config."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    driver: Literal["s7"]
    url: str
    family: Family | None = None
    rack: Annotated[Whole, Field(ge=0, le=7)] = 0
    slot: Annotated[Whole, Field(ge=0, le=31)] | None = None  # default by family, else 1
    connection_type: Literal["pg", "op", "basic"] = "pg"
    remote_tsap: str | None = None  # instead of rack/slot
    local_tsap: str = "01.00"
    pdu_size: Annotated[Whole, Field(ge=MIN_PDU, le=MAX_PDU)] = MIN_PDU
    max_gap: Annotated[Whole, Field(ge=0, le=256)] = 16  # bytes read to join two ranges
    interval_s: PollInterval = 1.0
    timeout_s: Annotated[Timeout, Field(le=60.0)] = 2.0
    backoff_max_s: BackoffCap = 30.0
    points: Annotated[tuple[S7Point, ...], Field(min_length=1)]
    report: ReportOptions | None = None  # default of the points
    batch: BatchOptions | None = None  # several polls per data message (schema v2)
    alarms: DeviceAlarms = ()
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parse_endpoint(url)
        return url

    @field_validator("remote_tsap", "local_tsap")
    @classmethod
    def _valid_tsap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = parse_tsap(value)
        return f"{code >> 8:02X}.{code & 0xFF:02X}"

    @model_validator(mode="after")
    def _consistent(self) -> S7Device:
        if self.remote_tsap is not None and (
            self.slot is not None or "rack" in self.model_fields_set
        ):
            raise ValueError("give either rack/slot or remote_tsap, not both")
        names: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.name in names:
                raise ValueError(f"points[{i}]: duplicate point name {p.name!r}")
            names[p.name] = i
        return self

    @property
    def endpoint(self) -> Endpoint:
        """The parsed URL."""
        return parse_endpoint(self.url)

    @property
    def effective_slot(self) -> int:
        """The slot given, else the family's, else 1."""
        if self.slot is not None:
            return self.slot
        return DEFAULT_SLOTS.get(self.family or "", 1)

    @property
    def remote_tsap_code(self) -> int:
        """The called TSAP: given, or connection type, rack and slot."""
        if self.remote_tsap is not None:
            return parse_tsap(self.remote_tsap)
        kind = CONNECTION_TYPES[self.connection_type]
        return kind << 8 | self.rack << 5 | self.effective_slot

    @property
    def local_tsap_code(self) -> int:
        """The calling TSAP."""
        return parse_tsap(self.local_tsap)

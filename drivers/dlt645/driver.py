"""DL/T 645-2007 driver: reads a meter's data identifiers over a (possibly shared) line.

The plan is compiled in __init__ (one request per distinct DI, in the order the points
first name them) and no port is opened there, so `edge-agent check` and `plan` work
offline. What becomes of each answer:

    value bytes            every point of that DI gets its field; a field that does not
                           decode (invalid BCD, short, a time never set) marks only that
                           point bad with the reason
    error answer (D1H)     the DI's points are bad: "error 02 (no requested data)"
    bad checksum, wrong DI the DI's points are bad with that reason; the poll goes on
    no answer              DeviceUnreachable("timeout") at once: a silent meter costs the
                           bus one timeout per attempt, and the poller backs it off

A poll in which no request got a usable answer (every one garbled) raises
DeviceUnreachable too, so a meter that only ever sends bad checksums is backed off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from drivers.dlt645.config import Dlt645Device, Dlt645Profile
from drivers.dlt645.formats import DataFormat, DecodeError, decode
from drivers.dlt645.identifiers import lookup
from drivers.dlt645.line import BadAnswer, Dlt645Line, MeterError
from drivers.reading import DeviceUnreachable, PointSpec, Poll, Quality, Value


@dataclass(frozen=True, slots=True)
class Target:
    """Where a field of an answer goes: the point's index, the field, the scale."""

    index: int
    field: int
    scale: float


@dataclass(frozen=True, slots=True)
class Request:
    """One read of one data identifier and the points it serves."""

    di: int
    format: DataFormat
    targets: tuple[Target, ...]

    @property
    def di_text(self) -> str:
        """The DI as printed in the standard."""
        return f"{self.di:08X}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one poll of a meter reads."""

    points: tuple[PointSpec, ...]
    requests: tuple[Request, ...]

    def describe(self) -> list[str]:
        """One line per request, for `edge-agent plan`: DI, format, meaning, points."""
        out = []
        for req in self.requests:
            known = lookup(req.di)
            what = known.description if known is not None else "(format from the config)"
            names = ", ".join(
                self.points[t.index].name + (f"[{t.field}]" if t.field else "") for t in req.targets
            )
            out.append(f"DI {req.di_text} {req.format.text:<20} {what} -> {names}")
        return out


def build_plan(profile: Dlt645Profile) -> Plan:
    """One request per distinct DI, in the order the points first name it."""
    specs = tuple(PointSpec(p.name, p.effective_unit) for p in profile.points)
    grouped: dict[int, list[Target]] = {}
    formats: dict[int, DataFormat] = {}
    for index, p in enumerate(profile.points):
        grouped.setdefault(p.di_code, []).append(Target(index, p.field, p.scale))
        formats.setdefault(p.di_code, p.data_format)
    requests = tuple(Request(di, formats[di], tuple(t)) for di, t in grouped.items())
    return Plan(specs, requests)


class Dlt645Driver:
    """One DL/T 645 meter: a plan plus the line it sits on."""

    protocol = "dlt645"

    def __init__(
        self,
        device: Dlt645Device,
        profile: Dlt645Profile | None = None,
        *,
        line: Dlt645Line | None = None,
    ) -> None:
        self.name = device.name
        self.device = device
        self.plan = build_plan(profile or device.inline_profile())
        self.points: tuple[PointSpec, ...] = self.plan.points
        self.address = device.wire_address
        self.timeout_s = device.timeout_s
        self.preamble = device.preamble
        self.line = line or Dlt645Line(
            device.endpoint, name=device.name, frame_gap_s=device.frame_gap_s
        )

    async def connect(self) -> None:
        """Open the line if needed."""
        await self.line.connect(timeout_s=self.timeout_s)

    async def read(self) -> Poll:
        """One poll: every request of the plan, in order."""
        n = len(self.points)
        values: list[Value] = [None] * n
        issues: dict[int, tuple[Quality, str]] = {}
        usable = False
        garbled: str | None = None
        for req in self.plan.requests:
            result = await self.line.read_data(
                self.address, req.di, timeout_s=self.timeout_s, preamble=self.preamble
            )
            if isinstance(result, bytes):
                usable = True
                fields = decode(req.format, result)
                for t in req.targets:
                    value = fields[t.field]
                    if isinstance(value, DecodeError):
                        issues[t.index] = (Quality.BAD, str(value))
                    elif t.scale != 1 and isinstance(value, int | float):
                        values[t.index] = value * t.scale
                    else:
                        values[t.index] = value
                continue
            if isinstance(result, MeterError):
                usable = True
                reason = result.reason
            else:
                assert isinstance(result, BadAnswer)
                reason = result.reason
                garbled = garbled or reason
            for t in req.targets:
                issues[t.index] = (Quality.BAD, reason)
        if not usable and garbled is not None:
            raise DeviceUnreachable(self.name, garbled)
        return Poll(self.name, time.time_ns(), self.points, values, issues)

    async def read_address(self) -> str:
        """The address of the only meter on this line (the broadcast address query)."""
        return await self.line.read_address(timeout_s=self.timeout_s, preamble=self.preamble)

    async def close(self) -> None:
        """Close the line; idempotent."""
        self.line.close()

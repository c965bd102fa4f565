"""The reading model every driver produces and every stage and sink consumes.

A driver answers one poll with one `Poll`: the device's values in the order of its
`PointSpec` tuple (fixed at plan time), plus the few points whose quality is not good.
Keeping a poll columnar means the hot path allocates one list per poll, not one object
per point; `Poll.readings()` gives the per-point `Reading` view for code that wants it.

A driver whose protocol stamps each value at its source (OPC UA's SourceTimestamp) adds
`point_ts`, a sparse map of point index -> ns since the epoch; every other driver leaves it
None, and the poll's `ts_ns` (when the answer arrived) is the time of all its points.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Value = float | int | bool | str | None


class Quality(enum.StrEnum):
    """OPC UA's three quality classes; the reason travels beside it."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class PointSpec:
    """What a sink needs to know of a point, fixed at plan time."""

    name: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One point's value at one time."""

    device: str
    point: str
    value: Value
    unit: str | None
    quality: Quality
    ts_ns: int
    reason: str | None = None


@dataclass(slots=True)
class Poll:
    """One poll of one device: values aligned with `points`, exceptions in `issues`.

    `issues` maps a point index to (quality, reason) for every point that is not good;
    a BAD point's value is None. `point_ts` maps a point index to the time (ns since the
    epoch) its source stamped the value, for the points that have one (never a BAD point;
    the OPC UA driver gives it in the poll that first holds the value); None when the
    driver has no per-point times. The payload carries a point's time only where it
    differs from the poll's; the stages (alarms, energy) use `ts_ns`.
    """

    device: str
    ts_ns: int
    points: tuple[PointSpec, ...]
    values: list[Value]
    issues: dict[int, tuple[Quality, str]] = field(default_factory=dict)
    point_ts: dict[int, int] | None = None

    def readings(self) -> Iterator[Reading]:
        """Yield one `Reading` per point, in plan order, at the point's own time if any."""
        issues = self.issues
        stamps = self.point_ts or {}
        ts_ns = self.ts_ns
        for i, (spec, value) in enumerate(zip(self.points, self.values, strict=True)):
            quality, reason = issues.get(i, (Quality.GOOD, None))
            at = stamps.get(i, ts_ns)
            yield Reading(self.device, spec.name, value, spec.unit, quality, at, reason)

    @classmethod
    def all_bad(
        cls, device: str, points: tuple[PointSpec, ...], *, ts_ns: int, reason: str
    ) -> Poll:
        """A poll in which no point could be read, e.g. after a timeout."""
        issue = (Quality.BAD, reason)
        return cls(
            device, ts_ns, points, [None] * len(points), dict.fromkeys(range(len(points)), issue)
        )


class DeviceUnreachable(Exception):
    """The device did not answer at all (timeout, refused or dropped connection)."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


class Driver(Protocol):
    """One connection to one device."""

    name: str
    points: tuple[PointSpec, ...]

    async def connect(self) -> None:
        """Open the connection; raise DeviceUnreachable when the device cannot be reached."""

    async def read(self) -> Poll:
        """Execute the plan compiled in __init__; raise DeviceUnreachable on no answer."""

    async def close(self) -> None:
        """Close the connection; idempotent."""


class Sink(Protocol):
    """Where polls leave the gateway."""

    async def open(self) -> None:
        """Connect; may return before the remote end is reachable."""

    async def write(self, batch: Sequence[Poll]) -> None:
        """Accept polls for delivery; raise SinkUnavailable to make the caller retry."""

    async def close(self) -> None:
        """Flush what can be flushed within the grace period and close; idempotent."""


class SinkUnavailable(Exception):
    """The sink cannot accept data right now; the caller keeps it and retries."""

"""Interval energy aligned to the site's wall clock, split by time-of-use period.

    Minute (energy_counter)  ──►  IntervalAccumulator  ──►  Interval every `interval_min`
                                    │ local time of each minute (site time zone)
                                    └ TOU period of each minute (tariff calendar)

An interval is [start, start + interval_min) in local time (00:00, 00:15, ... for 15 min);
its energy is the sum of its minutes, i.e. the counter interpolated at both ends, so
consecutive intervals add up to the counter's rise exactly. Completeness is the share of
the polls expected in the interval (interval / poll period) whose counter reading was good;
an interval the agent saw only part of (it started inside it) is flagged `partial`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.energy.counter import MINUTE_MS, Minute
from edge_agent.energy.tariffs import PERIODS, DayTable

COMPLETE_SHARE = 0.9  # 数据完整: at least 90 % of expected values (energy.md 1.4)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
DAY_MS = 86_400_000


class WallClock:
    """Local date, minute of day and interval start of a UTC minute, in one time zone."""

    def __init__(self, timezone: str, interval_min: int) -> None:
        self.zone = zoneinfo.ZoneInfo(timezone)
        self.interval_ms = interval_min * MINUTE_MS
        self._offsets: dict[int, int] = {}

    def offset_ms(self, utc_ms: int) -> int:
        """UTC offset in force at `utc_ms` (zones change offset on quarter hours)."""
        key = utc_ms // 900_000
        offset = self._offsets.get(key)
        if offset is None:
            delta = dt.datetime.fromtimestamp(key * 900, self.zone).utcoffset()
            assert delta is not None  # an aware datetime always has one
            offset = int(delta.total_seconds()) * 1000
            if len(self._offsets) > 10_000:
                self._offsets.clear()
            self._offsets[key] = offset
        return offset

    def local(self, utc_ms: int) -> tuple[dt.date, int]:
        """(local date, minute of the local day) of an instant."""
        local_ms = utc_ms + self.offset_ms(utc_ms)
        day = local_ms // DAY_MS
        return dt.date.fromordinal(_EPOCH_ORDINAL + day), (local_ms - day * DAY_MS) // MINUTE_MS

    def interval_start(self, utc_ms: int) -> int:
        """UTC ms of the start of the local interval holding `utc_ms`."""
        offset = self.offset_ms(utc_ms)
        local_ms = utc_ms + offset
        return local_ms - local_ms % self.interval_ms - offset

    def midnight(self, day: dt.date) -> int:
        """UTC ms of local 00:00 of `day`."""
        when = dt.datetime.combine(day, dt.time(), self.zone)
        return int(when.timestamp() * 1000)

    def iso(self, utc_ms: int) -> str:
        """Local ISO 8601 with offset, for messages and reports."""
        return dt.datetime.fromtimestamp(utc_ms / 1000, self.zone).isoformat()


@dataclass(slots=True)
class Interval:
    """Energy of one counter (or hierarchy node) in one local interval."""

    start_ms: int
    end_ms: int
    day: dt.date  # local date of the start
    energy: float
    periods: dict[str, float] | None  # by TOU period; None without a calendar
    tariff: str  # calendar version used ("" without one)
    readings: float  # good readings (a node: its completeness, with expected 1)
    expected: float
    flags: set[str] = field(default_factory=set)  # gap, reset, wrap, partial

    def __reduce__(self) -> tuple[type[Interval], tuple[Any, ...]]:
        # Positional fields: a slotted dataclass's default pickling calls fields() per
        # object, 40 % of saving the energy state (energy_state.py).
        return (
            Interval,
            (
                self.start_ms,
                self.end_ms,
                self.day,
                self.energy,
                self.periods,
                self.tariff,
                self.readings,
                self.expected,
                self.flags,
            ),
        )

    @property
    def completeness(self) -> float:
        """Share of expected readings that arrived (at most 1)."""
        return min(1.0, self.readings / self.expected) if self.expected > 0 else 0.0

    def quality(self) -> tuple[str, str | None]:
        """good, or uncertain with the reason an auditor should see."""
        reasons = []
        if "reset" in self.flags:
            reasons.append("meter reset or replacement: part not counted")
        if "partial" in self.flags:
            reasons.append("interval only partly observed")
        if self.completeness < COMPLETE_SHARE:
            reasons.append(f"completeness {self.completeness:.2f} below {COMPLETE_SHARE}")
        if not reasons:
            return "good", None
        if "gap" in self.flags:
            reasons.append("interpolated across missed polls")
        return "uncertain", "; ".join(reasons)


class IntervalAccumulator:
    """Sums one counter's minutes into local intervals with their TOU split."""

    __slots__ = (
        "_current",
        "_last_minute",
        "_periods",
        "clock",
        "expected",
        "tariffs",
    )

    def __init__(self, clock: WallClock, tariffs: DayTable, *, poll_interval_s: float) -> None:
        self.clock = clock
        self.tariffs = tariffs
        self.expected = clock.interval_ms / 1000 / poll_interval_s
        self._current: Interval | None = None
        self._periods: list[float] = [0.0] * len(PERIODS)
        self._last_minute: int | None = None

    def add(self, minute: Minute) -> Interval | None:
        """Take the next minute; the interval it completes, if any."""
        clock = self.clock
        start = clock.interval_start(minute.start_ms)
        current = self._current
        if current is None or current.start_ms != start:
            # Only the first interval can start late: minutes come contiguous after that.
            day, _ = clock.local(start)
            table, label = self.tariffs.of(day)
            current = Interval(
                start, start + clock.interval_ms, day, 0.0, None, label, 0, self.expected
            )
            if minute.start_ms != start:
                current.flags.add("partial")
            if table is not None:
                current.periods = {}
            self._periods = [0.0] * len(PERIODS)
            self._current = current
        current.energy += minute.energy
        current.readings += minute.readings
        if minute.gap:
            current.flags.add("gap")
        if minute.reset:
            current.flags.add("reset")
        if minute.wrap:
            current.flags.add("wrap")
        if current.periods is not None:
            day, minute_of_day = clock.local(minute.start_ms)
            table, _ = self.tariffs.of(day)
            if table is not None:
                self._periods[table[minute_of_day]] += minute.energy
        if minute.start_ms + MINUTE_MS < current.end_ms:
            return None
        if current.periods is not None:
            current.periods = dict(zip(PERIODS, self._periods, strict=True))
        self._current = None
        return current


def sum_periods(
    into: dict[str, float] | None, add: Mapping[str, float] | None
) -> dict[str, float] | None:
    """Period sums added (None stays None: no calendar)."""
    if into is None or add is None:
        return into if add is None else dict(add)
    for k, v in add.items():
        into[k] = into.get(k, 0.0) + v
    return into

"""Daily and monthly totals aligned to 00:00 local time, built from intervals.

A day closes when its last interval does (the first poll after local midnight), or, if
that interval never came, when an interval of a later day arrives; a month closes with
its last day. Completeness of a total is readings over the readings expected in the whole
day or month (intervals that never arrived count as none), so an agent that ran half a
day reports 0.5, not the completeness of the half it saw.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.energy.intervals import Interval, WallClock, sum_periods


@dataclass(slots=True)
class Total:
    """Energy of one counter (or node) over one local day or month."""

    span: Literal["day", "month"]
    first_day: dt.date  # the day, or the 1st of the month
    start_ms: int
    end_ms: int
    energy: float = 0.0
    periods: dict[str, float] | None = None
    tariffs: list[str] = field(default_factory=list)
    readings: float = 0.0
    expected: float = 0.0  # readings expected over the whole span
    intervals: int = 0
    expected_intervals: int = 0
    flags: set[str] = field(default_factory=set)

    def __reduce__(self) -> tuple[type[Total], tuple[Any, ...]]:
        # Positional fields: a slotted dataclass's default pickling calls fields() per
        # object, 40 % of saving the energy state (energy_state.py).
        return (
            Total,
            (
                self.span,
                self.first_day,
                self.start_ms,
                self.end_ms,
                self.energy,
                self.periods,
                self.tariffs,
                self.readings,
                self.expected,
                self.intervals,
                self.expected_intervals,
                self.flags,
            ),
        )

    @property
    def label(self) -> str:
        """2026-11-01 for a day, 2026-11 for a month."""
        return str(self.first_day) if self.span == "day" else self.first_day.strftime("%Y-%m")

    @property
    def hours(self) -> float:
        """Length of the span."""
        return (self.end_ms - self.start_ms) / 3_600_000

    @property
    def completeness(self) -> float:
        """Share of the span's expected readings that arrived."""
        return min(1.0, self.readings / self.expected) if self.expected > 0 else 0.0

    def add(self, interval: Interval) -> None:
        """Count one interval in."""
        self.energy += interval.energy
        self.periods = sum_periods(self.periods, interval.periods)
        if interval.tariff and interval.tariff not in self.tariffs:
            self.tariffs.append(interval.tariff)
        self.readings += interval.readings
        self.intervals += 1
        self.flags |= interval.flags


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


class TotalsAccumulator:
    """Turns one series' intervals into day and month totals."""

    __slots__ = ("_day", "_month", "clock", "per_interval")

    def __init__(self, clock: WallClock, *, expected_per_interval: float) -> None:
        self.clock = clock
        self.per_interval = expected_per_interval
        self._day: Total | None = None
        self._month: Total | None = None

    def _open(self, span: Literal["day", "month"], first: dt.date) -> Total:
        last = first + dt.timedelta(days=1) if span == "day" else _next_month(first)
        start, end = self.clock.midnight(first), self.clock.midnight(last)
        n = round((end - start) / self.clock.interval_ms)
        return Total(span, first, start, end, expected=n * self.per_interval, expected_intervals=n)

    def add(self, interval: Interval) -> list[Total]:
        """Take one interval; the totals it closes (a day, then maybe its month)."""
        closed: list[Total] = []
        day = interval.day
        if self._day is not None and self._day.first_day != day:
            closed.extend(self._close_day())
        if self._month is not None and (
            self._month.first_day.year,
            self._month.first_day.month,
        ) != (day.year, day.month):
            closed.append(self._month)
            self._month = None
        if self._day is None:
            self._day = self._open("day", day)
        if self._month is None:
            self._month = self._open("month", day.replace(day=1))
        self._day.add(interval)
        self._month.add(interval)
        if interval.end_ms >= self._day.end_ms:
            closed.extend(self._close_day())
        return closed

    def _close_day(self) -> list[Total]:
        day, self._day = self._day, None
        assert day is not None
        closed = [day]
        month = self._month
        if month is not None and day.end_ms >= month.end_ms:
            closed.append(month)
            self._month = None
        return closed

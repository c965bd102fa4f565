"""The period of an energy report: `--from`/`--to` read as local time of `energy.timezone`.

    2026-12-01                 local 00:00 of that day
    2026-12-01T08:00[:SS]      local wall time
    2026-12-01T00:00+00:00     an instant with its offset (or Z)

Bounds are aligned outward to the energy intervals (a report is made of whole intervals),
and a period that reaches past now is reported up to the last closed interval (`upto`),
so a day in progress is a partial day, not a day of zero consumption.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from edge_agent.energy.intervals import WallClock

FORMATS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time of energy.timezone, or with an offset)"


def parse_bound(text: str, clock: WallClock) -> int:
    """UTC ms of a `--from`/`--to` value; ValueError naming the text and the formats."""
    try:
        if len(text) == 10:
            return clock.midnight(dt.date.fromisoformat(text))
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time: {FORMATS}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=clock.zone)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Period:
    """[start_ms, end_ms) as asked (interval-aligned); data can exist up to `upto_ms`."""

    start_ms: int
    end_ms: int
    upto_ms: int

    @classmethod
    def of(cls, start_ms: int, end_ms: int, clock: WallClock, *, now_ms: int) -> Period:
        """Aligned outward to intervals, and cut at the last interval closed by `now_ms`."""
        start = clock.interval_start(start_ms)
        end = clock.interval_start(end_ms)
        if end < end_ms:
            end += clock.interval_ms
        if end <= start:
            raise ValueError("the end of the period is not after its start")
        return cls(start, end, max(start, min(end, clock.interval_start(now_ms))))

    @property
    def partial(self) -> bool:
        """The period is not over yet."""
        return self.upto_ms < self.end_ms

    @property
    def hours(self) -> float:
        """Hours with data possible (start to upto)."""
        return (self.upto_ms - self.start_ms) / 3_600_000

    def text(self, clock: WallClock, *, upto: bool = False) -> str:
        """'2026-12-01 00:00 to 2026-12-02 00:00 Asia/Shanghai (UTC+08:00)'."""
        end = self.upto_ms if upto else self.end_ms
        offsets = dict.fromkeys(_offset(clock, t) for t in (self.start_ms, end))
        return (
            f"{_local(clock, self.start_ms)} to {_local(clock, end)} {clock.zone.key} "
            f"({', '.join(offsets)})"
        )

    def days(self, clock: WallClock) -> list[tuple[dt.date, int, int]]:
        """(local date, UTC ms of its 00:00, of the next 00:00) of every day up to `upto`."""
        if self.upto_ms <= self.start_ms:
            return []
        day, _ = clock.local(self.start_ms)
        last, _ = clock.local(self.upto_ms - 1)
        out = []
        while day <= last:
            nxt = day + dt.timedelta(days=1)
            out.append((day, clock.midnight(day), clock.midnight(nxt)))
            day = nxt
        return out


def _local(clock: WallClock, utc_ms: int) -> str:
    return dt.datetime.fromtimestamp(utc_ms / 1000, clock.zone).strftime("%Y-%m-%d %H:%M")


def _offset(clock: WallClock, utc_ms: int) -> str:
    minutes = clock.offset_ms(utc_ms) // 60_000
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

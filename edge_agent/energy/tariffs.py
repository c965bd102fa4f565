"""Time-of-use (分时电价) calendars as data: which period (尖峰/峰/平/谷) each minute is in.

A calendar file (YAML) holds dated versions; each version holds seasons by month, each
season a list of periods that together cover the 24 hours exactly once:

    name: example-tou
    region: AH
    source: "document number of the notice the hours come from"
    versions:
      - valid_from: 2024-01-01
        seasons:
          - name: summer
            months: [7, 8, 9]
            periods:
              - {period: valley, from: "23:00", to: "08:00"}    # crosses midnight
              - {period: flat,   from: "08:00", to: "10:00"}
              - {period: sharp,  from: "20:00", to: "22:00"}
              ...

Periods are `sharp` (尖峰), `peak` (峰), `flat` (平), `valley` (谷); the Chinese names are
accepted too. `to` is exclusive; a period whose `to` is not after its `from` runs past
midnight; "24:00" is the end of the day. A version applies from its `valid_from` date
(local time, 00:00) until the next version's. Hours come from the provincial notice; the
shipped example is NOT an official table (reference/energy.md 4.1: the Anhui notice was
not retrieved).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from drivers.config_numbers import Whole
from edge_agent.catalog import Kind, find, folders, known
from edge_agent.config.document import read_data

PERIODS = ("sharp", "peak", "flat", "valley")
PERIOD_LABELS = {"sharp": "尖峰", "peak": "峰", "flat": "平", "valley": "谷"}
_ALIASES = {"尖峰": "sharp", "尖": "sharp", "峰": "peak", "平": "flat", "谷": "valley"}
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
DAY_MINUTES = 1440

Period = Literal["sharp", "peak", "flat", "valley"]


def _period_name(value: Any) -> Any:
    return _ALIASES.get(value, value) if isinstance(value, str) else value


def _minute_of_day(text: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise ValueError(f"time {text!r} is not HH:MM")
    minutes = int(match[1]) * 60 + int(match[2])
    if minutes > DAY_MINUTES:
        raise ValueError(f"time {text!r} is after 24:00")
    return minutes


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PeriodSpan(_Model):
    """One stretch of the day in one period; `to` is exclusive and may wrap past midnight."""

    period: Annotated[Period, BeforeValidator(_period_name)]
    start: str = Field(alias="from")
    end: str = Field(alias="to")

    @model_validator(mode="after")
    def _times(self) -> PeriodSpan:
        _minute_of_day(self.start)
        _minute_of_day(self.end)
        if self.start == self.end:
            raise ValueError(f"period {self.period} from {self.start} to {self.end} is empty")
        return self

    def minutes(self) -> list[int]:
        """The minutes of the day (0..1439) this span covers."""
        a, b = _minute_of_day(self.start) % DAY_MINUTES, _minute_of_day(self.end)
        if b <= a:  # crosses midnight
            return [*range(a, DAY_MINUTES), *range(b % DAY_MINUTES)]
        return list(range(a, b))


class Season(_Model):
    """The periods of the months it names."""

    name: str
    months: Annotated[tuple[Annotated[Whole, Field(ge=1, le=12)], ...], Field(min_length=1)]
    periods: Annotated[tuple[PeriodSpan, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _covers_day(self) -> Season:
        self.table()
        return self

    def table(self) -> tuple[int, ...]:
        """Period index (into PERIODS) of each minute of the day; raises on gaps/overlaps."""
        owner: list[int | None] = [None] * DAY_MINUTES
        for span in self.periods:
            for m in span.minutes():
                if owner[m] is not None:
                    raise ValueError(
                        f"season {self.name}: {_hhmm(m)} is in {PERIODS[owner[m]]} "  # type: ignore[index]
                        f"and in {span.period}"
                    )
                owner[m] = PERIODS.index(span.period)
        missing = [m for m, o in enumerate(owner) if o is None]
        if missing:
            raise ValueError(f"season {self.name}: no period covers {_hhmm(missing[0])}")
        return tuple(o for o in owner if o is not None)


class CalendarVersion(_Model):
    """The seasons in force from `valid_from` on."""

    valid_from: dt.date
    seasons: Annotated[tuple[Season, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _months_once(self) -> CalendarVersion:
        seen: dict[int, str] = {}
        for season in self.seasons:
            for month in season.months:
                if month in seen:
                    raise ValueError(f"month {month} is in seasons {seen[month]} and {season.name}")
                seen[month] = season.name
        missing = sorted(set(range(1, 13)) - set(seen))
        if missing:
            raise ValueError(f"valid_from {self.valid_from}: no season has months {missing}")
        return self


class TariffCalendar(_Model):
    """A dated TOU calendar; `period_index(local_date, minute_of_day)` is the lookup."""

    name: str
    region: str | None = None
    source: str | None = None
    note: str | None = None
    versions: Annotated[tuple[CalendarVersion, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _dated(self) -> TariffCalendar:
        dates = [v.valid_from for v in self.versions]
        if dates != sorted(set(dates)):
            raise ValueError("versions must have distinct valid_from dates in rising order")
        return self

    def version_for(self, day: dt.date) -> CalendarVersion | None:
        """The version in force on a local date (None before the first)."""
        dates = [v.valid_from for v in self.versions]
        i = bisect.bisect_right(dates, day) - 1
        return self.versions[i] if i >= 0 else None

    def version_label(self, day: dt.date) -> str:
        """`name@valid_from` of the version in force, recorded with every split."""
        version = self.version_for(day)
        return f"{self.name}@{version.valid_from}" if version else f"{self.name}@none"


class DayTable:
    """Per-date cache of a calendar's minute table (one lookup per minute on the hot path)."""

    def __init__(self, calendar: TariffCalendar | None) -> None:
        self.calendar = calendar
        self._tables: dict[dt.date, tuple[tuple[int, ...] | None, str]] = {}

    def of(self, day: dt.date) -> tuple[tuple[int, ...] | None, str]:
        """(minute -> period index table, or None without a calendar in force; version label)."""
        found = self._tables.get(day)
        if found is None:
            calendar = self.calendar
            version = calendar.version_for(day) if calendar else None
            if calendar is None or version is None:
                found = (None, "")
            else:
                season = next(s for s in version.seasons if day.month in s.months)
                found = (season.table(), calendar.version_label(day))
            if len(self._tables) > 400:
                self._tables.clear()
            self._tables[day] = found
        return found


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def load_calendar(path: Path) -> TariffCalendar:
    """Read and validate a calendar file; ValueError names the file."""
    try:
        data = read_data(path)
    except OSError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    try:
        return TariffCalendar.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def find_calendar(ref: str, *, base: Path, environ: Mapping[str, str] | None = None) -> Path:
    """A calendar given as a path (relative to `base`) or a name in the catalog's tariffs."""
    if (base / ref).is_file():
        return base / ref
    searched = folders(Kind.TARIFFS, base, environ=environ)
    found = find(ref.removesuffix(".yaml"), searched)
    if found is not None:
        return found
    looked = ", ".join(f.shown for f in searched)
    raise ValueError(
        f"tariff calendar {ref!r} not found (looked in: {base}/, {looked}; "
        f"known: {', '.join(known(searched)) or 'none'})"
    )


def split_by_period(minutes: Sequence[tuple[int, float]], table: Sequence[int]) -> dict[str, float]:
    """Sum (minute_of_day, energy) pairs by period (helper for tests and the report)."""
    out = dict.fromkeys(PERIODS, 0.0)
    for minute, energy in minutes:
        out[PERIODS[table[minute]]] += energy
    return out

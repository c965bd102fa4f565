"""Maximum demand (最大需量) as the utility bills it: 15-minute average power, sliding by 1 minute.

    D(T) = (E_import(T) - E_import(T - W)) / W        W = demand window (15 min), T each minute

computed from the import counter's minutes (energy_counter), so missed polls only change
how E is interpolated, never the window (energy.md 4.2). The running maximum is kept per
local month and per local day with the time it happened; a window belongs to the day and
month in which it ends (its last minute), as a meter's monthly maximum resets at 00:00 on
the 1st. Load factor (负荷率) = average power / maximum demand over a day or month.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.counter import MINUTE_MS, Minute
from edge_agent.energy.hierarchy import CounterInfo
from edge_agent.energy.intervals import WallClock


@dataclass(frozen=True, slots=True)
class DemandSample:
    """Demand of the window ending at `end_ms`, with the month's maximum so far."""

    end_ms: int
    kw: float
    uncertain: bool  # a reset, or missed polls, inside the window
    month_max_kw: float
    month_max_ms: int


@dataclass(slots=True)
class Peak:
    """A maximum and when its window ended."""

    kw: float
    end_ms: int

    def __reduce__(self) -> tuple[type[Peak], tuple[Any, ...]]:
        # Positional fields: a slotted dataclass's default pickling calls fields() per
        # object, 40 % of saving the energy state (energy_state.py).
        return (Peak, (self.kw, self.end_ms))


class DemandTracker:
    """Sliding-window demand of one import counter (kWh)."""

    __slots__ = ("_days", "_energy", "_flags", "_last", "_months", "clock", "window")

    def __init__(self, clock: WallClock, *, window_min: int = 15) -> None:
        self.clock = clock
        self.window = window_min
        self._energy: deque[float] = deque(maxlen=window_min)
        self._flags: deque[bool] = deque(maxlen=window_min)
        self._last: int | None = None
        self._days: dict[dt.date, Peak] = {}
        self._months: dict[tuple[int, int], Peak] = {}

    def add(self, minute: Minute) -> DemandSample | None:
        """Take the next minute; the demand of the window it completes."""
        if self._last is not None and minute.start_ms != self._last + MINUTE_MS:
            self._energy.clear()  # not contiguous: start a new window
            self._flags.clear()
        self._last = minute.start_ms
        self._energy.append(minute.energy)
        self._flags.append(minute.reset or minute.gap)
        if len(self._energy) < self.window:
            return None
        kw = sum(self._energy) * 60.0 / self.window
        end = minute.start_ms + MINUTE_MS
        day, _ = self.clock.local(minute.start_ms)
        month = (day.year, day.month)
        peak = self._months.get(month)
        if peak is None or kw > peak.kw:
            peak = self._months[month] = Peak(kw, end)
            if len(self._months) > 3:
                del self._months[min(self._months)]
        today = self._days.get(day)
        if today is None or kw > today.kw:
            self._days[day] = Peak(kw, end)
            if len(self._days) > 3:
                del self._days[min(self._days)]
        return DemandSample(end, kw, any(self._flags), peak.kw, peak.end_ms)

    def day_peak(self, day: dt.date) -> Peak | None:
        """The day's maximum demand, if any window ended in it."""
        return self._days.get(day)

    def month_peak(self, year: int, month: int) -> Peak | None:
        """The month's maximum demand, if any window ended in it."""
        return self._months.get((year, month))


def load_factor(energy_kwh: float, hours: float, peak_kw: float | None) -> float | None:
    """P_avg / P_max (None without a maximum, or with a zero one)."""
    if peak_kw is None or peak_kw <= 0 or hours <= 0:
        return None
    return energy_kwh / hours / peak_kw


def power_factor(kwh: float, kvarh: float) -> float | None:
    """Average power factor from active and reactive energy: kWh / sqrt(kWh² + kvarh²)."""
    apparent = (kwh * kwh + kvarh * kvarh) ** 0.5
    return kwh / apparent if apparent > 0 else None


def demand_meters(counters: Sequence[CounterInfo]) -> list[str]:
    """Devices whose demand is computed: those with an active import counter."""
    return list(
        dict.fromkeys(
            c.key[0]
            for c in counters
            if c.role == "counter" and c.kind == "electricity" and c.direction in (None, "import")
        )
    )


def contract_meter(config: EnergyConfig, counters: Sequence[CounterInfo]) -> str | None:
    """The meter the contract demand is billed on: `contract_demand_meter`, else the one
    meter with demand at the top of the hierarchy (or of the site, without one); None
    when there is no contract demand or no single such meter."""
    if config.contract_demand_kw is None:
        return None
    if config.contract_demand_meter is not None:
        return config.contract_demand_meter
    meters = demand_meters(counters)
    if config.hierarchy:
        top = {r.split(".", 1)[0] for n in config.hierarchy if n.parent is None for r in n.meters}
        meters = [m for m in meters if m in top]
    return meters[0] if len(meters) == 1 else None

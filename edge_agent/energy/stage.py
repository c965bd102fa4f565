"""The energy stage: counters in every poll -> intervals, demand, TOU, totals, hierarchy.

    poll ─► good reading of each `energy:` counter ─► CounterTrack ─► Minute
                 Minute ─► DemandTracker     ─► "demand" message (import kWh counters)
                        ─► IntervalAccumulator ─► "interval" message
                                 ├─► TotalsAccumulator ─► "day" / "month" messages
                                 └─► Hierarchy ─► node and virtual meter intervals ─► totals
    meter's own demand register (role demand / demand_max) ─► latest value, sent beside

Every derived message goes through the Outlet on `{prefix}/{site}/{gateway}/energy`
(durable, QoS 1, replayed after an outage) and has the shape of a data message, so the
ingest can store it like readings (one series per device and point name):

    {"schema_version": 1, "type": "interval", "gateway": "gw-01", "device": "main-incomer",
     "seq": 812, "ts_ms": 1793462400000, "historical": false,
     "counter": "energy_import", "kind": "electricity", "direction": "import",
     "start": "2026-11-01T00:00:00+08:00", "end": "2026-11-01T00:15:00+08:00",
     "tariff": "example-tou@2024-01-01", "readings": 899, "expected": 900, "flags": [],
     "points": {"interval.energy_import": {"value": 31.25, "unit": "kWh", "quality": "good"},
                "interval.energy_import.valley": {...}, ...,
                "interval.energy_import.completeness": {"value": 0.999, ...}}}

`ts_ms` is the start of the interval, day or month (the end of the window for demand).
Time comes only from the polls' timestamps, so the stage is a pure function of the polls
it saw; `run()` has no timers of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers.reading import PointSpec, Poll
from edge_agent.config.site import LoadedConfig
from edge_agent.energy.coefficients import CANONICAL, Coefficients, load_coefficients
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.counter import CounterTrack, Minute
from edge_agent.energy.demand import (
    DemandSample,
    DemandTracker,
    contract_meter,
    load_factor,
    power_factor,
)
from edge_agent.energy.hierarchy import Hierarchy, Series
from edge_agent.energy.intervals import Interval, IntervalAccumulator, WallClock
from edge_agent.energy.points import CounterPoint, counter_spec, energy_points
from edge_agent.energy.state import EnergyStateFile, assign, attributes
from edge_agent.energy.tariffs import DayTable, TariffCalendar, find_calendar, load_calendar
from edge_agent.energy.totals import Total, TotalsAccumulator
from edge_agent.runtime.wake_grid import sleep_to_multiple

__all__ = [
    "CounterPoint",
    "EnergyStage",
    "build_energy_stages",
    "counter_spec",
    "energy_points",
    "energy_state_path",
]

log = logging.getLogger(__name__)

TOPIC_SUFFIX = "energy"
SCHEMA_VERSION = 1
# The running state of each part (energy_state.py); the rest of each object is config.
_TRACK_STATE = tuple(n for n in CounterTrack.__slots__ if n != "spec")
_INTERVAL_STATE = ("_current", "_last_minute", "_periods")
_TOTALS_STATE = ("_day", "_month")
_DEMAND_STATE = ("_days", "_last", "_months")
# The window's deques go as lists: pickling a deque costs ~50 µs (copyreg cannot cache
# the slot names of a built-in type), 8x the rest of a counter's state.
_DEMAND_WINDOW = ("_energy", "_flags")
MAX_RESTORE_AGE_MS = 26 * 3_600_000  # a day, and a DST change


class EnergyOutlet(Protocol):
    """Where the stage publishes (the agent's Outlet)."""

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        """Publish one derived message durably."""
        ...


@dataclass(slots=True, eq=False)
class _Counter:
    point: CounterPoint
    track: CounterTrack
    intervals: IntervalAccumulator
    totals: TotalsAccumulator
    demand: DemandTracker | None


@dataclass(slots=True, eq=False)
class _Device:
    name: str
    counters: dict[str, _Counter] = field(default_factory=dict)
    registers: dict[str, CounterPoint] = field(default_factory=dict)  # demand registers
    latest: dict[str, float] = field(default_factory=dict)  # role -> kW
    points: tuple[PointSpec, ...] | None = None
    bound_counters: list[tuple[int, _Counter]] = field(default_factory=list)
    bound_registers: list[tuple[int, CounterPoint]] = field(default_factory=list)

    def bind(self, points: tuple[PointSpec, ...]) -> None:
        """Indexes of the energy points in this driver's poll layout."""
        index = {p.name: i for i, p in enumerate(points)}
        self.bound_counters = [(index[n], c) for n, c in self.counters.items() if n in index]
        self.bound_registers = [(index[n], r) for n, r in self.registers.items() if n in index]
        self.points = points


def _entry(
    value: float | None, unit: str | None, quality: str = "good", reason: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": value, "unit": unit, "quality": quality}
    if reason is not None:
        entry["reason"] = reason
    return entry


def _r(value: float) -> float:
    return round(value, 6)


class EnergyStage:
    """Derives energy series from every poll; see the module docstring."""

    name = "energy"

    def __init__(
        self,
        points: Sequence[CounterPoint],
        *,
        config: EnergyConfig,
        outlet: EnergyOutlet,
        site: str,
        calendar: TariffCalendar | None = None,
        coefficients: Coefficients | None = None,
        time_scale: float = 1.0,
        time_origin_ms: int | None = None,
        state: EnergyStateFile | None = None,
    ) -> None:
        self.config = config
        self.state = state  # None: nothing kept across restarts (reports, virtual time)
        self._state_failing = False
        # Virtual time (tests, demos): origin + (poll time - first poll time) x scale.
        self.time_scale = time_scale
        self.time_origin_ms = time_origin_ms
        self.first_poll_ms: int | None = None
        self._virtual = time_scale != 1.0 or time_origin_ms is not None
        self.outlet = outlet
        self.clock = WallClock(config.timezone, config.interval_min)
        self.tariffs = DayTable(calendar)
        self.coefficients = coefficients or load_coefficients(
            config.standard_coal, config.grid_emission
        )
        self.published = 0
        self._devices: dict[str, _Device] = {}
        for cp in points:
            dev = self._devices.setdefault(cp.device, _Device(cp.device))
            if cp.options.role != "counter":
                dev.registers[cp.point] = cp
                continue
            electricity_import = cp.options.kind == "electricity" and cp.options.direction in (
                None,
                "import",
            )
            dev.counters[cp.point] = _Counter(
                cp,
                CounterTrack(cp.spec),
                IntervalAccumulator(self.clock, self.tariffs, poll_interval_s=cp.poll_interval_s),
                TotalsAccumulator(
                    self.clock,
                    expected_per_interval=self.clock.interval_ms / 1000 / cp.poll_interval_s,
                ),
                DemandTracker(self.clock, window_min=config.demand_window_min)
                if electricity_import
                else None,
            )
        self.hierarchy = Hierarchy(
            config, site, [cp.info for cp in points if cp.options.role == "counter"]
        )
        self._contract_meter = contract_meter(config, [cp.info for cp in points])
        self._node_totals: dict[tuple[str, str], TotalsAccumulator] = {}
        self._closed: list[tuple[_Counter, Total]] = []
        self._changed = asyncio.Event()  # a counter reading taken since the last save

    # -- the hot path -------------------------------------------------------------------

    def observe(self, poll: Poll) -> None:
        """Take one poll: feed its good counter readings; publish what they complete."""
        dev = self._devices.get(poll.device)
        if dev is None:
            return
        if poll.points is not dev.points:
            dev.bind(poll.points)
        ts_ms = poll.ts_ns // 1_000_000
        if self._virtual:
            ts_ms = self.virtual_ms(ts_ms)
        values = poll.values
        issues = poll.issues
        # Registers first, so a demand message carries the register of the same poll.
        for i, register in dev.bound_registers:
            value = values[i]
            if i not in issues and (type(value) is float or type(value) is int):
                dev.latest[register.options.role] = value * register.spec.factor
        counted = False
        for i, counter in dev.bound_counters:
            if i in issues:
                continue  # bad or uncertain: not a reading to count on
            value = values[i]
            if type(value) is not float and type(value) is not int:
                continue
            counted = True
            minutes = counter.track.add(ts_ms, value)
            if minutes:
                self._minutes(dev, counter, minutes)
        if counted:
            self._changed.set()
        if self._closed:
            self._publish_totals(dev)

    def virtual_ms(self, ts_ms: int) -> int:
        """A poll time on the stage's clock (itself unless a time scale or origin is set)."""
        if self.first_poll_ms is None:
            self.first_poll_ms = ts_ms
        origin = self.first_poll_ms if self.time_origin_ms is None else self.time_origin_ms
        return origin + int((ts_ms - self.first_poll_ms) * self.time_scale)

    async def run(self) -> None:
        """No timers (every boundary is crossed by a poll's timestamp); saves the state at
        the next multiple of `state_save_s` on the loop's clock after a counter reading
        changed it (runtime/wake_grid.py: where the polls wake anyway), and at the stop."""
        state = self.state
        if state is None:
            await asyncio.Event().wait()
            return
        try:
            while True:
                await self._changed.wait()
                await sleep_to_multiple(self.config.state_save_s)
                self._changed.clear()
                # Taken on the loop (one consistent moment, ~55 µs per counter), written by
                # a worker thread so the disk never holds up a poll.
                blob = state.dump(self._state_rows())
                try:
                    await asyncio.to_thread(state.write, blob)
                except sqlite3.Error as exc:  # a full disk must not stop the metering
                    self._state_saved(exc)
                    self._changed.set()  # still unsaved: again next period
                else:
                    self._state_saved(None)
        finally:
            self.save_state()  # the agent stops: the next start continues from here
            state.close()

    # -- state across restarts (energy_state.py) ------------------------------------------

    @functools.cached_property
    def _fingerprints(self) -> dict[str, str]:
        """What each part's saved numbers depend on, by state key (the config's part)."""
        c = self.config
        out = {}
        for dev in self._devices.values():
            for name, counter in dev.counters.items():
                cp = counter.point
                point = (cp.spec, cp.poll_interval_s, cp.options.kind, cp.options.direction)
                out[f"counter:{dev.name}/{name}"] = repr(
                    ((*point, cp.unit), c.timezone, c.interval_min, c.demand_window_min, c.tariff)
                )
        needed = sorted(self.hierarchy.needed)
        out["hierarchy"] = repr((c.hierarchy, c.virtual_meters, c.timezone, c.interval_min, needed))
        return out

    def _state_rows(self) -> dict[str, tuple[str, Any]]:
        rows: dict[str, tuple[str, Any]] = {}
        for dev in self._devices.values():
            for name, counter in dev.counters.items():
                key = f"counter:{dev.name}/{name}"
                rows[key] = (
                    self._fingerprints[key],
                    (
                        attributes(counter.track, _TRACK_STATE),
                        attributes(counter.intervals, _INTERVAL_STATE),
                        attributes(counter.totals, _TOTALS_STATE),
                        None
                        if counter.demand is None
                        else attributes(counter.demand, _DEMAND_STATE)
                        | {n: list(getattr(counter.demand, n)) for n in _DEMAND_WINDOW},
                    ),
                )
        tree = self._fingerprints["hierarchy"]
        for (series, kind), totals in self._node_totals.items():
            rows[f"node:{series}/{kind}"] = (tree, attributes(totals, _TOTALS_STATE))
        rows["hierarchy"] = (tree, self.hierarchy._pending)
        return rows

    def save_state(self) -> None:
        """Write the running state (no-op without a state file)."""
        if self.state is None:
            return
        try:
            self.state.save(self._state_rows())
        except sqlite3.Error as exc:  # a full disk must not stop the metering
            self._state_saved(exc)
        else:
            self._state_saved(None)

    def _state_saved(self, error: sqlite3.Error | None) -> None:
        # Logged once per change: a full disk would otherwise log every period.
        if error is not None and not self._state_failing:
            log.warning("energy state not saved: %s (retrying every period)", error)
        elif error is None and self._state_failing:
            log.info("energy state saved again")
        self._state_failing = error is not None

    def restore_state(self) -> int:
        """Continue from the saved state; the number of parts restored."""
        if self.state is None:
            return 0
        wanted = self._fingerprints
        names = {s.name for s in self.hierarchy.series}

        def fingerprint(key: str) -> str | None:
            if key.startswith("node:"):  # made when a series' first interval comes
                return wanted["hierarchy"] if key[5:].rpartition("/")[0] in names else None
            return wanted.get(key)

        saved_ms, found, dropped = self.state.load(fingerprint)
        now_ms = time.time_ns() // 1_000_000
        if found and not now_ms - MAX_RESTORE_AGE_MS < saved_ms < now_ms + 60_000:
            # Older: spreading a long down time's energy over it would publish thousands of
            # intervals per counter at once. Newer (the clock went back): every reading
            # would be older than the saved one and ignored until the clock caught up.
            age_h = (now_ms - saved_ms) / 3_600_000
            dropped = [f"all (saved {age_h:.1f} h ago)"]
            found = {}
        if dropped:
            log.warning("energy state: starting afresh for %s", ", ".join(sorted(dropped)))
        for key, value in found.items():
            kind, _, name = key.partition(":")
            if kind == "counter":
                device, _, point = name.partition("/")
                counter = self._devices[device].counters[point]
                track, intervals, totals, demand = value
                assign(counter.track, track)
                assign(counter.intervals, intervals)
                assign(counter.totals, totals)
                if counter.demand is not None and demand is not None:
                    window = counter.demand.window
                    for n in _DEMAND_WINDOW:
                        demand[n] = deque(demand[n], maxlen=window)
                    assign(counter.demand, demand)
            elif kind == "node":
                node, _, energy_kind = name.rpartition("/")
                accumulator = TotalsAccumulator(self.clock, expected_per_interval=1.0)
                assign(accumulator, value)
                self._node_totals[(node, energy_kind)] = accumulator
            else:
                self.hierarchy._pending = value
        if found:
            age = (now_ms - saved_ms) / 1000
            log.info("energy state: %d parts restored, saved %.0f s ago", len(found), age)
        return len(found)

    # -- derivations ----------------------------------------------------------------------

    def _minutes(self, dev: _Device, counter: _Counter, minutes: list[Minute]) -> None:
        for minute in minutes:
            if counter.demand is not None:
                sample = counter.demand.add(minute)
                if sample is not None:
                    self._send_demand(dev, counter, sample)
            interval = counter.intervals.add(minute)
            if interval is None:
                continue
            self._send_interval(counter.point, interval)
            for total in counter.totals.add(interval):
                self._closed.append((counter, total))
            key = (counter.point.device, counter.point.point)
            for series, per_kind in self.hierarchy.add(key, interval):
                self._send_series(series, per_kind)

    def flush(self) -> None:
        """End of a replay: compute the hierarchy series still waiting for late terms."""
        for series, per_kind in self.hierarchy.flush():
            self._send_series(series, per_kind)

    def _send(self, doc: dict[str, Any], device: str) -> None:
        self.outlet.send(TOPIC_SUFFIX, doc, device=device, readings=len(doc["points"]))
        self.published += 1

    def _head(self, kind: str, device: str, ts_ms: int) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "type": kind, "device": device, "ts_ms": ts_ms}

    def _interval_points(
        self, prefix: str, unit: str, interval: Interval
    ) -> dict[str, dict[str, Any]]:
        quality, reason = interval.quality()
        points = {prefix: _entry(_r(interval.energy), unit, quality, reason)}
        for period, value in (interval.periods or {}).items():
            points[f"{prefix}.{period}"] = _entry(_r(value), unit, quality, reason)
        points[f"{prefix}.completeness"] = _entry(round(interval.completeness, 4), None)
        return points

    def _send_interval(self, cp: CounterPoint, interval: Interval) -> None:
        doc = self._head("interval", cp.device, interval.start_ms)
        doc.update(
            counter=cp.point,
            kind=cp.options.kind,
            direction=cp.options.direction,
            start=self.clock.iso(interval.start_ms),
            end=self.clock.iso(interval.end_ms),
            tariff=interval.tariff or None,
            readings=int(interval.readings),
            expected=round(interval.expected, 3),
            flags=sorted(interval.flags),
            points=self._interval_points(f"interval.{cp.point}", cp.unit, interval),
        )
        self._send(doc, cp.device)

    def _send_demand(self, dev: _Device, counter: _Counter, sample: DemandSample) -> None:
        cp = counter.point
        prefix = f"demand.{cp.point}"
        quality, reason = (
            ("uncertain", "reset or missed polls in the window")
            if sample.uncertain
            else ("good", None)
        )
        points = {
            prefix: _entry(_r(sample.kw), "kW", quality, reason),
            f"{prefix}.month_max": _entry(_r(sample.month_max_kw), "kW"),
        }
        if "demand" in dev.latest:
            points["demand.meter"] = _entry(_r(dev.latest["demand"]), "kW")
        if "demand_max" in dev.latest:
            points["demand.meter_max"] = _entry(_r(dev.latest["demand_max"]), "kW")
        doc = self._head("demand", cp.device, sample.end_ms)
        doc.update(
            counter=cp.point,
            window_min=self.config.demand_window_min,
            month_max_ts_ms=sample.month_max_ms,
            # Only on the meter it is billed on: a feeder has no contract of its own.
            contract_demand_kw=self.config.contract_demand_kw
            if cp.device == self._contract_meter
            else None,
            points=points,
        )
        self._send(doc, cp.device)

    def _total_doc(
        self, device: str, prefix: str, unit: str, kind: str, direction: str | None, total: Total
    ) -> dict[str, Any]:
        quality = "good"
        reason = None
        if total.completeness < 0.9 or "reset" in total.flags:
            quality = "uncertain"
            reason = f"completeness {total.completeness:.2f}" + (
                "; meter reset or replacement" if "reset" in total.flags else ""
            )
        points = {prefix: _entry(_r(total.energy), unit, quality, reason)}
        for period, value in (total.periods or {}).items():
            points[f"{prefix}.{period}"] = _entry(_r(value), unit, quality, reason)
        points[f"{prefix}.completeness"] = _entry(round(total.completeness, 4), None)
        tce = self.coefficients.tce(kind, total.energy)
        if tce is not None:
            points[f"{prefix}.tce"] = _entry(_r(tce), "tce", quality, reason)
        co2 = self.coefficients.co2_t(kind, direction, total.energy)
        if co2 is not None:
            points[f"{prefix}.co2"] = _entry(_r(co2), "tCO2", quality, reason)
        doc = self._head(total.span, device, total.start_ms)
        doc.update(
            counter=prefix.split(".", 1)[1],
            period=total.label,
            start=self.clock.iso(total.start_ms),
            end=self.clock.iso(total.end_ms),
            kind=kind,
            direction=direction,
            tariffs=total.tariffs,
            intervals=total.intervals,
            expected_intervals=total.expected_intervals,
            coefficients=self.coefficients.versions,
            flags=sorted(total.flags),
            points=points,
        )
        return doc

    def _publish_totals(self, dev: _Device) -> None:
        closed, self._closed = self._closed, []
        # Active and reactive import totals closed by the same poll give the period's PF.
        energies: dict[tuple[str, str], dict[str, float]] = {}
        for counter, total in closed:
            o = counter.point.options
            if o.direction in (None, "import") and o.kind in ("electricity", "reactive"):
                energies.setdefault((total.span, total.label), {})[o.kind] = total.energy
        for counter, total in closed:
            cp = counter.point
            prefix = f"{total.span}.{cp.point}"
            doc = self._total_doc(
                cp.device, prefix, cp.unit, cp.options.kind, cp.options.direction, total
            )
            if counter.demand is not None:
                first = total.first_day
                peak = (
                    counter.demand.day_peak(first)
                    if total.span == "day"
                    else counter.demand.month_peak(first.year, first.month)
                )
                if peak is not None:
                    doc["points"][f"{prefix}.demand_max"] = _entry(_r(peak.kw), "kW")
                    doc["demand_max_ts_ms"] = peak.end_ms
                    lf = load_factor(total.energy, total.hours, peak.kw)
                    if lf is not None:
                        doc["points"][f"{prefix}.load_factor"] = _entry(round(lf, 4), None)
                pair = energies.get((total.span, total.label), {})
                if "reactive" in pair:
                    pf = power_factor(total.energy, pair["reactive"])
                    if pf is not None:
                        doc["points"][f"{total.span}.pf"] = _entry(round(pf, 4), None)
            self._send(doc, cp.device)

    def _send_series(self, series: Series, per_kind: dict[str, Interval]) -> None:
        node = {"level": series.level, "parent": series.parent, "of": series.description}
        for kind, interval in per_kind.items():
            unit = CANONICAL[kind]
            doc = self._head("interval", series.name, interval.start_ms)
            doc.update(
                node=node,
                counter=kind,
                kind=kind,
                start=self.clock.iso(interval.start_ms),
                end=self.clock.iso(interval.end_ms),
                tariff=interval.tariff or None,
                flags=sorted(interval.flags),
                points=self._interval_points(f"interval.{kind}", unit, interval),
            )
            self._send(doc, series.name)
            totals = self._node_totals.get((series.name, kind))
            if totals is None:
                totals = self._node_totals[(series.name, kind)] = TotalsAccumulator(
                    self.clock, expected_per_interval=1.0
                )
            for total in totals.add(interval):
                doc = self._total_doc(
                    series.name, f"{total.span}.{kind}", unit, kind, "import", total
                )
                doc["node"] = node
                self._send(doc, series.name)


def energy_state_path(loaded: LoadedConfig) -> Path:
    """The energy state, beside the outbox and named after it: outbox.energy.sqlite."""
    outbox = loaded.path.parent / loaded.site.outbox.path
    return outbox.with_name(f"{outbox.stem}.energy.sqlite")


def build_energy_stages(
    loaded: LoadedConfig,
    outlet: EnergyOutlet,
    *,
    time_scale: float = 1.0,
    time_origin_ms: int | None = None,
    state_path: Path | None = None,
) -> list[EnergyStage]:
    """The energy stage of a site, or none when no point is declared `energy:`.

    `time_scale` > 1 runs the stage's clock faster than the polls' (a test sees 15-minute
    intervals in seconds); poll periods are scaled with it. With `state_path` the running
    state is restored from it now and saved to it while the stage runs.
    """
    points = energy_points(loaded.devices)
    if not points:
        return []
    if time_scale != 1.0:
        points = [
            dataclasses.replace(
                p,
                poll_interval_s=p.poll_interval_s * time_scale,
                spec=dataclasses.replace(p.spec, gap_ms=int(p.spec.gap_ms * time_scale)),
            )
            for p in points
        ]
    config: EnergyConfig = loaded.site.energy
    calendar = None
    if config.tariff is not None:
        calendar = load_calendar(find_calendar(config.tariff, base=loaded.path.parent))
    stage = EnergyStage(
        points,
        config=config,
        outlet=outlet,
        site=loaded.site.site,
        calendar=calendar,
        coefficients=load_coefficients(
            config.standard_coal, config.grid_emission, site_dir=loaded.path.parent
        ),
        time_scale=time_scale,
        time_origin_ms=time_origin_ms,
        # Virtual time (tests, demos) has nothing to continue across restarts.
        state=None
        if state_path is None or time_scale != 1.0 or time_origin_ms is not None
        else EnergyStateFile(state_path),
    )
    stage.restore_state()
    log.info(
        "energy: %d counters on %d devices, %d-min intervals in %s",
        sum(len(d.counters) for d in stage._devices.values()),
        len(stage._devices),
        config.interval_min,
        config.timezone,
    )
    return [stage]

"""Report by exception: which readings of a poll go up as the data message.

    driver ─► Poll ─┬─► stages (energy, alarms...) see EVERY reading, unthinned
                    └─► ReportFilter.select(poll) ─► Poll of the points worth sending
                                                     (same object when all are; None if none)

One filter for every driver: it works on `Poll`s and point names, and finds each point's
`report:` options (point, device, profile, merged key by key) in the loaded config, so a
Modbus, OPC UA or DL/T 645 reading is thinned the same way.

Per point it keeps the last *published* value, time and (quality, reason). A reading goes
up when, in this order:
1. its quality or reason differs from the last published one (at once, always);
2. its heartbeat is due: `max_interval_s` since the last publication (0: every poll);
3. it is not bad and changed: a boolean or a string on any change, at once (deadbands and
   `min_interval_s` are for numbers: a state that flips and flips back within a minimum
   interval would be lost); a number once `min_interval_s` has passed, by more than the
   deadband (the larger of `deadband` and `deadband_pct` of the span or of the last
   published value; none given: any change).
When a message goes up anyway, points past half their heartbeat ride along, so
heartbeats bunch into fewer messages instead of trickling one point at a time.

Time is the poll's own timestamp (`ts_ns`, when the answer arrived), so the spacing a
subscriber sees in `ts_ms` is the spacing the filter enforced. Both intervals are met
within half a poll interval (a 60 s heartbeat at 1 s polls goes with the poll nearest
60 s, not the one after it); a clock that steps back publishes at once and starts over.

Energy counters (points with `energy:`, or in an energy unit: kWh, kvarh...) and alarm
inputs (points with `alarms:`) keep only the heartbeat of a device or profile default:
deadbands and `min_interval_s` from those levels do not apply to them, so every change of
a counter goes up and a total computed from the uplink equals the edge's (dropping
repeats of a cumulative value drops no energy). Only a `report:` on the point itself can
thin such a point further. The stages compute energy and alarms from every reading
either way (see stages.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from drivers.options.report import ReportOptions, merge_report
from drivers.reading import PointSpec, Poll, Quality
from drivers.registry import plugin
from edge_agent.config.site import DeviceSetup, LoadedConfig

_NUMBERS = (int, float)  # exact types: bool is an int subclass but counts as a state
# Units of cumulative energy registers: a meter lists many more counters (per phase, per
# tariff, totals) than it marks `energy:`, and a percent deadband on a 50 000 kWh counter
# would hold it for 250 kWh. Points in these units are guarded like marked counters.
COUNTER_UNITS = frozenset(
    f"{prefix}{unit}" for prefix in ("", "k", "M", "G") for unit in ("Wh", "varh", "VArh", "VAh")
)
_UNSENT = object()  # last (quality, reason) of a point never published: differs from all
Issue = tuple[Quality, str] | None


@dataclass(frozen=True, slots=True)
class PointRule:
    """One point's options compiled for the hot path (times in ns, fractions not %)."""

    heartbeat_ns: int  # publish when this much time passed since the last publication
    spare_ns: int  # past this, ride along with a message that goes up anyway
    min_ns: int  # no change goes up sooner than this after the last publication
    absolute: float  # deadband in the point's unit (from `deadband` and percent of span)
    of_last: float  # fraction of |last published value| (deadband_pct without span)

    @classmethod
    def compile(cls, options: ReportOptions, *, interval_s: float) -> PointRule:
        """Compile merged options for a device polled every `interval_s`."""
        slack = interval_s / 2  # meet both intervals within half a poll, not one poll late
        heartbeat = options.max_interval_s
        absolute = options.deadband or 0.0
        of_last = 0.0
        if options.deadband_pct:
            if options.span is not None:
                low, high = options.span
                absolute = max(absolute, options.deadband_pct / 100 * (high - low))
            else:
                of_last = options.deadband_pct / 100
        return cls(
            heartbeat_ns=int(max(0.0, heartbeat - slack) * 1e9),
            spare_ns=int(heartbeat / 2 * 1e9),
            min_ns=int(max(0.0, options.min_interval_s - slack) * 1e9),
            absolute=absolute,
            of_last=of_last,
        )


@dataclass(slots=True)
class UplinkCounts:
    """Per device: what was polled against what went up (for the live view and metrics)."""

    polls: int = 0
    messages: int = 0  # polls that sent a data message
    readings_polled: int = 0
    readings_published: int = 0


@dataclass(slots=True)
class _Device:
    """A device's rules by point name, and its per-point state once bound to its points."""

    rules_by_name: dict[str, PointRule | None]
    counts: UplinkCounts = field(default_factory=UplinkCounts)
    points: tuple[PointSpec, ...] = ()
    rules: list[PointRule | None] = field(default_factory=list)
    last_values: list[Any] = field(default_factory=list)
    last_ts: list[int] = field(default_factory=list)
    last_issue: list[object] = field(default_factory=list)

    def bind(self, points: tuple[PointSpec, ...]) -> None:
        """Align rules and state with the driver's point order (on its first poll)."""
        self.points = points
        self.rules = [self.rules_by_name.get(p.name) for p in points]
        self.last_values = [None] * len(points)
        self.last_ts = [0] * len(points)
        self.last_issue = [_UNSENT] * len(points)


class ReportFilter:
    """The uplink filter of the agent (`stages.UplinkFilter`): report by exception."""

    def __init__(self, rules: dict[str, dict[str, PointRule | None]]) -> None:
        self._devices = {name: _Device(by_name) for name, by_name in rules.items()}

    @property
    def counts(self) -> dict[str, UplinkCounts]:
        """Polled and published readings per device that has report options."""
        return {name: d.counts for name, d in self._devices.items()}

    def select(self, poll: Poll) -> Poll | None:
        """The part of `poll` to publish: the poll itself, a Poll of fewer points, or None."""
        device = self._devices.get(poll.device)
        if device is None:
            return poll
        if poll.points is not device.points:
            device.bind(poll.points)
        ts = poll.ts_ns
        values = poll.values
        issues = poll.issues
        last_values = device.last_values
        last_ts = device.last_ts
        last_issue = device.last_issue
        keep: list[int] = []
        spare: list[int] = []
        for i, rule in enumerate(device.rules):
            issue = issues.get(i) if issues else None
            if rule is None or issue != last_issue[i]:
                keep.append(i)
                continue
            elapsed = ts - last_ts[i]
            if elapsed >= rule.heartbeat_ns or elapsed < 0:
                keep.append(i)
                continue
            # Same quality as published: an uncertain value is compared as a good one; a
            # bad one is None on both sides, so only the heartbeat repeats it.
            value = values[i]
            last = last_values[i]
            if value != last:
                if type(value) not in _NUMBERS or type(last) not in _NUMBERS:
                    keep.append(i)  # a state or a text: every change, at once
                    continue
                if elapsed >= rule.min_ns:
                    threshold = rule.absolute
                    if rule.of_last:
                        threshold = max(threshold, rule.of_last * abs(last))
                    if abs(value - last) > threshold:
                        keep.append(i)
                        continue
            if elapsed >= rule.spare_ns:
                spare.append(i)
        counts = device.counts
        counts.polls += 1
        counts.readings_polled += len(values)
        if not keep:
            return None
        if spare:
            keep.extend(spare)
            keep.sort()
        for i in keep:
            last_values[i] = values[i]
            last_ts[i] = ts
            last_issue[i] = issues.get(i) if issues else None
        counts.messages += 1
        counts.readings_published += len(keep)
        if len(keep) == len(values):
            return poll
        points = poll.points
        subset_issues: dict[int, tuple[Quality, str]] = {}
        if issues:
            for k, i in enumerate(keep):
                issue = issues.get(i)
                if issue is not None:
                    subset_issues[k] = issue
        subset_ts: dict[int, int] | None = None
        point_ts = poll.point_ts
        if point_ts is not None:  # the points' own source times, renumbered like issues
            subset_ts = {k: point_ts[i] for k, i in enumerate(keep) if i in point_ts} or None
        return Poll(
            poll.device,
            ts,
            tuple([points[i] for i in keep]),
            [values[i] for i in keep],
            subset_issues,
            subset_ts,
        )


def _point_options(setup: DeviceSetup) -> Iterator[tuple[str, ReportOptions | None]]:
    """Each point's effective options, from the fields every driver's models share."""
    device, profile = setup.device, setup.profile
    device_default = device.report
    profile_default = profile.report if profile is not None else None
    points = profile.points if profile is not None else device.points or ()
    units = {spec.name: spec.unit for spec in plugin(device.driver).point_specs(device, profile)}
    for point in points:
        own = point.report
        unit = units.get(point.name)
        guarded = point.energy is not None or bool(point.alarms) or unit in COUNTER_UNITS
        if guarded:
            # A counter or an alarm input takes only the heartbeat from the defaults: what
            # thins it further must be said on the point itself (module doc).
            yield point.name, merge_report(own, _heartbeat_only(device_default, profile_default))
        else:
            yield point.name, merge_report(own, device_default, profile_default)


def _heartbeat_only(*defaults: ReportOptions | None) -> ReportOptions | None:
    inherited = merge_report(*defaults)
    if inherited is None:
        return None
    return ReportOptions(max_interval_s=inherited.max_interval_s)


def report_rules(loaded: LoadedConfig) -> dict[str, dict[str, PointRule | None]]:
    """Compiled rules per device and point, for devices where any point has options."""
    rules: dict[str, dict[str, PointRule | None]] = {}
    for setup in loaded.devices:
        device = setup.device
        if not device.enabled:
            continue
        interval_s = device.interval_s
        by_name = {
            name: None if options is None else PointRule.compile(options, interval_s=interval_s)
            for name, options in _point_options(setup)
        }
        if any(rule is not None for rule in by_name.values()):
            rules[device.name] = by_name
    return rules


def build_report_filter(loaded: LoadedConfig) -> ReportFilter | None:
    """The site's report-by-exception filter, or None when no point has `report:` options."""
    rules = report_rules(loaded)
    return ReportFilter(rules) if rules else None


def rebuild_report_filter(current: object, loaded: LoadedConfig) -> ReportFilter | None:
    """The filter for a reloaded config; devices whose rules did not change keep their state.

    A device whose options changed starts afresh (its next poll goes up whole), as does
    one whose driver was replaced (a new point list rebinds it).
    """
    rules = report_rules(loaded)
    if not rules:
        return None
    fresh = ReportFilter(rules)
    if isinstance(current, ReportFilter):
        for name, device in current._devices.items():
            new = fresh._devices.get(name)
            if new is not None and new.rules_by_name == device.rules_by_name:
                fresh._devices[name] = device
    return fresh

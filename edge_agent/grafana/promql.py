"""PromQL (MetricsQL) queries of the generated Grafana dashboards, for Prometheus-compatible
stores: VictoriaMetrics, which the ingest already writes through its InfluxDB line-protocol
endpoint (README "Ingest and storage").

There the measurement's fields are metrics: `edge_value`, `edge_quality`, `edge_reason`
(`{measurement}_{field}`), labelled site, gateway, device, point (unit, profile); alarm
transitions are `edge_alarm_state` etc. The panels are those of the Flux dashboards
(grafana_queries.py), with the same variables: `site`, `area` (text: the node, value: a
regex of its meters and nodes), `device` (multi; Grafana writes it as `(a|b)`).

Windows. A PromQL range `[d]` at time t holds the samples in (t - d, t]. The energy stage
stamps an interval at its start and a day at its 00:00, so a total over a panel's range
[from, to) is `sum_over_time(m[${__range_ms}ms] offset 1ms)` evaluated at `to`: the window
(from - 1 ms, to - 1 ms] holds every interval that starts in [from, to), the one starting
at `from` included. Graphs of interval series step the same way, [t - step, t): an
interval shows at its end (as Flux's aggregateWindow shows it), one starting at `to` not
at all; as in every Prometheus graph, the point at the range's start holds the step
before it. A demand sample is stamped at the end of its window, and a window belongs to
the day and month it ends in, so (t - step, t] is already right for it. Daily bars step by
1d, which Grafana aligns to midnight of the dashboard's time zone (energy.timezone); the
bar at day D sums [D, D + 1d) (`[1d] offset -86399999ms`).

MetricsQL beyond PromQL, where PromQL has no way: `tlast_over_time` (time of the newest
reading), `count_eq_over_time` (not-good readings by reason class), `label_set`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.ingest.schema import REASON_CODES, REASON_EXCEPTION_BASE, REASON_OTHER

RANGE = "${__range_ms}ms"  # the panel's whole range, to the millisecond
STEP = "$__interval"  # one graph step
DAY_MS = 86_400_000
# Modbus exception codes 01-0B (reason classes 101-111): the ones a device can answer.
MODBUS_EXCEPTIONS = range(1, 12)


@dataclass(frozen=True, slots=True)
class Target:
    """One Grafana target of a Prometheus data source."""

    expr: str
    instant: bool = False  # one value per series at the range's end (stat, bar gauge, table)
    legend: str = ""
    table: bool = False  # format "table" (one row per series)
    interval: str | None = None  # the smallest step ("1d" for daily bars)


def _regex(names: Iterable[str]) -> str:
    """A label regex matching exactly `names` (point and device names: [A-Za-z0-9_.-])."""
    return "|".join(n.replace(".", "\\\\.") for n in names) or "^$"


def _labels(**matchers: str) -> str:
    """`{site="$site",...}` from label=value (`=~` for a value starting with `~`)."""
    parts = []
    for label, value in matchers.items():
        op = "=~" if value.startswith("~") else "="
        parts.append(f'{label}{op}"{value.removeprefix("~")}"')
    return "{" + ",".join(parts) + "}"


class PromQueries:
    """The dashboards' queries over one measurement's metrics."""

    def __init__(self, measurement: str) -> None:
        self.value = f"{measurement}_value"
        self.quality = f"{measurement}_quality"
        self.reason = f"{measurement}_reason"
        self.alarm_state = f"{measurement}_alarm_state"

    def _selected(self, metric: str, points: Sequence[str] | None = None, *, also: str = "") -> str:
        """The metric of the selected site and devices (and points); `also` adds matchers."""
        sel = _labels(site="$site", device="~${device}")
        if points is not None:
            sel = sel[:-1] + f',point=~"{_regex(points)}"}}'
        return metric + (sel[:-1] + f",{also}}}" if also else sel)

    # -- time series (range queries, one point per step) --------------------------------

    def series(self, points: Sequence[str]) -> Target:
        """A value per device and point, averaged per step ([t - step, t): an interval's
        value shows at its end, and one that starts at the range's end is not shown)."""
        sel = self._selected(self.value, points)
        return Target(
            f"avg by (device, point) (avg_over_time({sel}[{STEP}] offset 1ms))",
            legend="{{device}} {{point}}",
        )

    def energy_series(self, points: Sequence[str]) -> Target:
        """Interval energy per device and point, summed per step (a step never halves it)."""
        sel = self._selected(self.value, points)
        return Target(
            f"sum by (device, point) (sum_over_time({sel}[{STEP}] offset 1ms))",
            legend="{{device}} {{point}}",
        )

    def power(self, points: Sequence[str]) -> Target:
        """Active power in kW whatever the meter reports (a W series is divided by 1000)."""
        kw = self._selected(self.value, points, also='unit="kW"')
        w = self._selected(self.value, points, also='unit="W"')
        by = "avg by (device, point)"
        return Target(
            f"{by} (avg_over_time({kw}[{STEP}])) or ({by} (avg_over_time({w}[{STEP}])) / 1000)",
            legend="{{device}} {{point}}",
        )

    def device_series(self, points: Sequence[str], device: str) -> Target:
        """The highest value per step of one device (`${contract}`), or of every selected
        device but it when `device` starts with `!`: a peak of demand is never averaged out."""
        op, name = ("!=", device[1:]) if device.startswith("!") else ("=", device)
        sel = self._selected(self.value, points, also=f'device{op}"{name}"')
        return Target(
            f"max by (device, point) (max_over_time({sel}[{STEP}]))", legend="{{device}} {{point}}"
        )

    def peaks(self, points: Sequence[str]) -> Target:
        """The highest value per device and point and step (demand)."""
        sel = self._selected(self.value, points)
        return Target(
            f"max by (device, point) (max_over_time({sel}[{STEP}]))", legend="{{device}} {{point}}"
        )

    def gateway_series(self, points: Sequence[str]) -> Target:
        """The gateways' own health series (device `_gateway`) of the selected site."""
        sel = self.value + _labels(site="$site", device="_gateway", point="~" + _regex(points))
        return Target(
            f"max by (gateway, point) (max_over_time({sel}[{STEP}]))",
            legend="{{gateway}} {{point}}",
        )

    def bad_points(self) -> Target:
        """Readings per device that were not good, per step (a reason is stored only then)."""
        sel = self._selected(self.reason)
        return Target(f"sum by (device) (count_over_time({sel}[{STEP}]))", legend="{{device}}")

    def readings_rate(self) -> Target:
        """Readings stored per step per gateway."""
        sel = self._selected(self.quality)
        return Target(f"sum by (gateway) (count_over_time({sel}[{STEP}]))", legend="{{gateway}}")

    def device_state(self) -> Target:
        """The worst quality per device and step: 0 good, 1 uncertain, 2 bad."""
        sel = self._selected(self.quality)
        return Target(f"max by (device) (max_over_time({sel}[{STEP}]))", legend="{{device}}")

    def daily(self, points: Sequence[str]) -> Target:
        """Sums per local day and point of the selected devices, for bars."""
        return self._daily(self._selected(self.value, points))

    def node_daily(self, points: Sequence[str]) -> Target:
        """The selected node's own series summed per local day and point, for bars."""
        return self._daily(self._node(points))

    def _daily(self, sel: str) -> Target:
        # Stepping by 1d from local midnight (Grafana aligns steps in the dashboard's zone),
        # the point at day D holds [D, D + 1d): (t - 1 ms, t + 1d - 1 ms].
        return Target(
            f"sum by (point) (sum_over_time({sel}[1d] offset -{DAY_MS - 1}ms))",
            legend="{{point}}",
            interval="1d",
        )

    # -- one value per series over the panel's range (instant queries at its end) ------------

    def _node(self, points: Sequence[str]) -> str:
        return self.value + _labels(site="$site", device="${area:text}", point="~" + _regex(points))

    def total_by(self, points: Sequence[str], column: str) -> Target:
        """The sum in range of the selected devices' points, one value per `column`."""
        sel = self._selected(self.value, points)
        return Target(
            f"sum by ({column}) (sum_over_time({sel}[{RANGE}] offset 1ms))",
            instant=True,
            legend=f"{{{{{column}}}}}",
        )

    def node_total(self, points: Sequence[str], column: str) -> Target:
        """The sum in range of the selected node's own series (`${area:text}`), per `column`."""
        return Target(
            f"sum by ({column}) (sum_over_time({self._node(points)}[{RANGE}] offset 1ms))",
            instant=True,
            legend=f"{{{{{column}}}}}",
        )

    def children(self, points: Sequence[str], tree: Sequence[tuple[str, str]]) -> Target:
        """The sum in range per series one level below the selected node: `tree` maps each
        node (and the site) to the `|`-joined names of its children. The edges are constant
        series {device, parent}; the ones whose parent is `${area:text}` pick the sums."""
        edges = " or ".join(
            f'label_replace(label_replace(vector(1), "device", "{child}", "", ""), '
            f'"parent", "{node}", "", "")'
            for node, kids in tree
            for child in kids.split("|")
            if child
        )
        selected = 'label_replace(vector(1), "parent", "${area:text}", "", "")'
        sel = self.value + _labels(site="$site", point="~" + _regex(points))
        sums = f"sum by (device) (sum_over_time({sel}[{RANGE}] offset 1ms))"
        return Target(
            f"sort_desc({sums} * on (device) (({edges}) and on (parent) {selected}))",
            instant=True,
            legend="{{device}}",
        )

    def manual_entries(self) -> Target:
        """Manual entries (points `manual.*`) of the site in range per device, point and
        unit: their devices need not be configured ones, so no device filter."""
        sel = self.value + _labels(site="$site", point="~manual\\\\..*")
        return Target(
            f"sum by (device, point, unit) (sum_over_time({sel}[{RANGE}] offset 1ms))",
            instant=True,
            table=True,
        )

    def reasons(self) -> Target:
        """Not-good readings in range by device and reason class (one term per class the
        ingest writes: REASON_CODES, 99 other, 101-111 Modbus exceptions)."""
        sel = self._selected(self.reason)
        codes = [
            *REASON_CODES.values(),
            REASON_OTHER,
            *(REASON_EXCEPTION_BASE + c for c in MODBUS_EXCEPTIONS),
        ]
        terms = " or ".join(
            f"label_set(sum by (device) (count_eq_over_time({sel}[{RANGE}] offset 1ms, {c})) > 0, "
            f'"reason", "{c}")'
            for c in sorted(codes)
        )
        return Target(terms, instant=True, table=True)

    def last_seen(self) -> Target:
        """Seconds since the newest reading per gateway and device, at the range's end."""
        sel = self._selected(self.quality)
        return Target(
            f"time() - max by (gateway, device) (tlast_over_time({sel}[{RANGE}]))",
            instant=True,
            table=True,
        )

    def _latest_alarm_states(self) -> str:
        """The latest state of every alarm of the selected site and devices (30 days back)."""
        return f"last_over_time({self._selected(self.alarm_state)}[30d])"

    def alarm_list(self) -> Target:
        """Every alarm whose latest transition left it not normal."""
        return Target(f"{self._latest_alarm_states()} > 0", instant=True, table=True)

    def alarms_by_priority(self) -> Target:
        """How many alarms are active (acknowledged or not), per priority."""
        return Target(
            f"count by (priority) ({self._latest_alarm_states()} >= 1 <= 2)",
            instant=True,
            legend="priority {{priority}}",
        )

    # -- template variables -------------------------------------------------------------

    def site_values(self) -> str:
        """The `site` variable: site label values."""
        return f"label_values({self.value}, site)"

    def device_values(self) -> str:
        """The `device` variable: devices of the site within the area."""
        return f"label_values({self.value}{_labels(site='$site', device='~${area}')}, device)"

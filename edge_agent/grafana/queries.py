"""Flux queries of the generated Grafana dashboards, over the ingest's schema.

The ingest writes one series per point (README "Ingest and storage"): measurement `edge`
(`ingest.measurement`), tags site/gateway/device/point/unit/profile, fields value/quality/
reason. Every query here filters on those names only; tests/grafana/test_grafana_dashboards.py
checks each generated query against what a real ingest run wrote.

Template variables: `datasource`, `site` (one), `area` (custom: its text is the node, the
site for the whole site; its value a regex of the node's meters and nodes), `device`
(multi, restricted by area). Totals read the one series of `${area:text}` (a hierarchy
node or the site, as the energy stage publishes it), never a sum over a node and the
meters below it; breakdowns read the level below (`children`).
"""

from __future__ import annotations

from collections.abc import Sequence


def _points(points: Sequence[str]) -> str:
    return " or ".join(f'r.point == "{p}"' for p in points) or "false"


def _field(bucket: str, measurement: str, field: str) -> list[str]:
    """Rows of one field in the dashboard's range (every query starts so)."""
    return [
        f'from(bucket: "{bucket}")',
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")',
    ]


def base(bucket: str, measurement: str, field: str, points: Sequence[str] | None = None) -> str:
    """Rows of one field for the selected site and devices, in the dashboard's range."""
    lines = [
        *_field(bucket, measurement, field),
        '  |> filter(fn: (r) => r.site == "${site}" and r.device =~ /^${device:regex}$/)',
    ]
    if points is not None:
        lines.append(f"  |> filter(fn: (r) => {_points(points)})")
    return "\n".join(lines)


def series(bucket: str, measurement: str, points: Sequence[str]) -> str:
    """A time series per device and point, averaged per Grafana interval."""
    return (
        base(bucket, measurement, "value", points)
        + '\n  |> group(columns: ["device", "point"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"
    )


def gateway_series(bucket: str, measurement: str, points: Sequence[str]) -> str:
    """The gateways' own health series (device `_gateway`) of the selected site."""
    return "\n".join(
        [
            *_field(bucket, measurement, "value"),
            '  |> filter(fn: (r) => r.site == "${site}" and r.device == "_gateway")',
            f"  |> filter(fn: (r) => {_points(points)})",
            '  |> group(columns: ["gateway", "point"])',
            "  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)",
        ]
    )


def _latest_alarm_states(bucket: str, measurement: str) -> list[str]:
    """The latest state of every alarm of the selected site and devices (30 days back)."""
    return [
        f'from(bucket: "{bucket}")',
        "  |> range(start: -30d)",
        f'  |> filter(fn: (r) => r._measurement == "{measurement}_alarm" and r._field == "state")',
        '  |> filter(fn: (r) => r.site == "${site}" and r.device =~ /^${device:regex}$/)',
        '  |> group(columns: ["id"])',
        "  |> last()",
    ]


def alarm_list(bucket: str, measurement: str) -> str:
    """Every alarm whose latest transition left it not normal."""
    return "\n".join(
        [
            *_latest_alarm_states(bucket, measurement),
            "  |> filter(fn: (r) => r._value > 0)",
            '  |> group(columns: ["priority"])',
        ]
    )


def alarms_by_priority(bucket: str, measurement: str) -> str:
    """How many alarms are active (acknowledged or not), per priority."""
    return "\n".join(
        [
            *_latest_alarm_states(bucket, measurement),
            "  |> filter(fn: (r) => r._value == 1 or r._value == 2)",
            '  |> group(columns: ["priority"])',
            "  |> count()",
        ]
    )


def total_by(bucket: str, measurement: str, points: Sequence[str], column: str) -> str:
    """The sum of the values in range, one row per `column` (e.g. point, device)."""
    return (
        base(bucket, measurement, "value", points)
        + f'\n  |> group(columns: ["{column}"])'
        + "\n  |> sum()"
    )


def top(bucket: str, measurement: str, points: Sequence[str], n: int = 10) -> str:
    """The `n` largest sums per device in range."""
    return (
        total_by(bucket, measurement, points, "device")
        + "\n  |> group()"
        + f'\n  |> top(n: {n}, columns: ["_value"])'
    )


def daily(bucket: str, measurement: str, points: Sequence[str], zone: str) -> str:
    """Sums per local day (`zone`, the energy stage's clock) and point, for bars."""
    return (
        base(bucket, measurement, "value", points)
        + '\n  |> group(columns: ["point"])'
        + "\n  |> aggregateWindow(every: 1d, fn: sum, createEmpty: false,"
        + f' location: {{zone: "{zone}", offset: 0s}})'
    )


def bad_points(bucket: str, measurement: str) -> str:
    """Readings per device that were not good (quality > 0), per Grafana interval."""
    return (
        base(bucket, measurement, "quality")
        + "\n  |> filter(fn: (r) => r._value > 0)"
        + '\n  |> group(columns: ["device"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)"
    )


def reasons(bucket: str, measurement: str) -> str:
    """Not-good readings in range by device and reason class."""
    return (
        base(bucket, measurement, "reason")
        + '\n  |> group(columns: ["device", "_value"])'
        + '\n  |> count(column: "_field")'
        + "\n  |> group()"
    )


def last_seen(bucket: str, measurement: str) -> str:
    """Seconds since the newest reading per gateway and device (a stalled uplink grows)."""
    return (
        base(bucket, measurement, "quality")
        + '\n  |> group(columns: ["gateway", "device"])'
        + "\n  |> last()"
        + "\n  |> map(fn: (r) => ({r with _value: float(v: uint(v: now()) - uint(v: r._time))"
        + " / 1000000000.0}))"
        + "\n  |> group()"
    )


def readings_rate(bucket: str, measurement: str) -> str:
    """Readings stored per Grafana interval per gateway."""
    return (
        base(bucket, measurement, "quality")
        + '\n  |> group(columns: ["gateway"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: true)"
    )


def device_state(bucket: str, measurement: str) -> str:
    """The last quality per device: 0 up, 2 the device's readings are bad (down)."""
    return (
        base(bucket, measurement, "quality")
        + '\n  |> group(columns: ["device"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)"
    )


def manual_entries(bucket: str, measurement: str) -> str:
    """Manual entries (手工填报, points `manual.*`) of the site in range, summed per device,
    point and unit: their devices need not be configured ones, so no device filter."""
    return "\n".join(
        [
            *_field(bucket, measurement, "value"),
            '  |> filter(fn: (r) => r.site == "${site}" and r.point =~ /^manual\\./)',
            '  |> group(columns: ["device", "point", "unit"])',
            "  |> sum()",
            "  |> group()",
        ]
    )


def tag_values(bucket: str, tag: str, predicate: str) -> str:
    """A variable's values: the tag's values written in the last 30 days."""
    return (
        'import "influxdata/influxdb/schema"\n'
        f'schema.tagValues(bucket: "{bucket}", tag: "{tag}", '
        f"predicate: (r) => {predicate}, start: -30d)"
    )


def node_total(bucket: str, measurement: str, points: Sequence[str], column: str) -> str:
    """The sum in range of the selected node's own series (`${area:text}`), per `column`."""
    return "\n".join(
        [
            *_field(bucket, measurement, "value"),
            '  |> filter(fn: (r) => r.site == "${site}" and r.device == "${area:text}")',
            f"  |> filter(fn: (r) => {_points(points)})",
            f'  |> group(columns: ["{column}"])',
            "  |> sum()",
        ]
    )


def node_daily(bucket: str, measurement: str, points: Sequence[str], zone: str) -> str:
    """The selected node's own series summed per local day and point, for bars."""
    return "\n".join(
        [
            *_field(bucket, measurement, "value"),
            '  |> filter(fn: (r) => r.site == "${site}" and r.device == "${area:text}")',
            f"  |> filter(fn: (r) => {_points(points)})",
            '  |> group(columns: ["point"])',
            "  |> aggregateWindow(every: 1d, fn: sum, createEmpty: false,"
            f' location: {{zone: "{zone}", offset: 0s}})',
        ]
    )


def children(
    bucket: str, measurement: str, points: Sequence[str], tree: Sequence[tuple[str, str]]
) -> str:
    """The sum in range per series one level below the selected node: `tree` maps each
    node (and the site) to the regex of its children (nodes, or its meters)."""
    pairs = ", ".join(f'"{node}": "{regex}"' for node, regex in tree)
    return "\n".join(
        [
            'import "dict"',
            'import "regexp"',
            f"below = [{pairs}]",
            'kids = regexp.compile(v: "^(" + dict.get(dict: below, key: "${area:text}",'
            ' default: "") + ")$")',
            *_field(bucket, measurement, "value"),
            '  |> filter(fn: (r) => r.site == "${site}" and r.device =~ kids)',
            f"  |> filter(fn: (r) => {_points(points)})",
            '  |> group(columns: ["device"])',
            "  |> sum()",
            "  |> group()",
            '  |> sort(columns: ["_value"], desc: true)',
        ]
    )


def power(bucket: str, measurement: str, points: Sequence[str]) -> str:
    """Active power in kW whatever the meter reports (a W series is divided by 1000)."""
    return (
        base(bucket, measurement, "value", points)
        + '\n  |> map(fn: (r) => ({r with _value: if r.unit == "W" then r._value / 1000.0'
        + " else r._value}))"
        + '\n  |> group(columns: ["device", "point"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"
    )


def device_series(bucket: str, measurement: str, points: Sequence[str], device: str) -> str:
    """`series` of one device (given as a variable reference, e.g. `${contract}`), or of
    every selected device but it when `device` starts with `!`."""
    op, name = ("!=", device[1:]) if device.startswith("!") else ("==", device)
    return (
        base(bucket, measurement, "value", points)
        + f'\n  |> filter(fn: (r) => r.device {op} "{name}")'
        + '\n  |> group(columns: ["device", "point"])'
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"
    )


class FluxQueries:
    """The functions above bound to one bucket, measurement and time zone: the interface
    the dashboards build panels through (grafana_promql.PromQueries is the other)."""

    def __init__(self, bucket: str, measurement: str, timezone: str) -> None:
        self.bucket, self.measurement, self.timezone = bucket, measurement, timezone

    def series(self, points: Sequence[str]) -> str:
        return series(self.bucket, self.measurement, points)

    def energy_series(self, points: Sequence[str]) -> str:
        return series(self.bucket, self.measurement, points)

    def power(self, points: Sequence[str]) -> str:
        return power(self.bucket, self.measurement, points)

    def device_series(self, points: Sequence[str], device: str) -> str:
        return device_series(self.bucket, self.measurement, points, device)

    def peaks(self, points: Sequence[str]) -> str:
        return series(self.bucket, self.measurement, points)

    def gateway_series(self, points: Sequence[str]) -> str:
        return gateway_series(self.bucket, self.measurement, points)

    def bad_points(self) -> str:
        return bad_points(self.bucket, self.measurement)

    def readings_rate(self) -> str:
        return readings_rate(self.bucket, self.measurement)

    def device_state(self) -> str:
        return device_state(self.bucket, self.measurement)

    def daily(self, points: Sequence[str]) -> str:
        return daily(self.bucket, self.measurement, points, self.timezone)

    def node_daily(self, points: Sequence[str]) -> str:
        return node_daily(self.bucket, self.measurement, points, self.timezone)

    def total_by(self, points: Sequence[str], column: str) -> str:
        return total_by(self.bucket, self.measurement, points, column)

    def node_total(self, points: Sequence[str], column: str) -> str:
        return node_total(self.bucket, self.measurement, points, column)

    def children(self, points: Sequence[str], tree: Sequence[tuple[str, str]]) -> str:
        return children(self.bucket, self.measurement, points, tree)

    def manual_entries(self) -> str:
        return manual_entries(self.bucket, self.measurement)

    def reasons(self) -> str:
        return reasons(self.bucket, self.measurement)

    def last_seen(self) -> str:
        return last_seen(self.bucket, self.measurement)

    def alarm_list(self) -> str:
        return alarm_list(self.bucket, self.measurement)

    def alarms_by_priority(self) -> str:
        return alarms_by_priority(self.bucket, self.measurement)

    def site_values(self) -> str:
        return tag_values(self.bucket, "site", f'r._measurement == "{self.measurement}"')

    def device_values(self) -> str:
        m = f'r._measurement == "{self.measurement}"'
        return tag_values(
            self.bucket, "device", f'{m} and r.site == "${{site}}" and r.device =~ /^(${{area}})$/'
        )

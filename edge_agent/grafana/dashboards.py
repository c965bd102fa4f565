"""Grafana provisioning generated from a site config: a data source and five dashboards.

    edge-agent grafana generate site.yaml [--out deploy/grafana] [--datasource prometheus]

writes `datasources/edge.yaml` (InfluxDB 2, Flux, token from $INFLUX_TOKEN; or, with
`--datasource prometheus`, a Prometheus-compatible store such as VictoriaMetrics, PromQL),
`dashboards/edge-agent.yaml` (a file provider) and `dashboards/edge-agent/*.json`:
energy overview, meter, demand, data quality, gateway health. Point names come from the
devices' profiles and `energy:` counters, the contract demand and time zone from the
`energy:` block, the areas from its hierarchy; panels are per template variable (site,
area, device), never one per device. Queries: edge_agent/grafana/queries.py (Flux) and
edge_agent/grafana/promql.py (PromQL), the same panels through one interface (`Queries`).

Numbers that add up: a total reads the one series of the selected node (the site or a
hierarchy node, as the energy stage publishes it), a breakdown the level below it, so a
node is never added to its own children. Every panel has a Grafana unit id: power in kW
(W series divided by 1000), energy per kind (kWh `kwatth`, m3, t `masst`, kvarh and tce as
suffixes). The data source is the dashboard variable `datasource`; `__inputs` names it, so
a dashboard imports through Grafana's UI as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from edge_agent.config.site import LoadedConfig
from edge_agent.energy.demand import contract_meter
from edge_agent.energy.points import energy_points
from edge_agent.grafana.promql import PromQueries, Target
from edge_agent.grafana.queries import FluxQueries

SCHEMA_VERSION = 39  # Grafana 11.x dashboards
DATASOURCE_UID = "edge-influxdb"
FOLDER = "Edge agent"
# On every generated dashboard since the first version: `grafana push --prune` deletes only
# dashboards carrying it, so renaming it would strand what older versions pushed.
TAG = "edge-agent"
PERIODS = ("sharp", "peak", "flat", "valley")
POWER_UNITS = {"W": "watt", "kW": "kwatt"}
DS_INPUT = "DS_EDGE"  # the data source asked for on import (`__inputs`)
DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
# Grafana unit ids of the energy stage's canonical units (no kvarh id: a suffix).
ENERGY_UNITS = {"kWh": "kwatth", "kvarh": "suffix: kvarh", "m3": "m3", "t": "masst"}
TCE_UNIT = "suffix: tce"  # no Grafana unit for tonnes of standard coal
Query = str | Target  # Flux text, or a Prometheus target


@dataclass(frozen=True)
class Store:
    """The kind of data source the dashboards query, as Grafana names it."""

    plugin: str  # Grafana's data source type
    name: str
    label: str  # what "Import dashboard" asks for
    uid: str  # of the provisioned data source
    time_field: str  # the time column of its answers


STORES = {
    "influxdb": Store(
        "influxdb", "InfluxDB", "InfluxDB (the ingest's bucket)", DATASOURCE_UID, "_time"
    ),
    "prometheus": Store(
        "prometheus",
        "Prometheus",
        "Prometheus-compatible store the ingest writes (VictoriaMetrics)",
        "edge-prometheus",
        "Time",
    ),
}


class Queries(Protocol):
    """A query language's panel queries (grafana_queries.FluxQueries, grafana_promql)."""

    def series(self, points: Sequence[str]) -> Query: ...
    def energy_series(self, points: Sequence[str]) -> Query: ...
    def power(self, points: Sequence[str]) -> Query: ...
    def device_series(self, points: Sequence[str], device: str) -> Query: ...
    def peaks(self, points: Sequence[str]) -> Query: ...
    def gateway_series(self, points: Sequence[str]) -> Query: ...
    def bad_points(self) -> Query: ...
    def readings_rate(self) -> Query: ...
    def device_state(self) -> Query: ...
    def daily(self, points: Sequence[str]) -> Query: ...
    def node_daily(self, points: Sequence[str]) -> Query: ...
    def total_by(self, points: Sequence[str], column: str) -> Query: ...
    def node_total(self, points: Sequence[str], column: str) -> Query: ...
    def children(self, points: Sequence[str], tree: Sequence[tuple[str, str]]) -> Query: ...
    def manual_entries(self) -> Query: ...
    def reasons(self) -> Query: ...
    def last_seen(self) -> Query: ...
    def alarm_list(self) -> Query: ...
    def alarms_by_priority(self) -> Query: ...
    def site_values(self) -> str: ...
    def device_values(self) -> str: ...


@dataclass(frozen=True)
class Catalog:
    """What the site's devices write, by role, as point names."""

    site: str
    bucket: str
    measurement: str
    timezone: str
    contract_kw: float | None
    import_counters: tuple[str, ...]  # electricity import active-energy counters
    counters: tuple[str, ...]  # every energy counter
    consumption: tuple[str, ...]  # import (or undirected) counters with a coal factor
    electricity_counters: tuple[str, ...]
    voltage: tuple[str, ...]
    current: tuple[str, ...]
    power: tuple[str, ...]
    pf: tuple[str, ...]
    areas: tuple[tuple[str, tuple[str, ...]], ...]  # area -> meters and nodes below it
    hierarchy: bool  # node series exist (the site's and each node's)
    tree: tuple[tuple[str, str], ...]  # site or node -> regex of the level below it
    kinds: tuple[str, ...]  # consumption kinds with a coal factor (node series names)
    contract_meter: str | None
    by_unit: tuple[tuple[str, tuple[str, ...]], ...]  # canonical unit -> its counters


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names)))


def catalog(loaded: LoadedConfig) -> Catalog:
    """Collect point names by role from the config and its profiles."""
    site = loaded.site
    points: list[Any] = []
    for setup in loaded.devices:
        if not setup.device.enabled:
            continue
        profile_points = setup.profile.points if setup.profile is not None else None
        points.extend(profile_points or setup.device.points or ())
    counters = [p for p in energy_points(loaded.devices) if p.options.role == "counter"]
    imports = [
        p.point
        for p in counters
        if p.options.kind == "electricity" and p.options.direction in (None, "import")
    ]
    energy = site.energy
    nodes = energy.hierarchy
    children: dict[str, list[str]] = {}
    for node in nodes:
        if node.parent:
            children.setdefault(node.parent, []).append(node.name)

    def below(name: str) -> list[str]:
        node = next(n for n in nodes if n.name == name)
        found = [name, *node.meters]
        for child in children.get(name, []):
            found += below(child)
        return found

    areas = tuple(
        (n.name, _sorted(below(n.name))) for n in nodes if n.level == "area" and not n.parent
    )
    meters = sorted({p.device for p in counters})
    tree = [(site.site, "|".join(sorted(n.name for n in nodes if not n.parent) or meters))]
    for node in nodes:
        kids = children.get(node.name) or [r.split(".", 1)[0] for r in node.meters]
        tree.append((node.name, "|".join(sorted(kids))))
    by_unit: dict[str, list[str]] = {}
    for p in counters:
        by_unit.setdefault(p.unit, []).append(p.point)
    influx = site.influx
    return Catalog(
        site=site.site,
        bucket=influx.bucket if influx is not None else "edge",
        measurement=site.ingest.measurement,
        timezone=energy.timezone,
        contract_kw=energy.contract_demand_kw,
        import_counters=_sorted(imports),
        counters=_sorted(p.point for p in counters),
        consumption=_sorted(
            p.point
            for p in counters
            if p.options.kind != "reactive" and p.options.direction in (None, "import")
        ),
        electricity_counters=_sorted(p.point for p in counters if p.options.kind == "electricity"),
        voltage=_sorted(p.name for p in points if p.unit == "V"),
        current=_sorted(p.name for p in points if p.unit == "A"),
        power=_sorted(p.name for p in points if p.unit in POWER_UNITS and p.energy is None),
        pf=_sorted(
            p.name for p in points if p.name.startswith("pf") or p.name.startswith("power_factor")
        ),
        areas=areas,
        hierarchy=bool(nodes),
        tree=tuple(tree),
        kinds=_sorted(
            p.options.kind
            for p in counters
            if p.options.kind != "reactive" and p.options.direction in (None, "import")
        ),
        contract_meter=contract_meter(energy, [p.info for p in counters]),
        by_unit=tuple((u, _sorted(names)) for u, names in sorted(by_unit.items())),
    )


class _Board:
    """Panels laid out two per row on Grafana's 24-column grid."""

    def __init__(self, cat: Catalog, store: Store, queries: Queries) -> None:
        self.cat = cat
        self.store = store
        self.q = queries
        self.source = {"type": store.plugin, "uid": "${datasource}"}
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0

    def panel(
        self,
        title: str,
        kind: str,
        queries: Sequence[Query],
        *,
        unit: str = "none",
        width: int = 12,
        height: int = 8,
        time_from: str | None = None,
        options: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + height
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "datasource": self.source,
            "gridPos": {"x": self._x, "y": self._y, "w": width, "h": height},
            "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
            "options": options or {},
            "targets": [self._target(chr(ord("A") + i), q) for i, q in enumerate(queries)],
        }
        if time_from is not None:
            panel["timeFrom"] = time_from  # "now/d": today, whatever the picked range
        if kind == "barchart" and self.store.plugin == "prometheus":
            # One frame per series from Prometheus; a bar chart draws one frame.
            join = {"byField": self.store.time_field, "mode": "outer"}
            panel["transformations"] = [{"id": "joinByField", "options": join}]
        self.panels.append(panel)
        self._x += width

    def _target(self, ref: str, query: Query) -> dict[str, Any]:
        if isinstance(query, str):
            return {"refId": ref, "datasource": self.source, "query": query}
        target = {
            "refId": ref,
            "datasource": self.source,
            "editorMode": "code",
            "expr": query.expr,
            "instant": query.instant,
            "range": not query.instant,
            "legendFormat": query.legend or "__auto",
            "format": "table" if query.table else "time_series",
        }
        if query.interval is not None:
            target["interval"] = query.interval
        return target

    def _variables(self) -> list[dict[str, Any]]:
        cat, ds = self.cat, self.source
        # The first option is the whole site: its text is the site, whose series the totals
        # read.
        area_options = [(cat.site, ".*")] + [
            (name, "|".join(members)) for name, members in cat.areas
        ]
        return [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": self.store.plugin,
                # Replaced by the data source picked on import; provisioned as is, Grafana
                # falls back to the source of that type there is.
                "current": {"text": f"${{{DS_INPUT}}}", "value": f"${{{DS_INPUT}}}"},
                "hide": 0,
            },
            {
                "name": "site",
                "label": "Site",
                "type": "query",
                "datasource": ds,
                "query": self.q.site_values(),
                "definition": "site tag values",
                "refresh": 1,
                "current": {"text": cat.site, "value": cat.site},
                "multi": False,
                "includeAll": False,
            },
            {
                "name": "area",
                "label": "Area",
                "type": "custom",
                # "name : regex" pairs: the area shows by name, filters by its meters and nodes.
                "query": ", ".join(f"{name} : {regex}" for name, regex in area_options),
                "current": {"text": cat.site, "value": ".*"},
                "options": [
                    {"text": name, "value": regex, "selected": i == 0}
                    for i, (name, regex) in enumerate(area_options)
                ],
                "multi": False,
                "includeAll": False,
            },
            {
                "name": "device",
                "label": "Device",
                "type": "query",
                "datasource": ds,
                "query": self.q.device_values(),
                "definition": "device tag values of the site and area",
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "current": {"text": "All", "value": "$__all"},
            },
        ]

    def dashboard(
        self,
        uid: str,
        title: str,
        *,
        time_from: str = "now-24h",
        constants: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        return {
            # Grafana's "export for sharing externally" shape: import asks for the source.
            "__inputs": [
                {
                    "name": DS_INPUT,
                    "label": self.store.label,
                    "description": "",
                    "type": "datasource",
                    "pluginId": self.store.plugin,
                    "pluginName": self.store.name,
                }
            ],
            "__requires": [
                {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.0.0"},
                {
                    "type": "datasource",
                    "id": self.store.plugin,
                    "name": self.store.name,
                    "version": "1.0.0",
                },
            ],
            "uid": uid,
            "title": title,
            "tags": [TAG, self.cat.site],
            "timezone": self.cat.timezone,  # days and months on the energy stage's clock
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "refresh": "1m",
            "time": {"from": time_from, "to": "now"},
            "templating": {"list": self._variables() + _constants(constants)},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def _constants(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Hidden constants: configured names a query needs (never typed into the query)."""
    return [
        {
            "name": name,
            "type": "constant",
            "hide": 2,
            "query": value,
            "current": {"text": value, "value": value},
        }
        for name, value in pairs
    ]


def _interval(counters: Sequence[str], suffix: str = "") -> list[str]:
    return [f"interval.{c}{suffix}" for c in counters]


def _energy_panels(b: _Board, cat: Catalog, *, title: str, **kwargs: Any) -> None:
    """Interval energy, one panel per unit (kWh and m3 never share an axis)."""
    for unit, counters in cat.by_unit:
        b.panel(
            f"{title} ({unit})",
            "timeseries",
            [b.q.energy_series(_interval(counters))],
            unit=ENERGY_UNITS.get(unit, f"suffix: {unit}"),
            width=24,
            options={"legend": {"displayMode": "table", "calcs": ["sum"]}},
            **kwargs,
        )


def overview(cat: Catalog, store: Store, queries: Queries) -> dict[str, Any]:
    """Plant energy overview: today and this month by TOU period, tce, CO2, the level below."""
    b = _Board(cat, store, queries)
    imp = cat.import_counters
    stat = {"reduceOptions": {"calcs": ["sum"], "values": False}, "textMode": "value_and_name"}
    if cat.hierarchy:  # the node's own series: never a node plus its meters
        by_period = [f"interval.electricity.{p}" for p in PERIODS]
        tce = [f"day.{k}.tce" for k in cat.kinds]

        def total(points: list[str], column: str) -> Query:
            return b.q.node_total(points, column)

        def per_day(points: list[str]) -> Query:
            return b.q.node_daily(points)

        co2 = ["day.electricity.co2"]
    else:  # no tree: the meters are all there is
        by_period = [f"interval.{c}.{p}" for c in imp for p in PERIODS]
        tce = [f"day.{c}.tce" for c in cat.consumption]
        co2 = [f"day.{c}.co2" for c in imp]

        def total(points: list[str], column: str) -> Query:
            return b.q.total_by(points, column)

        def per_day(points: list[str]) -> Query:
            return b.q.daily(points)

    for title, since in (("Today", "now/d"), ("This month", "now/M")):
        b.panel(
            f"{title}: electricity by TOU period",
            "stat",
            [total(by_period, "point")],
            unit="kwatth",
            time_from=since,
            options=stat,
        )
    b.panel(
        "This month: standard coal",
        "stat",
        [total(tce, "site")],
        unit=TCE_UNIT,
        time_from="now/M",
        options=stat,
        width=6,
    )
    b.panel(
        "This month: CO2 (purchased electricity)",
        "stat",
        [total(co2, "site")],
        unit="masst",
        time_from="now/M",
        options=stat,
        width=6,
    )
    b.panel(
        "Electricity by the level below (range)",
        "bargauge",
        [b.q.children(["interval.electricity", *_interval(imp)], cat.tree)],
        unit="kwatth",
        options={"orientation": "horizontal", "displayMode": "gradient"},
    )
    b.panel(
        "Daily electricity by TOU period",
        "barchart",
        [per_day(by_period)],
        unit="kwatth",
        width=24,
        options={"stacking": "normal", "xField": b.store.time_field},
    )
    _energy_panels(b, cat, title="Interval energy (per meter)")
    b.panel(
        "Manual entries (手工填报, range)",
        "table",
        [b.q.manual_entries()],
        width=24,
    )
    return b.dashboard("edge-energy-overview", f"{cat.site}: energy overview", time_from="now/M")


def meter(cat: Catalog, store: Store, queries: Queries) -> dict[str, Any]:
    """Per meter: voltage, current, power, power factor, energy."""
    b = _Board(cat, store, queries)
    b.panel("Voltage", "timeseries", [b.q.series(cat.voltage)], unit="volt")
    b.panel("Current", "timeseries", [b.q.series(cat.current)], unit="amp")
    b.panel("Active power", "timeseries", [b.q.power(cat.power)], unit="kwatt")
    b.panel(
        "Power factor",
        "timeseries",
        [b.q.series(cat.pf)],
        unit="none",
        defaults={"min": -1, "max": 1},
    )
    _energy_panels(b, cat, title="Interval energy", defaults={"custom": {"drawStyle": "bars"}})
    return b.dashboard("edge-meter", f"{cat.site}: meter")


def demand(cat: Catalog, store: Store, queries: Queries) -> dict[str, Any]:
    """Demand (15-min sliding) and the month's maximum, the contract demand drawn on the
    meter it is billed on only."""
    b = _Board(cat, store, queries)
    contract, on = cat.contract_kw, cat.contract_meter
    series = [f"demand.{c}" for c in cat.import_counters]
    maxima = [f"demand.{c}.month_max" for c in cat.import_counters]
    title = "Demand" + (f" (contract {contract:g} kW on {on})" if contract and on else "")
    for name, points in ((title, series), ("Maximum demand this month", maxima)):
        if contract is None or on is None:
            b.panel(name, "timeseries", [b.q.peaks(points)], unit="kwatt", width=24)
            continue
        b.panel(
            name,
            "timeseries",
            [
                b.q.device_series(points, "${contract}"),
                b.q.device_series(points, "!${contract}"),
            ],
            unit="kwatt",
            width=24,
        )
        # The contract demand, as a line, on the contract meter's series (query A) only.
        b.panels[-1]["fieldConfig"]["overrides"] = [
            {
                "matcher": {"id": "byFrameRefID", "options": "A"},
                "properties": [
                    {
                        "id": "thresholds",
                        "value": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "green", "value": None},
                                {"color": "red", "value": contract},
                            ],
                        },
                    },
                    {"id": "custom.thresholdsStyle", "value": {"mode": "line"}},
                ],
            }
        ]
    constants = [("contract", on)] if contract is not None and on is not None else []
    return b.dashboard("edge-demand", f"{cat.site}: demand", constants=constants)


def quality(cat: Catalog, store: Store, queries: Queries) -> dict[str, Any]:
    """Data quality and completeness: interval completeness, bad readings and their reasons."""
    b = _Board(cat, store, queries)
    threshold = {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": "red", "value": None}, {"color": "green", "value": 0.9}],
        },
        "min": 0,
        "max": 1,
    }
    b.panel(
        "Interval completeness (>= 0.90 required)",
        "timeseries",
        [b.q.series(_interval(cat.counters, ".completeness"))],
        unit="percentunit",
        width=24,
        defaults=threshold,
    )
    b.panel("Readings not good, per device", "timeseries", [b.q.bad_points()])
    b.panel("Not-good readings by reason class", "table", [b.q.reasons()])
    return b.dashboard("edge-quality", f"{cat.site}: data quality")


def gateway(cat: Catalog, store: Store, queries: Queries) -> dict[str, Any]:
    """Gateway health as the store sees it: data age, throughput, device state."""
    b = _Board(cat, store, queries)
    b.panel(
        "Seconds since the last reading (a stalled uplink or outbox grows)",
        "table",
        [b.q.last_seen()],
        unit="s",
        width=24,
        defaults={
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": 300}],
            }
        },
    )
    b.panel("Readings stored per interval, per gateway", "timeseries", [b.q.readings_rate()])
    b.panel(
        "Outbox depth (messages waiting for the broker)",
        "timeseries",
        [b.q.gateway_series(["outbox_messages"])],
    )
    b.panel(
        "Oldest message in the outbox",
        "timeseries",
        [b.q.gateway_series(["outbox_oldest_age_s"])],
        unit="s",
    )
    b.panel(
        "Device state (worst quality: 0 good, 1 uncertain, 2 bad)",
        "state-timeline",
        [b.q.device_state()],
        defaults={
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "good", "color": "green"},
                        "1": {"text": "uncertain", "color": "yellow"},
                        "2": {"text": "bad", "color": "red"},
                    },
                }
            ]
        },
    )
    # Alarm transitions as the ingest stores them (state codes: README "Alarm transitions").
    b.panel("Active alarms by priority", "bargauge", [b.q.alarms_by_priority()])
    b.panel(
        "Alarms not normal (latest transition; state 1 unacked, 2 acked, 3 cleared unacked, "
        "4 latched, 5 shelved, 6 out of service)",
        "table",
        [b.q.alarm_list()],
        width=24,
    )
    return b.dashboard("edge-gateway", f"{cat.site}: gateway health")


def dashboards(loaded: LoadedConfig, *, kind: str = "influxdb") -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON for every generated dashboard, querying a data source
    of `kind` (STORES: influxdb with Flux, prometheus with PromQL)."""
    cat = catalog(loaded)
    store = STORES[kind]
    queries: Queries = (
        PromQueries(cat.measurement)
        if kind == "prometheus"
        else FluxQueries(cat.bucket, cat.measurement, cat.timezone)
    )
    return {
        "energy-overview.json": overview(cat, store, queries),
        "meter.json": meter(cat, store, queries),
        "demand.json": demand(cat, store, queries),
        "data-quality.json": quality(cat, store, queries),
        "gateway-health.json": gateway(cat, store, queries),
    }


def datasource(
    loaded: LoadedConfig, *, url: str | None = None, kind: str = "influxdb"
) -> dict[str, Any]:
    """The data source; Grafana expands $INFLUX_TOKEN from its environment.

    InfluxDB: Flux, organisation and bucket from `influx:`. Prometheus: the same server
    (VictoriaMetrics answers PromQL where the ingest writes), the token sent as the ingest
    and the report send it, in an Authorization header."""
    influx = loaded.site.influx
    if kind == "prometheus":
        return {
            "name": "edge-prometheus",
            "uid": STORES[kind].uid,
            "type": "prometheus",
            "access": "proxy",
            "url": url or (influx.url if influx is not None else "http://victoriametrics:8428"),
            "jsonData": {"httpMethod": "POST", "httpHeaderName1": "Authorization"},
            "secureJsonData": {"httpHeaderValue1": "Token $INFLUX_TOKEN"},
        }
    return {
        "name": "edge-influxdb",
        "uid": DATASOURCE_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": url or (influx.url if influx is not None else "http://influxdb:8086"),
        "jsonData": {
            "version": "Flux",
            "organization": influx.org if influx is not None else "plant",
            "defaultBucket": influx.bucket if influx is not None else "edge",
        },
        "secureJsonData": {"token": "$INFLUX_TOKEN"},
    }


def write(
    loaded: LoadedConfig, out: Path, *, url: str | None = None, kind: str = "influxdb"
) -> list[Path]:
    """Write the provisioning tree under `out` for a data source of `kind`; the files
    written."""
    written: list[Path] = []

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    ds = {"apiVersion": 1, "datasources": [datasource(loaded, url=url, kind=kind)]}
    put(out / "datasources" / "edge.yaml", yaml.safe_dump(ds, sort_keys=False))
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "edge-agent",
                "folder": FOLDER,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "options": {"path": "/etc/grafana/provisioning/dashboards/edge-agent"},
            }
        ],
    }
    put(out / "dashboards" / "edge-agent.yaml", yaml.safe_dump(provider, sort_keys=False))
    for name, board in dashboards(loaded, kind=kind).items():
        text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        put(out / "dashboards" / "edge-agent" / name, text)
    return written

"""Grafana provisioning generated from a site config: a data source and five dashboards.

    edge-agent grafana generate site.yaml [--out deploy/grafana]

writes `datasources/edge.yaml` (InfluxDB 2, Flux, token from $INFLUX_TOKEN),
`dashboards/edge-agent.yaml` (a file provider) and `dashboards/edge-agent/*.json`:
energy overview, meter, demand, data quality, gateway health. Point names come from the
devices' profiles and `energy:` counters, the contract demand and time zone from the
`energy:` block, the areas from its hierarchy; panels are per template variable (site,
area, device), never one per device. Queries: edge_agent/grafana_queries.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_agent import grafana_queries as q
from edge_agent.config import LoadedConfig
from edge_agent.energy_points import energy_points

SCHEMA_VERSION = 39  # Grafana 11.x dashboards
DATASOURCE_UID = "edge-influxdb"
FOLDER = "Edge agent"
# On every generated dashboard since the first version: `grafana push --prune` deletes only
# dashboards carrying it, so renaming it would strand what older versions pushed.
TAG = "edge-agent"
PERIODS = ("sharp", "peak", "flat", "valley")
POWER_UNITS = {"W": "watt", "kW": "kwatt"}


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
        points.extend(profile_points or getattr(setup.device, "points", ()) or ())
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
        voltage=_sorted(p.name for p in points if getattr(p, "unit", None) == "V"),
        current=_sorted(p.name for p in points if getattr(p, "unit", None) == "A"),
        power=_sorted(
            p.name
            for p in points
            if getattr(p, "unit", None) in POWER_UNITS and getattr(p, "energy", None) is None
        ),
        pf=_sorted(
            p.name for p in points if p.name.startswith("pf") or p.name.startswith("power_factor")
        ),
        areas=areas,
    )


class _Board:
    """Panels laid out two per row on Grafana's 24-column grid."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0

    def panel(
        self,
        title: str,
        kind: str,
        queries: Sequence[str],
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
            "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
            "gridPos": {"x": self._x, "y": self._y, "w": width, "h": height},
            "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
            "options": options or {},
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
                    "query": text,
                }
                for i, text in enumerate(queries)
            ],
        }
        if time_from is not None:
            panel["timeFrom"] = time_from  # "now/d": today, whatever the picked range
        self.panels.append(panel)
        self._x += width

    def dashboard(self, uid: str, title: str, *, time_from: str = "now-24h") -> dict[str, Any]:
        return {
            "uid": uid,
            "title": title,
            "tags": [TAG, self.cat.site],
            "timezone": self.cat.timezone,  # days and months on the energy stage's clock
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "refresh": "1m",
            "time": {"from": time_from, "to": "now"},
            "templating": {"list": _variables(self.cat)},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def _variables(cat: Catalog) -> list[dict[str, Any]]:
    ds = {"type": "influxdb", "uid": DATASOURCE_UID}
    m = f'r._measurement == "{cat.measurement}"'
    area_options = [("All", ".*")] + [(name, "|".join(members)) for name, members in cat.areas]
    return [
        {
            "name": "site",
            "label": "Site",
            "type": "query",
            "datasource": ds,
            "query": q.tag_values(cat.bucket, "site", m),
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
            "current": {"text": "All", "value": ".*"},
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
            "query": q.tag_values(
                cat.bucket,
                "device",
                f'{m} and r.site == "${{site}}" and r.device =~ /^(${{area}})$/',
            ),
            "definition": "device tag values of the site and area",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "current": {"text": "All", "value": "$__all"},
        },
    ]


def _interval(counters: Sequence[str], suffix: str = "") -> list[str]:
    return [f"interval.{c}{suffix}" for c in counters]


def overview(cat: Catalog) -> dict[str, Any]:
    """Plant energy overview: today and this month by TOU period, tce, CO2, top consumers."""
    b = _Board(cat)
    bm, ms, imp = cat.bucket, cat.measurement, cat.import_counters
    by_period = [f"interval.{c}.{p}" for c in imp for p in PERIODS]
    stat = {"reduceOptions": {"calcs": ["sum"], "values": False}, "textMode": "value_and_name"}
    for title, since in (("Today", "now/d"), ("This month", "now/M")):
        b.panel(
            f"{title}: electricity by TOU period",
            "stat",
            [q.total_by(bm, ms, by_period, "point")],
            unit="kwatth",
            time_from=since,
            options=stat,
        )
    day_tce = [f"day.{c}.tce" for c in cat.consumption]
    day_co2 = [f"day.{c}.co2" for c in imp]
    b.panel(
        "This month: standard coal",
        "stat",
        [q.total_by(bm, ms, day_tce, "device")],
        unit="tce",
        time_from="now/M",
        options=stat,
        width=6,
    )
    b.panel(
        "This month: CO2 (purchased electricity)",
        "stat",
        [q.total_by(bm, ms, day_co2, "device")],
        unit="t",
        time_from="now/M",
        options=stat,
        width=6,
    )
    b.panel(
        "Top consumers (electricity, range)",
        "bargauge",
        [q.top(bm, ms, _interval(imp))],
        unit="kwatth",
        options={"orientation": "horizontal", "displayMode": "gradient"},
    )
    b.panel(
        "Daily electricity by TOU period",
        "barchart",
        [q.daily(bm, ms, by_period, cat.timezone)],
        unit="kwatth",
        width=24,
        options={"stacking": "normal", "xField": "_time"},
    )
    b.panel(
        "Interval energy (15 min)",
        "timeseries",
        [q.series(bm, ms, _interval(cat.counters))],
        width=24,
        options={"legend": {"displayMode": "table", "calcs": ["sum"]}},
    )
    b.panel(
        "Manual entries (手工填报, range)",
        "table",
        [q.manual_entries(bm, ms)],
        width=24,
    )
    return b.dashboard("edge-energy-overview", f"{cat.site}: energy overview", time_from="now/M")


def meter(cat: Catalog) -> dict[str, Any]:
    """Per meter: voltage, current, power, power factor, energy."""
    b = _Board(cat)
    bm, ms = cat.bucket, cat.measurement
    b.panel("Voltage", "timeseries", [q.series(bm, ms, cat.voltage)], unit="volt")
    b.panel("Current", "timeseries", [q.series(bm, ms, cat.current)], unit="amp")
    b.panel(
        "Active power (W or kW, as the meter reports)", "timeseries", [q.series(bm, ms, cat.power)]
    )
    b.panel(
        "Power factor", "timeseries", [q.series(bm, ms, cat.pf)], defaults={"min": -1, "max": 1}
    )
    b.panel(
        "Interval energy",
        "timeseries",
        [q.series(bm, ms, _interval(cat.counters))],
        width=24,
        options={"legend": {"displayMode": "table", "calcs": ["sum"]}},
        defaults={"custom": {"drawStyle": "bars"}},
    )
    return b.dashboard("edge-meter", f"{cat.site}: meter")


def demand(cat: Catalog) -> dict[str, Any]:
    """Demand (15-min sliding) and the month's maximum against the contract demand."""
    b = _Board(cat)
    bm, ms = cat.bucket, cat.measurement
    contract = cat.contract_kw
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if contract is not None:
        steps.append({"color": "red", "value": contract})
    defaults = {
        "thresholds": {"mode": "absolute", "steps": steps},
        # The contract demand drawn as a line across the panel.
        "custom": {"thresholdsStyle": {"mode": "line" if contract is not None else "off"}},
    }
    series = [f"demand.{c}" for c in cat.import_counters]
    maxima = [f"demand.{c}.month_max" for c in cat.import_counters]
    title = "Demand" + (f" (contract {contract:g} kW)" if contract is not None else "")
    b.panel(
        title, "timeseries", [q.series(bm, ms, series)], unit="kwatt", width=24, defaults=defaults
    )
    b.panel(
        "Maximum demand this month",
        "timeseries",
        [q.series(bm, ms, maxima)],
        unit="kwatt",
        width=24,
        defaults=defaults,
    )
    return b.dashboard("edge-demand", f"{cat.site}: demand")


def quality(cat: Catalog) -> dict[str, Any]:
    """Data quality and completeness: interval completeness, bad readings and their reasons."""
    b = _Board(cat)
    bm, ms = cat.bucket, cat.measurement
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
        [q.series(bm, ms, _interval(cat.counters, ".completeness"))],
        unit="percentunit",
        width=24,
        defaults=threshold,
    )
    b.panel("Readings not good, per device", "timeseries", [q.bad_points(bm, ms)])
    b.panel("Not-good readings by reason class", "table", [q.reasons(bm, ms)])
    return b.dashboard("edge-quality", f"{cat.site}: data quality")


def gateway(cat: Catalog) -> dict[str, Any]:
    """Gateway health as the store sees it: data age, throughput, device state."""
    b = _Board(cat)
    bm, ms = cat.bucket, cat.measurement
    b.panel(
        "Seconds since the last reading (a stalled uplink or outbox grows)",
        "table",
        [q.last_seen(bm, ms)],
        unit="s",
        width=24,
        defaults={
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": 300}],
            }
        },
    )
    b.panel("Readings stored per interval, per gateway", "timeseries", [q.readings_rate(bm, ms)])
    b.panel(
        "Outbox depth (messages waiting for the broker)",
        "timeseries",
        [q.gateway_series(bm, ms, ["outbox_messages"])],
    )
    b.panel(
        "Oldest message in the outbox",
        "timeseries",
        [q.gateway_series(bm, ms, ["outbox_oldest_age_s"])],
        unit="s",
    )
    b.panel(
        "Device state (worst quality: 0 good, 1 uncertain, 2 bad)",
        "state-timeline",
        [q.device_state(bm, ms)],
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
    b.panel("Active alarms by priority", "bargauge", [q.alarms_by_priority(bm, ms)])
    b.panel(
        "Alarms not normal (latest transition; state 1 unacked, 2 acked, 3 cleared unacked, "
        "4 latched, 5 shelved, 6 out of service)",
        "table",
        [q.alarm_list(bm, ms)],
        width=24,
    )
    return b.dashboard("edge-gateway", f"{cat.site}: gateway health")


def dashboards(loaded: LoadedConfig) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON for every generated dashboard."""
    cat = catalog(loaded)
    return {
        "energy-overview.json": overview(cat),
        "meter.json": meter(cat),
        "demand.json": demand(cat),
        "data-quality.json": quality(cat),
        "gateway-health.json": gateway(cat),
    }


def datasource(loaded: LoadedConfig, *, url: str | None = None) -> dict[str, Any]:
    """The InfluxDB data source (Flux); Grafana expands $INFLUX_TOKEN from its environment."""
    influx = loaded.site.influx
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


def write(loaded: LoadedConfig, out: Path, *, url: str | None = None) -> list[Path]:
    """Write the provisioning tree under `out`; the files written."""
    written: list[Path] = []

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    ds = {"apiVersion": 1, "datasources": [datasource(loaded, url=url)]}
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
    for name, board in dashboards(loaded).items():
        text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        put(out / "dashboards" / "edge-agent" / name, text)
    return written

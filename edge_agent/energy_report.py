"""`edge-agent report`: an auditor's energy report for a period, as HTML with plots plus CSV.

    store (ReadingSource: embedded SQLite or VictoriaMetrics)
        ──► counter readings of the period (± 1 h for boundaries and demand windows)
        ──► EnergyStage (the agent's own derivation, fed the stored polls in time order)
        ──► intervals, demand, daily totals, hierarchy series of the period
        ──► tables ──► report.html (inline SVG, no network assets) + one CSV per table

Tables: daily energy by TOU period (with completeness, tce, CO2, maximum demand, load
factor, power factor), the demand curve (every minute) against the contract demand,
daily power factor, period totals per meter and hierarchy node (with the coefficient
table versions), and completeness per meter and day.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config import LoadedConfig
from edge_agent.energy_coefficients import load_coefficients
from edge_agent.energy_config import EnergyConfig
from edge_agent.energy_demand import power_factor
from edge_agent.energy_intervals import WallClock
from edge_agent.energy_manual import daily_rows, indicators, manual_rows, read_manual, total_rows
from edge_agent.energy_points import energy_points
from edge_agent.energy_source import ReadingSource
from edge_agent.energy_stage import EnergyStage
from edge_agent.energy_svg import COLOURS, bars, line_chart, stacked_bars
from edge_agent.energy_tariffs import PERIOD_LABELS, PERIODS, find_calendar, load_calendar

MARGIN_MS = 3_600_000  # read this much around the period: boundaries and demand windows
Progress = Callable[[str], None]


class _Collect:
    """An outlet that keeps the stage's messages."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        self.docs.append(dict(doc))
        return len(self.docs)


@dataclass
class ReportData:
    """Everything derived for the period, as rows (what the CSV files hold)."""

    site: str
    start_ms: int
    end_ms: int
    timezone: str
    contract_demand_kw: float | None
    coefficients: dict[str, str]
    coefficient_sources: dict[str, str]
    tariffs: list[str]
    daily: list[dict[str, Any]] = field(default_factory=list)
    demand: list[dict[str, Any]] = field(default_factory=list)
    power_factor: list[dict[str, Any]] = field(default_factory=list)
    totals: list[dict[str, Any]] = field(default_factory=list)
    completeness: list[dict[str, Any]] = field(default_factory=list)
    manual: list[dict[str, Any]] = field(default_factory=list)  # 手工填报, as entered
    indicators: list[dict[str, Any]] = field(default_factory=list)  # 综合能耗, per output
    readings: int = 0


def _polls(
    device: str, rows: Sequence[tuple[int, dict[str, float | None]]], names: Sequence[str]
) -> Iterator[tuple[int, str, Poll]]:
    specs = tuple(PointSpec(n) for n in names)
    for ts, values in rows:
        issues = {
            i: (Quality.BAD, "not stored as good")
            for i, n in enumerate(names)
            if values.get(n) is None
        }
        yield (
            ts,
            device,
            Poll(device, ts * 1_000_000, specs, [values.get(n) for n in names], issues),
        )


def derive(
    loaded: LoadedConfig,
    source: ReadingSource,
    start_ms: int,
    end_ms: int,
    *,
    progress: Progress = lambda _: None,
) -> tuple[list[dict[str, Any]], int]:
    """The stage's messages for the period (and the readings read), from stored readings."""
    config: EnergyConfig = loaded.site.energy
    points = energy_points(loaded.devices)
    calendar = None
    if config.tariff is not None:
        calendar = load_calendar(find_calendar(config.tariff, base=loaded.path.parent))
    out = _Collect()
    stage = EnergyStage(points, config=config, outlet=out, site=loaded.site.site, calendar=calendar)
    by_device: dict[str, list[str]] = {}
    for p in points:
        by_device.setdefault(p.device, []).append(p.point)
    streams = []
    count = 0
    for k, (device, names) in enumerate(by_device.items(), 1):
        rows = source.readings(device, names, start_ms - MARGIN_MS, end_ms + MARGIN_MS)
        count += len(rows)
        progress(f"read {device}: {len(rows)} polls ({k}/{len(by_device)} meters)")
        streams.append(list(_polls(device, rows, names)))
    progress(f"deriving intervals, demand and totals from {count} polls")
    for _, _, poll in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
        stage.observe(poll)
    stage.flush()  # a meter without data must not hold back its nodes' last intervals
    return out.docs, count


def _value(doc: Mapping[str, Any], name: str) -> Any:
    entry = doc["points"].get(name)
    return None if entry is None else entry["value"]


def build_data(
    loaded: LoadedConfig,
    source: ReadingSource,
    start_ms: int,
    end_ms: int,
    *,
    progress: Progress = lambda _: None,
) -> ReportData:
    """Derive and tabulate the period."""
    config = loaded.site.energy
    clock = WallClock(config.timezone, config.interval_min)
    docs, count = derive(loaded, source, start_ms, end_ms, progress=progress)
    coefficients = load_coefficients(
        config.standard_coal, config.grid_emission, site_dir=loaded.path.parent
    )
    data = ReportData(
        site=loaded.site.site,
        start_ms=start_ms,
        end_ms=end_ms,
        timezone=config.timezone,
        contract_demand_kw=config.contract_demand_kw,
        coefficients=coefficients.versions,
        coefficient_sources={
            coefficients.coal.version: coefficients.coal.source,
            coefficients.emission.version: coefficients.emission.source,
        },
        tariffs=sorted({d["tariff"] for d in docs if d["type"] == "interval" and d.get("tariff")}),
        readings=count,
    )
    days = [d for d in docs if d["type"] == "day" and start_ms <= d["ts_ms"] < end_ms]
    n_days = round((end_ms - start_ms) / 86_400_000)
    pair: dict[tuple[str, str], dict[str, float]] = {}
    for d in days:
        prefix = f"day.{d['counter']}"
        row: dict[str, Any] = {
            "date": d["period"],
            "series": d["device"],
            "counter": d["counter"],
            "kind": d["kind"],
            "unit": d["points"][prefix]["unit"],
            "energy": _value(d, prefix),
        }
        for period in PERIODS:
            row[period] = _value(d, f"{prefix}.{period}")
        row |= {
            "completeness": _value(d, f"{prefix}.completeness"),
            "tce": _value(d, f"{prefix}.tce"),
            "co2_t": _value(d, f"{prefix}.co2"),
            "demand_max_kw": _value(d, f"{prefix}.demand_max"),
            "load_factor": _value(d, f"{prefix}.load_factor"),
            "quality": d["points"][prefix]["quality"],
            "node": "node" in d,
            "source": "measured",
        }
        data.daily.append(row)
        if "node" not in d and d.get("direction") in (None, "import"):
            pair.setdefault((d["device"], d["period"]), {})[d["kind"]] = row["energy"]
        if "node" not in d:
            data.completeness.append(
                {
                    "date": d["period"],
                    "meter": d["device"],
                    "counter": d["counter"],
                    "completeness": row["completeness"],
                    "intervals": d["intervals"],
                    "expected_intervals": d["expected_intervals"],
                }
            )
    for (device, date), kinds in sorted(pair.items()):
        if "electricity" in kinds and "reactive" in kinds:
            data.power_factor.append(
                {
                    "date": date,
                    "meter": device,
                    "kwh": kinds["electricity"],
                    "kvarh": kinds["reactive"],
                    "pf": power_factor(kinds["electricity"], kinds["reactive"]),
                }
            )
    for d in docs:
        if d["type"] == "demand" and start_ms < d["ts_ms"] <= end_ms:
            data.demand.append(
                {
                    "time": clock.iso(d["ts_ms"]),
                    "ts_ms": d["ts_ms"],
                    "meter": d["device"],
                    "counter": d["counter"],
                    "demand_kw": _value(d, f"demand.{d['counter']}"),
                    "meter_demand_kw": _value(d, "demand.meter"),
                    "quality": d["points"][f"demand.{d['counter']}"]["quality"],
                }
            )
    progress("totals per meter and node")
    hours = (end_ms - start_ms) / 3_600_000
    keys = list(dict.fromkeys((r["series"], r["counter"]) for r in data.daily))
    for series, counter in keys:
        rows = [r for r in data.daily if (r["series"], r["counter"]) == (series, counter)]
        total: dict[str, Any] = {
            "series": series,
            "counter": counter,
            "kind": rows[0]["kind"],
            "unit": rows[0]["unit"],
            "energy": sum(r["energy"] for r in rows),
        }
        for period in PERIODS:
            values = [r[period] for r in rows if r[period] is not None]
            total[period] = sum(values) if values else None
        tces = [r["tce"] for r in rows if r["tce"] is not None]
        co2s = [r["co2_t"] for r in rows if r["co2_t"] is not None]
        total["tce"] = sum(tces) if tces else None
        total["co2_t"] = sum(co2s) if co2s else None
        total["completeness"] = sum(r["completeness"] for r in rows) / max(1, n_days)
        peaks = [r for r in data.demand if r["meter"] == series and r["counter"] == counter]
        top = max(peaks, key=lambda r: r["demand_kw"], default=None)
        total["demand_max_kw"] = top["demand_kw"] if top else None
        total["demand_max_at"] = top["time"] if top else None
        total["load_factor"] = (
            total["energy"] / hours / top["demand_kw"] if top and top["demand_kw"] > 0 else None
        )
        pf_rows = [r for r in data.power_factor if r["meter"] == series]
        total["pf"] = (
            power_factor(sum(r["kwh"] for r in pf_rows), sum(r["kvarh"] for r in pf_rows))
            if pf_rows and counter != "reactive" and rows[0]["kind"] == "electricity"
            else None
        )
        total |= data.coefficients
        total["node"] = rows[0]["node"]
        total["source"] = "measured"
        data.totals.append(total)
    manual = read_manual(loaded, start_ms, end_ms)
    if manual:
        progress(f"{len(manual)} manual entries (手工填报) from the uplink history")
    data.manual = manual_rows(manual, coefficients, clock)
    data.daily += daily_rows(data.manual, PERIODS)
    data.totals += [t | data.coefficients for t in total_rows(data.manual, PERIODS)]
    data.indicators = indicators(data.site, data.totals, data.manual)
    return data


# -- output -------------------------------------------------------------------------------

MANUAL_COLUMNS = [
    "date",
    "start",
    "end",
    "series",
    "counter",
    "kind",
    "value",
    "entered_unit",
    "amount",
    "unit",
    "use",
    "tce",
    "co2_t",
    "key",
]
CSV_TABLES = {
    "daily_energy.csv": (
        "daily",
        [
            "date",
            "series",
            "counter",
            "kind",
            "unit",
            "energy",
            *PERIODS,
            "completeness",
            "tce",
            "co2_t",
            "demand_max_kw",
            "load_factor",
            "quality",
            "source",
        ],
    ),
    "demand.csv": (
        "demand",
        ["time", "meter", "counter", "demand_kw", "meter_demand_kw", "quality"],
    ),
    "power_factor.csv": ("power_factor", ["date", "meter", "kwh", "kvarh", "pf"]),
    "totals.csv": (
        "totals",
        [
            "series",
            "counter",
            "kind",
            "unit",
            "energy",
            *PERIODS,
            "tce",
            "co2_t",
            "completeness",
            "demand_max_kw",
            "demand_max_at",
            "load_factor",
            "pf",
            "standard_coal",
            "grid_emission",
            "source",
        ],
    ),
    "completeness.csv": (
        "completeness",
        ["date", "meter", "counter", "completeness", "intervals", "expected_intervals"],
    ),
    "manual.csv": ("manual", MANUAL_COLUMNS),
    "indicators.csv": ("indicators", ["indicator", "value", "unit", "basis"]),
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value != 0 else "0"
    return str(value)


def write_csv(data: ReportData, out: Path) -> list[Path]:
    """One CSV per table; returns the files."""
    written = []
    for name, (attr, columns) in CSV_TABLES.items():
        path = out / name
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in getattr(data, attr):
                writer.writerow([_cell(row.get(c)) for c in columns])
        written.append(path)
    return written


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _downsample(rows: Sequence[Mapping[str, Any]], limit: int = 1500) -> list[tuple[float, float]]:
    """(ts, kW) keeping the maximum of each bucket, so peaks survive."""
    points = [(float(r["ts_ms"]), float(r["demand_kw"])) for r in rows]
    if len(points) <= limit:
        return points
    size = -(-len(points) // limit)
    return [max(points[i : i + size], key=lambda p: p[1]) for i in range(0, len(points), size)]


def render_html(data: ReportData, clock: WallClock) -> str:
    """The report page."""
    start, end = clock.iso(data.start_ms)[:10], clock.iso(data.end_ms)[:10]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Energy report {escape(data.site)} {start} to {end}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1000px}"
        "table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
        "h2{margin-top:32px;border-bottom:1px solid #ddd}</style></head><body>",
        f"<h1>Energy report: {escape(data.site)}</h1>",
        f"<p>Period {start} 00:00 to {end} 00:00 ({escape(data.timezone)}); "
        f"{data.readings} stored polls read. Standard coal: "
        f"<b>{escape(data.coefficients['standard_coal'])}</b>; grid emission factor: "
        f"<b>{escape(data.coefficients['grid_emission'])}</b>; tariff calendar: "
        f"{escape(', '.join(data.tariffs) or 'none')}.</p>",
        "<ul>"
        + "".join(f"<li>{escape(v)}: {escape(s)}</li>" for v, s in data.coefficient_sources.items())
        + "</ul>",
        "<p>Every number is recomputed from the stored counter readings with the agent's own "
        "rules: counters interpolated at interval boundaries, wraps unwrapped, resets and "
        "meter replacements not counted and flagged; completeness is the share of expected "
        "polls stored.</p>",
    ]
    imports = [
        r for r in data.daily if r["kind"] == "electricity" and not r["node"] and r["counter"]
    ]
    parts.append("<h2>Daily energy by time-of-use period</h2>")
    for series, counter in dict.fromkeys((r["series"], r["counter"]) for r in imports):
        rows = [r for r in imports if (r["series"], r["counter"]) == (series, counter)]
        if rows and rows[0][PERIODS[0]] is not None:
            parts.append(
                stacked_bars(
                    f"{series} {counter}: daily energy by period",
                    [r["date"][5:] for r in rows],
                    [
                        (f"{p} {PERIOD_LABELS[p]}", COLOURS[p], [r[p] or 0.0 for r in rows])
                        for p in PERIODS
                    ],
                    unit="kWh",
                )
            )
    parts.append(
        _table(
            data.daily,
            [
                "date",
                "series",
                "counter",
                "energy",
                "unit",
                *PERIODS,
                "completeness",
                "quality",
                "source",
            ],
        )
    )
    parts.append("<h2>Maximum demand (15-minute, sliding every minute)</h2>")
    limit = ("contract demand", data.contract_demand_kw) if data.contract_demand_kw else None
    day_ticks = []
    t = data.start_ms
    while t <= data.end_ms:
        day_ticks.append((float(t), clock.iso(t)[5:10]))
        t += 86_400_000
    for meter, counter in dict.fromkeys((r["meter"], r["counter"]) for r in data.demand):
        rows = [r for r in data.demand if (r["meter"], r["counter"]) == (meter, counter)]
        parts.append(
            line_chart(
                f"{meter} {counter}: demand",
                _downsample(rows),
                unit="kW",
                x_labels=day_ticks,
                limit=limit,
                name="demand",
            )
        )
    parts.append("<h2>Power factor (daily, from kWh and kvarh)</h2>")
    for meter in dict.fromkeys(r["meter"] for r in data.power_factor):
        rows = [r for r in data.power_factor if r["meter"] == meter]
        parts.append(
            line_chart(
                f"{meter}: daily power factor",
                [(float(i), r["pf"]) for i, r in enumerate(rows) if r["pf"] is not None],
                unit="PF",
                x_labels=[(float(i), r["date"][5:]) for i, r in enumerate(rows)],
                limit=("0.90 standard", 0.9),
                y_min=0.5,
                y_max=1.0,
                name="power factor",
            )
        )
    parts.append(_table(data.power_factor, ["date", "meter", "kwh", "kvarh", "pf"]))
    parts.append("<h2>Totals: energy, standard coal and CO2</h2>")
    meters = [r for r in data.totals if r["tce"] is not None or r["co2_t"] is not None]
    if meters:
        parts.append(
            bars(
                "tce per meter and node",
                [f"{r['series']} {r['counter']}" for r in meters],
                [r["tce"] or 0.0 for r in meters],
                unit="tce",
            )
        )
    parts.append(
        _table(
            data.totals,
            [
                "series",
                "counter",
                "energy",
                "unit",
                "tce",
                "co2_t",
                "completeness",
                "demand_max_kw",
                "demand_max_at",
                "load_factor",
                "pf",
                "source",
            ],
        )
    )
    parts.append("<h2>Comprehensive energy and output (综合能耗, 单位产品综合能耗)</h2>")
    parts.append(_table(data.indicators, ["indicator", "value", "unit", "basis"]))
    parts.append("<h2>Manual entries (手工填报)</h2>")
    if data.manual:
        parts.append(
            "<p>Entered with <code>edge-agent uplink manual</code>, uploaded to the platform "
            "flagged manual, and counted above like measured data (source <i>manual</i>).</p>"
        )
        parts.append(_table(data.manual, MANUAL_COLUMNS[:-1]))
    else:
        parts.append("<p>None in this period.</p>")
    parts.append("<h2>Completeness per meter</h2>")
    by_meter = list(dict.fromkeys((r["meter"], r["counter"]) for r in data.completeness))
    share = [
        sum(r["completeness"] for r in data.completeness if (r["meter"], r["counter"]) == key)
        / max(1, round((data.end_ms - data.start_ms) / 86_400_000))
        for key in by_meter
    ]
    if by_meter:
        parts.append(
            bars(
                "completeness over the period (≥ 0.90 required)",
                [f"{m} {c}" for m, c in by_meter],
                share,
                unit="share",
            )
        )
    parts.append(
        _table(
            data.completeness,
            ["date", "meter", "counter", "completeness", "intervals", "expected_intervals"],
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def parse_day(text: str) -> dt.date:
    """YYYY-MM-DD."""
    return dt.date.fromisoformat(text)


def write_report(
    loaded: LoadedConfig,
    source: ReadingSource,
    start: dt.date,
    end: dt.date,
    out: Path,
    *,
    progress: Progress = lambda _: None,
) -> list[Path]:
    """Derive the period [start, end) (local dates) and write report.html and the CSVs."""
    if end <= start:
        raise ValueError(f"--to {end} is not after --from {start}")
    config = loaded.site.energy
    clock = WallClock(config.timezone, config.interval_min)
    start_ms, end_ms = clock.midnight(start), clock.midnight(end)
    data = build_data(loaded, source, start_ms, end_ms, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    progress("writing CSV tables")
    files = write_csv(data, out)
    progress("writing report.html")
    html = out / "report.html"
    html.write_text(render_html(data, clock), encoding="utf-8")
    return [html, *files]


def run_report(
    loaded: LoadedConfig, start_text: str, end_text: str, *, out: Path, store: Path | None
) -> int:
    """The `report` command: progress on stderr, the files on stdout; exit code."""
    import sys
    import time

    from edge_agent.energy_source import EmbeddedSource, VictoriaSource

    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"report [{time.monotonic() - began:5.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        start, end = parse_day(start_text), parse_day(end_text)
    except ValueError as exc:
        print(f"report: {exc} (dates are YYYY-MM-DD)", file=sys.stderr)
        return 2
    site = loaded.site
    try:
        source: ReadingSource
        if store is None and site.influx is not None:
            source = VictoriaSource.of_site(loaded)  # token, ca_file, verify_tls
            progress(f"reading {site.influx.url} for {start} to {end}")
        else:
            path = store if store is not None else loaded.path.parent / site.ingest.store
            source = EmbeddedSource(path, site=site.site)
            progress(f"reading {path} for {start} to {end}")
        files = write_report(loaded, source, start, end, out, progress=progress)
    except (OSError, ValueError) as exc:  # no store file, server unreachable, bad period
        print(f"report: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0

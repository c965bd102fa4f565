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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config.site import LoadedConfig
from edge_agent.energy.coefficients import Coefficients, load_coefficients
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.demand import contract_meter, power_factor
from edge_agent.energy.hierarchy import outside_meters
from edge_agent.energy.intervals import COMPLETE_SHARE, WallClock
from edge_agent.energy.manual import daily_rows, indicators, manual_rows, read_manual, total_rows
from edge_agent.energy.points import energy_points
from edge_agent.energy.report.period import Period, parse_bound
from edge_agent.energy.report.source import ReadingSource
from edge_agent.energy.report.svg import COLOURS, bars, line_chart, stacked_bars
from edge_agent.energy.stage import EnergyStage
from edge_agent.energy.tariffs import PERIOD_LABELS, PERIODS, find_calendar, load_calendar

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
    period: Period
    timezone: str
    interval_ms: int
    contract_demand_kw: float | None
    contract_meter: str | None  # the meter the contract demand is billed on
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
    outside: list[tuple[str, str]] = field(default_factory=list)  # counters in no node
    without_data: list[tuple[str, str]] = field(default_factory=list)  # counters, no readings
    readings: int = 0  # polls read in the period itself (not the margins)

    @property
    def start_ms(self) -> int:
        """Start of the period."""
        return self.period.start_ms

    @property
    def end_ms(self) -> int:
        """End of the period as asked."""
        return self.period.end_ms


class NoData(Exception):
    """Neither stored readings nor manual entries in the period."""


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
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """The stage's messages for the period, the polls read (with the margins) and the
    polls of each device inside [start_ms, end_ms)."""
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
    inside: dict[str, int] = {}
    for k, (device, names) in enumerate(by_device.items(), 1):
        rows = source.readings(device, names, start_ms - MARGIN_MS, end_ms + MARGIN_MS)
        count += len(rows)
        inside[device] = sum(1 for ts, _ in rows if start_ms <= ts < end_ms)
        progress(f"read {device}: {len(rows)} polls ({k}/{len(by_device)} meters)")
        streams.append(list(_polls(device, rows, names)))
    progress(f"deriving intervals, demand and totals from {count} polls")
    for _, _, poll in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
        stage.observe(poll)
    stage.flush()  # a meter without data must not hold back its nodes' last intervals
    return out.docs, count, inside


def _value(doc: Mapping[str, Any], name: str) -> Any:
    entry = doc["points"].get(name)
    return None if entry is None else entry["value"]


def _quality(completeness: float | None, flags: Iterable[str]) -> str:
    """The rule of the day totals: uncertain below 0.90 complete or across a reset."""
    if completeness is None:
        return "good"
    return "uncertain" if completeness < COMPLETE_SHARE or "reset" in flags else "good"


def _day_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """A closed day of the stage, as a row."""
    prefix = f"day.{d['counter']}"
    row: dict[str, Any] = {
        "date": d["period"],
        "span": "day",
        "start": d["start"],
        "end": d["end"],
        "series": d["device"],
        "counter": d["counter"],
        "kind": d["kind"],
        "direction": d.get("direction"),
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
        "flags": list(d.get("flags", ())),
        "intervals": d["intervals"],
        "expected_intervals": d["expected_intervals"],
        "node": "node" in d,
        "source": "measured",
    }
    return row


def _interval_row(
    docs: Sequence[Mapping[str, Any]],
    day: dt.date,
    a: int,
    b: int,
    *,
    whole: bool,
    clock: WallClock,
    coefficients: Coefficients,
    demand: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A day, or the part of it in the period, summed from its intervals: the day the
    stage never closed (data stopped, or the day is in progress) or a day cut by the
    period. Completeness counts every interval of [a, b), delivered or not."""
    first = docs[0]
    counter = first["counter"]
    prefix = f"interval.{counter}"
    energy = sum(_value(d, prefix) for d in docs)
    expected_intervals = round((b - a) / clock.interval_ms)
    node = "node" in first
    if node:
        share = sum(_value(d, f"{prefix}.completeness") for d in docs)
    else:
        per = float(first["expected"]) or 1.0
        share = sum(d["readings"] for d in docs) / per
    completeness = min(1.0, share / expected_intervals) if expected_intervals else 0.0
    flags = sorted(
        {f for d in docs for f in d.get("flags", ())} | (set() if whole else {"partial"})
    )
    kind = first["kind"]
    direction = "import" if node else first.get("direction")
    row: dict[str, Any] = {
        "date": str(day),
        "span": "day" if whole else "partial",
        "start": clock.iso(a),
        "end": clock.iso(b),
        "series": first["device"],
        "counter": counter,
        "kind": kind,
        "direction": direction,
        "unit": first["points"][prefix]["unit"],
        "energy": energy,
    }
    for period in PERIODS:
        values = [_value(d, f"{prefix}.{period}") for d in docs]
        present = [v for v in values if v is not None]
        row[period] = sum(present) if present else None
    peaks = [r for r in demand if r["meter"] == first["device"] and a < r["ts_ms"] <= b]
    peak = max((r["demand_kw"] for r in peaks), default=None)
    hours = (b - a) / 3_600_000
    row |= {
        "completeness": round(completeness, 4),
        "tce": coefficients.tce(kind, energy),
        "co2_t": coefficients.co2_t(kind, direction, energy),
        "demand_max_kw": peak,
        "load_factor": energy / hours / peak if peak and hours > 0 else None,
        "quality": _quality(completeness, flags),
        "flags": flags,
        "intervals": len(docs),
        "expected_intervals": expected_intervals,
        "node": node,
        "source": "measured",
    }
    return row


def _daily(
    docs: Sequence[Mapping[str, Any]],
    period: Period,
    clock: WallClock,
    coefficients: Coefficients,
    demand: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per series, counter and local day of the period (or its part of a day)."""
    closed = {
        (d["device"], d["counter"], d["period"]): d
        for d in docs
        if d["type"] == "day" and period.start_ms <= d["ts_ms"] < period.end_ms
    }
    intervals: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for d in docs:
        if d["type"] == "interval" and period.start_ms <= d["ts_ms"] < period.upto_ms:
            intervals.setdefault((d["device"], d["counter"]), []).append(d)
    rows = []
    for day, day_start, day_end in period.days(clock):
        a, b = max(period.start_ms, day_start), min(period.upto_ms, day_end)
        whole = (a, b) == (day_start, day_end)
        for key, series in intervals.items():
            found = closed.get((*key, str(day))) if whole else None
            if found is not None:
                rows.append(_day_row(found))
                continue
            part = [d for d in series if a <= d["ts_ms"] < b]
            if part:
                rows.append(
                    _interval_row(
                        part,
                        day,
                        a,
                        b,
                        whole=whole,
                        clock=clock,
                        coefficients=coefficients,
                        demand=demand,
                    )
                )
    return rows


def build_data(
    loaded: LoadedConfig,
    source: ReadingSource,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
    progress: Progress = lambda _: None,
) -> ReportData:
    """Derive and tabulate the period; NoData when it holds no readings and no entries."""
    config = loaded.site.energy
    clock = WallClock(config.timezone, config.interval_min)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    period = Period.of(start_ms, end_ms, clock, now_ms=now)
    docs, _, inside = derive(loaded, source, period.start_ms, period.upto_ms, progress=progress)
    manual = read_manual(loaded, period.start_ms, period.end_ms)
    if not any(inside.values()) and not manual:
        raise NoData(period.text(clock))
    coefficients = load_coefficients(
        config.standard_coal, config.grid_emission, site_dir=loaded.path.parent
    )
    points = energy_points(loaded.devices)
    counters = [p.info for p in points if p.options.role == "counter"]
    data = ReportData(
        site=loaded.site.site,
        period=period,
        timezone=config.timezone,
        interval_ms=clock.interval_ms,
        contract_demand_kw=config.contract_demand_kw,
        contract_meter=contract_meter(config, counters),
        coefficients=coefficients.versions,
        coefficient_sources={
            coefficients.coal.version: coefficients.coal.source,
            coefficients.emission.version: coefficients.emission.source,
        },
        tariffs=sorted({d["tariff"] for d in docs if d["type"] == "interval" and d.get("tariff")}),
        outside=outside_meters(config, counters),
        readings=sum(inside.values()),
    )
    for d in docs:
        if d["type"] == "demand" and period.start_ms < d["ts_ms"] <= period.upto_ms:
            data.demand.append(
                {
                    "time": clock.iso(d["ts_ms"]),
                    "ts_ms": d["ts_ms"],
                    "meter": d["device"],
                    "counter": d["counter"],
                    "demand_kw": _value(d, f"demand.{d['counter']}"),
                    "meter_demand_kw": _value(d, "demand.meter"),
                    "contract_demand_kw": d.get("contract_demand_kw"),
                    "quality": d["points"][f"demand.{d['counter']}"]["quality"],
                }
            )
    data.daily = _daily(docs, period, clock, coefficients, data.demand)
    pair: dict[tuple[str, str], dict[str, float]] = {}
    for row in data.daily:
        if row["node"]:
            continue
        if row["direction"] in (None, "import"):
            pair.setdefault((row["series"], row["date"]), {})[row["kind"]] = row["energy"]
        data.completeness.append(
            {k: row[k] for k in ("date", "span", "completeness", "intervals", "expected_intervals")}
            | {"meter": row["series"], "counter": row["counter"]}
        )
    seen = {(r["meter"], r["counter"]) for r in data.completeness}
    for key in dict.fromkeys(c.key for c in counters):
        if key not in seen:  # configured, nothing stored: 0 complete, not left out
            data.without_data.append(key)
            for day, day_start, day_end in period.days(clock):
                a, b = max(period.start_ms, day_start), min(period.upto_ms, day_end)
                data.completeness.append(
                    {
                        "date": str(day),
                        "span": "day" if (a, b) == (day_start, day_end) else "partial",
                        "meter": key[0],
                        "counter": key[1],
                        "completeness": 0.0,
                        "intervals": 0,
                        "expected_intervals": round((b - a) / clock.interval_ms),
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
    progress("totals per meter and node")
    data.totals = _totals(data)
    if manual:
        progress(f"{len(manual)} manual entries (手工填报) from the uplink history")
    data.manual = manual_rows(manual, coefficients, clock)
    data.daily += daily_rows(data.manual, PERIODS)
    data.totals += [t | data.coefficients for t in total_rows(data.manual, PERIODS)]
    data.indicators = indicators(data.site, data.totals, data.manual, outside=data.outside)
    return data


def _totals(data: ReportData) -> list[dict[str, Any]]:
    hours = data.period.hours
    out = []
    for series, counter in dict.fromkeys((r["series"], r["counter"]) for r in data.daily):
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
        # Weighted by the hours each row covers; days without a row count as none.
        covered = sum(
            r["completeness"] * r["expected_intervals"]
            for r in rows
            if r["completeness"] is not None
        )
        possible = round((data.period.upto_ms - data.period.start_ms) / data.interval_ms)
        total["completeness"] = min(1.0, covered / possible) if possible else 0.0
        flags = {f for r in rows for f in r["flags"]}
        total["quality"] = (
            "uncertain"
            if any(r["quality"] != "good" for r in rows)
            else _quality(total["completeness"], flags)
        )
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
        out.append(total)
    return out


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
            "span",
            "start",
            "end",
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
        [
            "time",
            "meter",
            "counter",
            "demand_kw",
            "meter_demand_kw",
            "contract_demand_kw",
            "quality",
        ],
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
            "quality",
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
        ["date", "span", "meter", "counter", "completeness", "intervals", "expected_intervals"],
    ),
    "manual.csv": ("manual", MANUAL_COLUMNS),
    "indicators.csv": (
        "indicators",
        ["indicator", "value", "unit", "completeness", "quality", "basis"],
    ),
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value != 0 else "0"
    return str(value)


def write_csv(data: ReportData, out: Path) -> list[Path]:
    """One CSV per table; returns the files. UTF-8 with a BOM and CRLF lines: Excel (a
    Chinese Windows one too) opens them as UTF-8 only with the BOM."""
    written = []
    for name, (attr, columns) in CSV_TABLES.items():
        path = out / name
        with path.open("w", newline="", encoding="utf-8-sig") as f:
            writer = csv.writer(f, lineterminator="\r\n")
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
    period = data.period.text(clock)
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Energy report {escape(data.site)} {escape(period)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1000px}"
        "table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
        "h2{margin-top:32px;border-bottom:1px solid #ddd}</style></head><body>",
        f"<h1>Energy report: {escape(data.site)}</h1>",
        f"<p>Period <b>{escape(period)}</b>, local time; "
        f"{data.readings} stored polls read in it. Standard coal: "
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
        _notes(data, clock),
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
                "span",
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
    day_ticks = []
    t = data.start_ms
    while t <= data.end_ms:
        day_ticks.append((float(t), clock.iso(t)[5:10]))
        t += 86_400_000
    for meter, counter in dict.fromkeys((r["meter"], r["counter"]) for r in data.demand):
        rows = [r for r in data.demand if (r["meter"], r["counter"]) == (meter, counter)]
        kw = data.contract_demand_kw
        parts.append(
            line_chart(
                f"{meter} {counter}: demand",
                _downsample(rows),
                unit="kW",
                x_labels=day_ticks,
                limit=(f"contract demand {kw:g} kW", kw)
                if kw is not None and meter == data.contract_meter
                else None,
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
                "quality",
                "demand_max_kw",
                "demand_max_at",
                "load_factor",
                "pf",
                "source",
            ],
        )
    )
    parts.append("<h2>Comprehensive energy and output (综合能耗, 单位产品综合能耗)</h2>")
    parts.append(
        _table(data.indicators, ["indicator", "value", "unit", "completeness", "quality", "basis"])
    )
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
        sum(
            r["completeness"] * r["expected_intervals"]
            for r in data.completeness
            if (r["meter"], r["counter"]) == key
        )
        / max(1, round((data.period.upto_ms - data.start_ms) / data.interval_ms))
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
            [
                "date",
                "span",
                "meter",
                "counter",
                "completeness",
                "intervals",
                "expected_intervals",
            ],
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _notes(data: ReportData, clock: WallClock) -> str:
    """What a reader must know before reading a number."""
    notes = []
    if data.period.partial:
        notes.append(
            f"The period is not over: data up to {data.period.text(clock, upto=True)}; "
            "the last day is <b>partial</b> (span <i>partial</i>), not a day of zero."
        )
    kw = data.contract_demand_kw
    if kw is not None:
        notes.append(
            f"Contract demand {kw:g} kW, billed on meter <b>{escape(data.contract_meter)}</b>."
            if data.contract_meter is not None
            else f"Contract demand {kw:g} kW not drawn: no single meter it applies to; "
            "name it in energy.contract_demand_meter."
        )
    if data.outside:
        names = ", ".join(f"{d} {p}" for d, p in data.outside)
        notes.append(
            f"Meters outside the hierarchy, <b>not counted in 综合能耗</b> (listed in the "
            f"indicators): {escape(names)}. Add them to a node of energy.hierarchy to count "
            "them."
        )
    if data.without_data:
        names = ", ".join(f"{d} {p}" for d, p in data.without_data)
        notes.append(f"No stored readings in the period (completeness 0): {escape(names)}.")
    return "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>" if notes else ""


def write_report(
    loaded: LoadedConfig,
    source: ReadingSource,
    start_ms: int,
    end_ms: int,
    out: Path,
    *,
    now_ms: int | None = None,
    progress: Progress = lambda _: None,
) -> list[Path]:
    """Derive the period [start_ms, end_ms) and write report.html and the CSVs (NoData:
    nothing written)."""
    config = loaded.site.energy
    clock = WallClock(config.timezone, config.interval_min)
    data = build_data(loaded, source, start_ms, end_ms, now_ms=now_ms, progress=progress)
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
    """The `report` command: progress on stderr, the files on stdout; exit code 0, 1
    (store or period unusable), 2 (a bound not understood) or 3 (no data in the period)."""
    import sys

    from edge_agent.energy.report.source import EmbeddedSource, VictoriaSource

    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"report [{time.monotonic() - began:5.1f} s] {message}", file=sys.stderr, flush=True)

    config = loaded.site.energy
    clock = WallClock(config.timezone, config.interval_min)
    try:
        start_ms, end_ms = parse_bound(start_text, clock), parse_bound(end_text, clock)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    try:
        period = Period.of(start_ms, end_ms, clock, now_ms=time.time_ns() // 1_000_000)
    except ValueError as exc:
        print(f"report: --from {start_text} --to {end_text}: {exc}", file=sys.stderr)
        return 1
    shown = period.text(clock)
    site = loaded.site
    try:
        source: ReadingSource
        if store is None and site.influx is not None:
            source = VictoriaSource.of_site(loaded)  # token, ca_file, verify_tls
            progress(f"reading {site.influx.url} for {shown}")
        else:
            path = store if store is not None else loaded.path.parent / site.ingest.store
            source = EmbeddedSource(path, site=site.site)
            progress(f"reading {path} for {shown}")
        files = write_report(loaded, source, start_ms, end_ms, out, progress=progress)
    except NoData:
        print(
            f"report: no data for {site.site} in {shown}: no stored counter readings and no "
            "manual entries in the period; nothing written",
            file=sys.stderr,
        )
        return 3
    except (OSError, ValueError) as exc:  # no store file, server unreachable, bad period
        print(f"report: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0

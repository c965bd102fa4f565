"""Manual entries (手工填报) in the energy report, beside the measured series.

`edge-agent uplink manual` keeps manual entries in the uplink history, flagged `manual`
(edge_agent/uplink/commands.py). The report reads the ones whose period starts in the
report's period and treats them like measured data:

    energy kinds (electricity, natural_gas, steam, ... and any kind the standard-coal
    table holds, e.g. raw_coal)  ──► canonical unit, tce and CO2 with the site's tables,
                                    daily rows and period totals flagged `manual`
    kind `production` (产品产量)  ──► output per product: 单位产品综合能耗 =
                                    the site's 综合能耗 (kgce) / the output
    any other kind               ──► listed as entered (e.g. 工业总产值)

The site's 综合能耗 for the period is the `site` series of the hierarchy (Σ top-level
nodes) when there is one, else Σ of every meter that is not a node (a site without a
hierarchy has no other way to say which meters overlap), plus the manual energy. Only
closed days count, as everywhere in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent.config.site import LoadedConfig
from edge_agent.energy.coefficients import CANONICAL, Coefficients, unit_factor
from edge_agent.energy.intervals import WallClock
from edge_agent.uplink.store import IntervalRecord, UplinkStore

OUTPUT_KIND = "production"
_MASS = {"t": 1000.0, "kg": 1.0}  # for standard-coal rows of kinds without a canonical unit


def read_manual(loaded: LoadedConfig, start_ms: int, end_ms: int) -> list[IntervalRecord]:
    """The manual entries whose period starts in [start_ms, end_ms), oldest first."""
    uplink = loaded.site.uplink
    if uplink is None:
        return []
    path = loaded.path.parent / uplink.path
    if not path.exists():  # no entry was ever made: do not create the file from a report
        return []
    store = UplinkStore.of(uplink, base=loaded.path.parent)
    try:
        return store.history(start_ms, end_ms, manual_only=True)
    finally:
        store.close()


def canonical(kind: str, unit: str | None, value: float) -> tuple[float, str | None]:
    """The amount in the kind's canonical unit (ValueError for a unit of another quantity)."""
    if kind in CANONICAL:
        return value * unit_factor(kind, unit), CANONICAL[kind]
    return value, unit


def _table_unit(
    coefficients: Coefficients, kind: str, unit: str | None, value: float
) -> tuple[float, str | None]:
    """Fuels without a canonical unit are summed in the standard-coal table's unit."""
    if kind in CANONICAL:
        return canonical(kind, unit, value)
    factor = coefficients.coal.factors.get(kind)
    if factor is not None and unit in _MASS and factor.unit in _MASS:
        return value * _MASS[unit] / _MASS[factor.unit], factor.unit
    return value, unit


def _tce(coefficients: Coefficients, kind: str, amount: float, unit: str | None) -> float | None:
    if kind in CANONICAL:
        return coefficients.tce(kind, amount)
    factor = coefficients.coal.factors.get(kind)
    if factor is None or unit != factor.unit:
        return None  # not convertible: shown without tce rather than guessed
    return amount * factor.kgce / 1000.0


def manual_rows(
    records: Sequence[IntervalRecord], coefficients: Coefficients, clock: WallClock
) -> list[dict[str, Any]]:
    """One row per entry: as entered, in the canonical unit, and its tce and CO2."""
    rows = []
    for r in records:
        value = 0.0 if r.value is None else float(r.value)
        try:
            amount, unit = _table_unit(coefficients, r.kind, r.unit, value)
        except ValueError:  # entered before units were checked: kept, not converted
            amount, unit = value, r.unit
        energy = r.kind != OUTPUT_KIND and (
            r.kind in CANONICAL or r.kind in coefficients.coal.factors
        )
        rows.append(
            {
                "date": clock.iso(r.start_ms)[:10],
                "start": r.start,
                "end": r.end,
                "series": r.device,
                "counter": r.counter,
                "kind": r.kind,
                "value": r.value,
                "entered_unit": r.unit,
                "amount": amount,
                "unit": unit,
                "use": "output" if r.kind == OUTPUT_KIND else "energy" if energy else "other",
                "tce": _tce(coefficients, r.kind, amount, unit) if energy else None,
                "co2_t": coefficients.co2_t(r.kind, "import", amount) if energy else None,
                "key": r.key,
            }
        )
    return rows


def daily_rows(rows: Sequence[Mapping[str, Any]], periods: Sequence[str]) -> list[dict[str, Any]]:
    """The manual energy as rows of the daily table (no TOU split, no completeness)."""
    return [
        {
            "date": r["date"],
            "span": "entry",
            "start": r["start"],
            "end": r["end"],
            "series": r["series"],
            "counter": r["counter"],
            "kind": r["kind"],
            "unit": r["unit"],
            "energy": r["amount"],
            **dict.fromkeys(periods),
            "completeness": None,
            "tce": r["tce"],
            "co2_t": r["co2_t"],
            "demand_max_kw": None,
            "load_factor": None,
            "quality": "good",
            "node": False,
            "source": "manual",
        }
        for r in rows
        if r["use"] == "energy"
    ]


def total_rows(rows: Sequence[Mapping[str, Any]], periods: Sequence[str]) -> list[dict[str, Any]]:
    """Period totals of the manual energy, per series and counter."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["use"] != "energy":
            continue
        t = totals.get((r["series"], r["counter"]))
        if t is None:
            t = totals[(r["series"], r["counter"])] = {
                "series": r["series"],
                "counter": r["counter"],
                "kind": r["kind"],
                "unit": r["unit"],
                "energy": 0.0,
                **dict.fromkeys(periods),
                "tce": None,
                "co2_t": None,
                "completeness": None,
                "node": False,
                "source": "manual",
            }
        t["energy"] += r["amount"]
        for name in ("tce", "co2_t"):
            if r[name] is not None:
                t[name] = (t[name] or 0.0) + r[name]
    return list(totals.values())


def indicators(
    site: str,
    totals: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    outside: Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """综合能耗 of the site for the period, and 单位产品综合能耗 per product entered, each
    with the completeness (the lowest of the measured series behind it) and quality (the
    worst); then every meter `outside` the hierarchy, listed and not counted."""
    measured = [t for t in totals if t.get("source") != "manual" and t["tce"] is not None]
    site_rows = [t for t in measured if t["node"] and t["series"] == site]
    basis = "site series (Σ top-level hierarchy nodes)"
    if not site_rows:
        site_rows = [t for t in measured if not t["node"]]
        basis = "Σ meters (no hierarchy site series in the period)"
    manual_tce = sum(r["tce"] for r in rows if r["use"] == "energy" and r["tce"] is not None)
    measured_tce = sum(t["tce"] for t in site_rows)
    total_tce = measured_tce + manual_tce
    shares = [t["completeness"] for t in site_rows if t.get("completeness") is not None]
    completeness = min(shares) if shares else None
    quality = "good" if all(t.get("quality", "good") == "good" for t in site_rows) else "uncertain"
    if not site_rows:
        quality = "manual only" if manual_tce else "no data"
    excluded = ""
    if outside:
        excluded = "; excludes meters outside the hierarchy: " + ", ".join(
            f"{d} {p}" for d, p in outside
        )
    out: list[dict[str, Any]] = [
        {
            "indicator": "综合能耗 comprehensive energy consumption",
            "value": total_tce,
            "unit": "tce",
            "completeness": completeness,
            "quality": quality,
            "basis": f"{basis}: {measured_tce:.6g} tce measured + {manual_tce:.6g} tce manual"
            + excluded,
        }
    ]
    outputs: dict[tuple[str, str | None], float] = {}
    for r in rows:
        if r["use"] == "output":
            key = (r["counter"], r["unit"])
            outputs[key] = outputs.get(key, 0.0) + r["amount"]
    for (product, unit), amount in outputs.items():
        out.append(
            {
                "indicator": f"产品产量 output: {product}",
                "value": amount,
                "unit": unit or "",
                "completeness": None,
                "quality": "manual",
                "basis": "manual entries",
            }
        )
        out.append(
            {
                "indicator": f"单位产品综合能耗 per unit of {product}",
                "value": total_tce * 1000.0 / amount if amount > 0 else None,
                "unit": f"kgce/{unit}" if unit else "kgce",
                "completeness": completeness,
                "quality": quality,
                "basis": "综合能耗 / output, same period",
            }
        )
    by_key = {(t["series"], t["counter"]): t for t in measured}
    for device, point in outside:
        t = by_key.get((device, point))
        out.append(
            {
                "indicator": f"outside the hierarchy, not in 综合能耗: {device} {point}",
                "value": None if t is None else t["tce"],
                "unit": "tce",
                "completeness": 0.0 if t is None else t["completeness"],
                "quality": "no data" if t is None else t["quality"],
                "basis": "a meter in no energy.hierarchy node (it may be a sub-meter, or a "
                "supply the tree misses); add it to a node to count it",
            }
        )
    return out

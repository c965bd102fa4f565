"""`edge-agent report` over the ingest's stores: CSV against the reference, HTML plots.

The store is written with the ingest's own EmbeddedStore from simulated histories (a
16-bit counter that wraps, also during a 3-hour outage its `max_rate` makes believable,
a reactive counter, a second meter), so the report reads exactly what the ingest keeps;
the same data written to VictoriaMetrics by the ingest's writer gives the same tables.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.cli.main import main
from edge_agent.ingest.config import InfluxConfig
from edge_agent.ingest.embedded_store import EmbeddedStore
from edge_agent.ingest.influx import InfluxStore
from edge_agent.ingest.schema import DataMessage, Source
from edge_agent.ingest.store import StoreBatch
from tests.energy_reference import History, local_ms, simulate
from tests.fixtures.victoria import Victoria
from tests.ingest_support import unique_site

MIN = 60_000

SITE = """\
site: @SITE@
gateway: gw-01
@STORE@
energy:
  tariff: example-tou
  contract_demand_kw: 150
  hierarchy:
    - {name: hall, level: area, meters: [incomer]}
  virtual_meters:
    - {name: rest, formula: "incomer - feeder"}
devices:
  - name: incomer
    driver: modbus
    url: tcp://127.0.0.1:1502
    interval_s: 60
    points:
      - {name: energy_import, address: 0, type: uint16, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import, max_rate: 200}}
      - {name: reactive_energy_import, address: 2, type: uint32, scale: 0.01, unit: kvarh,
         energy: {kind: reactive, direction: import}}
  - name: feeder
    driver: modbus
    url: tcp://127.0.0.1:1503
    interval_s: 60
    points:
      - {name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
"""


def _site(site: str = "plant-r", store: str = "ingest: {store: store.sqlite}") -> str:
    return SITE.replace("@SITE@", site).replace("@STORE@", store)


def _messages(histories: dict[str, dict[str, History]], site: str) -> list[DataMessage]:
    messages = []
    seq = 0
    for device, points in histories.items():
        times = sorted({t for h in points.values() for t in h.ts})
        lookup = {name: dict(zip(h.ts, h.register, strict=True)) for name, h in points.items()}
        for t in times:
            seq += 1
            values = [
                (name, lookup[name][t], "kWh", 0, None) for name in points if t in lookup[name]
            ]
            messages.append(
                DataMessage(
                    Source(f"f/{site}/gw-01/{device}/data", site, "gw-01", device),
                    seq,
                    t,
                    False,
                    values,  # type: ignore[arg-type]
                )
            )
    return messages


def test_report_recomputes_the_period_from_the_embedded_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    start, end = local_ms(2026, 11, 29, 22, 0), local_ms(2026, 12, 2, 1, 30)
    common = {"start_ms": start, "end_ms": end, "poll_s": 60.0, "resolution": 0.01}
    incomer = simulate(
        seed=21,
        start_register=500.0,
        power_kw=lambda t: 90.0 + 30.0 * ((t // 3_600_000) % 5),
        modulus=655.36,
        outages=((local_ms(2026, 11, 30, 10, 5), local_ms(2026, 11, 30, 13, 0)),),
        **common,  # type: ignore[arg-type]
    )
    reactive = simulate(seed=22, power_kw=lambda t: 40.0, **common)  # type: ignore[arg-type]
    feeder = simulate(seed=23, power_kw=lambda t: 35.0, **common)  # type: ignore[arg-type]
    EmbeddedStore(tmp_path / "store.sqlite").write_sync(
        _messages(
            {
                "incomer": {"energy_import": incomer, "reactive_energy_import": reactive},
                "feeder": {"energy_import": feeder},
            },
            "plant-r",
        )
    )
    out = tmp_path / "report"
    code = main(
        [
            "report",
            str(tmp_path / "site.yaml"),
            "--from",
            "2026-11-30",
            "--to",
            "2026-12-02",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "read incomer:" in captured.err and "writing report.html" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "completeness.csv",
        "daily_energy.csv",
        "demand.csv",
        "indicators.csv",
        "manual.csv",
        "power_factor.csv",
        "report.html",
        "totals.csv",
    ]
    with (out / "daily_energy.csv").open(encoding="utf-8-sig") as f:
        daily = list(csv.DictReader(f))
    rows = {(r["series"], r["counter"], r["date"]): r for r in daily}
    assert {d for _, _, d in rows} == {"2026-11-30", "2026-12-01"}  # only the period
    for day, (a, b) in {
        "2026-11-30": (local_ms(2026, 11, 30), local_ms(2026, 12, 1)),
        "2026-12-01": (local_ms(2026, 12, 1), local_ms(2026, 12, 2)),
    }.items():
        row = rows[("incomer", "energy_import", day)]
        assert float(row["energy"]) == pytest.approx(incomer.energy(a, b), abs=1e-4)
        assert float(row["completeness"]) == pytest.approx(incomer.readings(a, b) / 1440, abs=1e-4)
        assert float(row["tce"]) == pytest.approx(incomer.energy(a, b) * 0.1229e-3, abs=1e-6)
        rest = rows[("rest", "electricity", day)]
        assert float(rest["energy"]) == pytest.approx(
            incomer.energy(a, b) - feeder.energy(a, b), abs=1e-4
        )
        assert float(rows[("hall", "electricity", day)]["energy"]) == pytest.approx(
            incomer.energy(a, b), abs=1e-4
        )
    assert rows[("incomer", "energy_import", "2026-11-30")]["quality"] == "uncertain"  # outage
    assert rows[("incomer", "energy_import", "2026-12-01")]["quality"] == "good"
    with (out / "power_factor.csv").open(encoding="utf-8-sig") as f:
        pf = {r["date"]: r for r in csv.DictReader(f)}
    a, b = local_ms(2026, 12, 1), local_ms(2026, 12, 2)
    kwh, kvarh = incomer.energy(a, b), reactive.energy(a, b)
    assert float(pf["2026-12-01"]["pf"]) == pytest.approx(
        kwh / (kwh**2 + kvarh**2) ** 0.5, abs=1e-5
    )
    with (out / "demand.csv").open(encoding="utf-8-sig") as f:
        demand = [r for r in csv.DictReader(f) if r["meter"] == "incomer"]
    assert len(demand) == 2 * 1440  # every minute of the two days
    assert demand[0]["time"] == "2026-11-30T00:01:00+08:00"
    with (out / "totals.csv").open(encoding="utf-8-sig") as f:
        totals = {(r["series"], r["counter"]): r for r in csv.DictReader(f)}
    whole = incomer.energy(local_ms(2026, 11, 30), local_ms(2026, 12, 2))
    total = totals[("incomer", "energy_import")]
    assert float(total["energy"]) == pytest.approx(whole, abs=2e-4)
    assert total["standard_coal"] == "gbt2589-2020-equivalent"
    assert total["grid_emission"] == "mee-nbs-2023-national"
    assert float(total["co2_t"]) == pytest.approx(whole * 0.5306e-3, abs=1e-5)
    peak = max(float(r["demand_kw"]) for r in demand)
    assert float(total["demand_max_kw"]) == pytest.approx(peak)
    assert float(total["load_factor"]) == pytest.approx(whole / 48 / peak, abs=1e-4)

    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 5  # TOU bars, demand, power factor, tce, completeness
    assert "contract demand" in html and "尖峰" in html
    assert "gbt2589-2020-equivalent" in html and "mee-nbs-2023-national" in html
    # Self-contained: no scripts, stylesheets or images fetched from anywhere.
    assert not re.search(r"<(script|link|img)\b", html)
    assert not re.search(r'(src|href)="https?:', html)


def test_report_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    args = ["report", str(tmp_path / "site.yaml"), "--out", str(tmp_path / "r")]
    assert main([*args, "--from", "2026-11-30", "--to", "2026-12-01"]) == 1
    assert "no embedded store at" in capsys.readouterr().err
    assert main([*args, "--from", "2026-11-31", "--to", "2026-12-01"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


async def test_report_reads_victoriametrics_like_the_embedded_store(
    tmp_path: Path, victoria: Victoria, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    start, end = local_ms(2026, 11, 9, 23, 0), local_ms(2026, 11, 11, 0, 30)
    common = {"start_ms": start, "end_ms": end, "poll_s": 60.0, "resolution": 0.01}
    histories = {
        "incomer": {
            "energy_import": simulate(seed=31, drop_share=0.02, modulus=655.36, **common),  # type: ignore[arg-type]
            "reactive_energy_import": simulate(seed=32, power_kw=lambda t: 20.0, **common),  # type: ignore[arg-type]
        },
        "feeder": {"energy_import": simulate(seed=33, power_kw=lambda t: 30.0, **common)},  # type: ignore[arg-type]
    }
    messages = _messages(histories, site)
    # Through the ingest's own writer, as the ingest service would.
    influx = InfluxStore(InfluxConfig(url=victoria.url, org="o", bucket="b"))
    written = sum(len(m.points) for m in messages)
    await influx.write(StoreBatch(messages=messages, points=written))
    await influx.close()
    victoria.wait_for_samples(f'{{__name__="edge_value",site="{site}"}}', written)
    EmbeddedStore(tmp_path / "store.sqlite").write_sync(messages)
    (tmp_path / "vm.yaml").write_text(
        _site(site, f'influx: {{url: "{victoria.url}", org: o, bucket: b}}')
    )
    (tmp_path / "site.yaml").write_text(_site(site))
    period = ["--from", "2026-11-10", "--to", "2026-11-11"]
    assert main(["report", str(tmp_path / "vm.yaml"), *period, "--out", str(tmp_path / "vm")]) == 0
    assert f"reading {victoria.url}" in capsys.readouterr().err
    assert (
        main(["report", str(tmp_path / "site.yaml"), *period, "--out", str(tmp_path / "db")]) == 0
    )
    for name in ("daily_energy.csv", "totals.csv", "power_factor.csv", "completeness.csv"):
        vm = (tmp_path / "vm" / name).read_text()
        assert vm == (tmp_path / "db" / name).read_text(), name
        assert len(vm.splitlines()) > 1, name
    h = histories["incomer"]["energy_import"]
    with (tmp_path / "vm" / "daily_energy.csv").open(encoding="utf-8-sig") as f:
        row = next(
            r
            for r in csv.DictReader(f)
            if r["series"] == "incomer" and r["counter"] == "energy_import"
        )
    a, b = local_ms(2026, 11, 10), local_ms(2026, 11, 11)
    assert float(row["energy"]) == pytest.approx(h.energy(a, b), abs=1e-4)


UPLINK = """\
uplink:
  endpoints:
    - {name: province, url: "https://127.0.0.1:9/upload", template: @TEMPLATE@}
"""


def test_manual_entries_are_reported_like_measured_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """手工填报 kept by `uplink manual` counts in the report's days, totals and 综合能耗."""
    template = shipped(Kind.TEMPLATES, "example-province")
    site = _site() + UPLINK.replace("@TEMPLATE@", str(template))
    (tmp_path / "site.yaml").write_text(site)
    day = (local_ms(2026, 12, 1), local_ms(2026, 12, 2))
    incomer = simulate(
        seed=31,
        start_ms=day[0] - 3_600_000,
        end_ms=day[1] + 3_600_000,
        poll_s=60.0,
        resolution=0.01,
        power_kw=lambda t: 100.0,
        modulus=655.36,
    )
    EmbeddedStore(tmp_path / "store.sqlite").write_sync(
        _messages({"incomer": {"energy_import": incomer}}, "plant-r")
    )
    entries = tmp_path / "entries.csv"
    entries.write_text(
        "device,counter,kind,start,end,value,unit\n"
        "boiler-house,coal_in,raw_coal,2026-12-01T00:00,2026-12-02T00:00,3.2,t\n"
        "generator,diesel_in,diesel,2026-12-01T08:00,2026-12-01T20:00,500,kg\n"
        "plant,cement,production,2026-12-01T00:00,2026-12-02T00:00,120,t\n"
        "plant,output_value,output_value,2026-12-01T00:00,2026-12-02T00:00,35.5,万元\n"
        "boiler-house,coal_in,raw_coal,2026-12-02T00:00,2026-12-03T00:00,9.9,t\n",
        encoding="utf-8",
    )
    assert main(["uplink", "manual", str(tmp_path / "site.yaml"), str(entries)]) == 0
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(
        "device,counter,kind,start,end,value,unit\n"
        "plant,steam_in,steam,2026-12-01,2026-12-02,4,t\n"
        "plant,kwh,electricity,2026-12-01,2026-12-02,4,t\n"
    )
    assert main(["uplink", "manual", str(tmp_path / "site.yaml"), str(wrong)]) == 2
    err = capsys.readouterr().err
    assert f"{wrong}:3: unit 't' is not a unit of electricity" in err

    out = tmp_path / "report"
    args = ["report", str(tmp_path / "site.yaml"), "--out", str(out)]
    code = main([*args, "--from", "2026-12-01", "--to", "2026-12-02"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "4 manual entries (手工填报)" in captured.err  # the 12-02 entry is outside
    with (out / "daily_energy.csv").open(encoding="utf-8-sig") as f:
        daily = {(r["series"], r["counter"]): r for r in csv.DictReader(f)}
    coal, diesel = daily[("boiler-house", "coal_in")], daily[("generator", "diesel_in")]
    assert (coal["source"], coal["date"], coal["unit"]) == ("manual", "2026-12-01", "t")
    assert float(coal["tce"]) == pytest.approx(3.2 * 0.7143)
    assert float(diesel["energy"]) == pytest.approx(0.5)  # kg entered, t in the table
    assert float(diesel["tce"]) == pytest.approx(0.5 * 1.4571)
    assert daily[("incomer", "energy_import")]["source"] == "measured"
    assert ("plant", "cement") not in daily  # output is not energy
    with (out / "totals.csv").open(encoding="utf-8-sig") as f:
        totals = {(r["series"], r["counter"]): r for r in csv.DictReader(f)}
    assert totals[("boiler-house", "coal_in")]["source"] == "manual"
    assert totals[("boiler-house", "coal_in")]["standard_coal"] == "gbt2589-2020-equivalent"
    with (out / "manual.csv").open(encoding="utf-8-sig") as f:
        manual = list(csv.DictReader(f))
    assert [(r["counter"], r["use"]) for r in manual] == [
        ("coal_in", "energy"),
        ("cement", "output"),
        ("output_value", "other"),
        ("diesel_in", "energy"),
    ]
    with (out / "indicators.csv").open(encoding="utf-8-sig") as f:
        ind = {r["indicator"]: r for r in csv.DictReader(f)}
    measured_tce = incomer.energy(*day) * 0.1229e-3  # the site series: Σ hall = incomer
    site_tce = measured_tce + 3.2 * 0.7143 + 0.5 * 1.4571
    comprehensive = ind["综合能耗 comprehensive energy consumption"]
    assert float(comprehensive["value"]) == pytest.approx(site_tce, abs=1e-5)
    assert comprehensive["basis"].startswith("site series")
    assert float(ind["产品产量 output: cement"]["value"]) == 120.0
    per_unit = ind["单位产品综合能耗 per unit of cement"]
    assert float(per_unit["value"]) == pytest.approx(site_tce * 1000 / 120, abs=1e-3)
    assert per_unit["unit"] == "kgce/t"
    html = (out / "report.html").read_text()
    assert "手工填报" in html and "单位产品综合能耗" in html and "35.5" in html

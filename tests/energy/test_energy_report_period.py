"""What the report must say about its period, missing data, the contract and excluded meters.

Written from the rules (shared energy.md §1.4, README "Energy monitoring"): days are local
days of `energy.timezone` and the report says so; completeness is delivered / expected
readings and below 0.90 a number is uncertain; a period with no data is not a period of
zero consumption; the contract demand belongs to the meter it is billed on; a meter outside
the hierarchy is never silently left out of 综合能耗; CSVs open in Excel (UTF-8 BOM, CRLF).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edge_agent.cli.main import main
from edge_agent.config.site import load_config
from edge_agent.energy.report.build import write_report
from edge_agent.energy.report.source import EmbeddedSource
from edge_agent.ingest.embedded_store import EmbeddedStore
from tests.energy.test_energy_report import _messages, _site
from tests.energy_reference import History, local_ms, simulate

HOUR = 3_600_000


def _store(
    tmp_path: Path, *, start: int, end: int, outage: tuple[int, int] | None = None
) -> dict[str, History]:
    common = {"start_ms": start, "end_ms": end, "poll_s": 60.0, "resolution": 0.01}
    incomer = simulate(
        seed=41,
        power_kw=lambda t: 100.0 + 20.0 * ((t // HOUR) % 3),
        modulus=655.36,
        outages=(outage,) if outage else (),
        **common,  # type: ignore[arg-type]
    )
    feeder = simulate(seed=42, power_kw=lambda t: 30.0, **common)  # type: ignore[arg-type]
    EmbeddedStore(tmp_path / "store.sqlite").write_sync(
        _messages(
            {"incomer": {"energy_import": incomer}, "feeder": {"energy_import": feeder}}, "plant-r"
        )
    )
    return {"incomer": incomer, "feeder": feeder}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _report(tmp_path: Path, start: str, end: str, out: str = "r") -> tuple[int, str, str]:
    import contextlib
    import io

    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        code = main(
            [
                "report",
                str(tmp_path / "site.yaml"),
                "--from",
                start,
                "--to",
                end,
                "--out",
                str(tmp_path / out),
            ]
        )
    return code, stdout.getvalue(), err.getvalue()


def test_the_period_is_local_time_with_its_zone_and_takes_datetimes(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    h = _store(tmp_path, start=local_ms(2026, 12, 1) - HOUR, end=local_ms(2026, 12, 2) + HOUR)
    code, _, err = _report(tmp_path, "2026-12-01T08:00", "2026-12-01T20:00")
    assert code == 0, err
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "2026-12-01 08:00 to 2026-12-01 20:00 Asia/Shanghai (UTC+08:00)" in html
    assert "2026-12-01 08:00 to 2026-12-01 20:00 Asia/Shanghai (UTC+08:00)" in err
    daily = {(r["series"], r["counter"]): r for r in _csv(tmp_path / "r" / "daily_energy.csv")}
    row = daily[("incomer", "energy_import")]
    a, b = local_ms(2026, 12, 1, 8), local_ms(2026, 12, 1, 20)
    assert (row["date"], row["span"]) == ("2026-12-01", "partial")
    assert (row["start"], row["end"]) == ("2026-12-01T08:00:00+08:00", "2026-12-01T20:00:00+08:00")
    assert float(row["energy"]) == pytest.approx(h["incomer"].energy(a, b), abs=1e-3)
    assert float(row["completeness"]) == pytest.approx(h["incomer"].readings(a, b) / 720, abs=1e-4)
    totals = {(r["series"], r["counter"]): r for r in _csv(tmp_path / "r" / "totals.csv")}
    assert float(totals[("incomer", "energy_import")]["energy"]) == pytest.approx(
        h["incomer"].energy(a, b), abs=1e-3
    )
    # A date is local 00:00 of that day; an explicit offset is honoured (00:00 UTC = 08:00 +08).
    code, _, err = _report(tmp_path, "2026-12-01T00:00+00:00", "2026-12-01T12:00Z", out="utc")
    assert code == 0, err
    row = {(r["series"], r["counter"]): r for r in _csv(tmp_path / "utc" / "daily_energy.csv")}[
        ("incomer", "energy_import")
    ]
    assert (row["start"], row["end"]) == ("2026-12-01T08:00:00+08:00", "2026-12-01T20:00:00+08:00")
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02", out="day")
    assert code == 0, err
    row = {(r["series"], r["counter"]): r for r in _csv(tmp_path / "day" / "daily_energy.csv")}[
        ("incomer", "energy_import")
    ]
    assert row["span"] == "day"
    day = (local_ms(2026, 12, 1), local_ms(2026, 12, 2))
    assert float(row["energy"]) == pytest.approx(h["incomer"].energy(*day), abs=1e-3)
    code, _, err = _report(tmp_path, "2026-12-01T25:00", "2026-12-02", out="bad")
    assert code == 2
    assert "2026-12-01T25:00" in err and "YYYY-MM-DD" in err and "Traceback" not in err


def test_a_period_without_data_says_so(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    _store(tmp_path, start=local_ms(2026, 12, 1) - HOUR, end=local_ms(2026, 12, 2) + HOUR)
    code, stdout, err = _report(tmp_path, "2026-11-20", "2026-11-21")
    assert code == 3
    assert "no data" in err
    assert "2026-11-20 00:00 to 2026-11-21 00:00 Asia/Shanghai (UTC+08:00)" in err
    assert "0 tce" not in err + stdout
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_the_current_day_is_partial_not_zero(tmp_path: Path) -> None:
    """The day in progress: its energy so far, marked partial, completeness of the part."""
    (tmp_path / "site.yaml").write_text(_site())
    now = local_ms(2026, 12, 1, 14, 40)
    h = _store(tmp_path, start=local_ms(2026, 11, 30, 23), end=now)
    loaded = load_config(tmp_path / "site.yaml")
    source = EmbeddedSource(tmp_path / "store.sqlite", site="plant-r")
    out = tmp_path / "r"
    write_report(loaded, source, local_ms(2026, 12, 1), local_ms(2026, 12, 2), out, now_ms=now)
    daily = {(r["series"], r["counter"]): r for r in _csv(out / "daily_energy.csv")}
    row = daily[("incomer", "energy_import")]
    a, b = local_ms(2026, 12, 1), local_ms(2026, 12, 1, 14, 30)  # the last closed interval
    assert (row["span"], row["end"]) == ("partial", "2026-12-01T14:30:00+08:00")
    assert float(row["energy"]) == pytest.approx(h["incomer"].energy(a, b), abs=1e-3)
    assert float(row["energy"]) > 1000
    assert float(row["completeness"]) == pytest.approx(h["incomer"].readings(a, b) / 870, abs=1e-4)
    assert row["quality"] == "good"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "partial" in html and "2026-12-01 14:30" in html


def test_completeness_and_quality_of_every_indicator(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    day = (local_ms(2026, 12, 1), local_ms(2026, 12, 2))
    outage = (local_ms(2026, 12, 1, 9), local_ms(2026, 12, 1, 13))  # 4 of 24 hours missed
    h = _store(tmp_path, start=day[0] - HOUR, end=day[1] + HOUR, outage=outage)
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02")
    assert code == 0, err
    ind = {r["indicator"]: r for r in _csv(tmp_path / "r" / "indicators.csv")}
    site = ind["综合能耗 comprehensive energy consumption"]
    expected = h["incomer"].readings(*day) / 1440  # the site series is hall = incomer
    assert expected < 0.9
    assert float(site["completeness"]) == pytest.approx(expected, abs=1e-4)
    assert site["quality"] == "uncertain"
    assert float(site["value"]) == pytest.approx(h["incomer"].energy(*day) * 0.1229e-3, abs=1e-5)


def test_the_contract_demand_is_drawn_only_for_its_meter(tmp_path: Path) -> None:
    # The hierarchy's one top-level meter is the supply: incomer (no key needed) ...
    (tmp_path / "site.yaml").write_text(_site())
    _store(tmp_path, start=local_ms(2026, 12, 1) - HOUR, end=local_ms(2026, 12, 2) + HOUR)
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02")
    assert code == 0, err
    demand = _csv(tmp_path / "r" / "demand.csv")
    assert {r["meter"] for r in demand} == {"incomer", "feeder"}
    assert {r["contract_demand_kw"] for r in demand if r["meter"] == "incomer"} == {"150"}
    assert {r["contract_demand_kw"] for r in demand if r["meter"] == "feeder"} == {""}
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert html.count("contract demand 150 kW") == 1
    # ... or the one named by energy.contract_demand_meter.
    text = _site().replace(
        "contract_demand_kw: 150", "contract_demand_kw: 150\n  contract_demand_meter: feeder"
    )
    (tmp_path / "site.yaml").write_text(text)
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02", out="f")
    assert code == 0, err
    demand = _csv(tmp_path / "f" / "demand.csv")
    assert {r["contract_demand_kw"] for r in demand if r["meter"] == "feeder"} == {"150"}
    assert {r["contract_demand_kw"] for r in demand if r["meter"] == "incomer"} == {""}
    # A meter that is not one: `check` names the file and line.
    (tmp_path / "site.yaml").write_text(
        text.replace("contract_demand_meter: feeder", "contract_demand_meter: nope")
    )
    import contextlib
    import io

    err_io = io.StringIO()
    with contextlib.redirect_stderr(err_io), contextlib.redirect_stdout(io.StringIO()) as out_io:
        assert main(["check", str(tmp_path / "site.yaml")]) != 0
    said = err_io.getvalue() + out_io.getvalue()
    assert "site.yaml:7 energy.contract_demand_meter" in said and "nope" in said


def test_a_meter_outside_the_hierarchy_is_listed_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(_site())  # feeder is in no node (only in a formula)
    h = _store(tmp_path, start=local_ms(2026, 12, 1) - HOUR, end=local_ms(2026, 12, 2) + HOUR)
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02")
    assert code == 0, err
    day = (local_ms(2026, 12, 1), local_ms(2026, 12, 2))
    ind = {r["indicator"]: r for r in _csv(tmp_path / "r" / "indicators.csv")}
    site = ind["综合能耗 comprehensive energy consumption"]
    assert float(site["value"]) == pytest.approx(h["incomer"].energy(*day) * 0.1229e-3, abs=1e-5)
    assert "feeder" in site["basis"]
    excluded = ind["outside the hierarchy, not in 综合能耗: feeder energy_import"]
    assert float(excluded["value"]) == pytest.approx(h["feeder"].energy(*day) * 0.1229e-3, abs=1e-5)
    assert excluded["unit"] == "tce"
    assert float(excluded["completeness"]) == pytest.approx(
        h["feeder"].readings(*day) / 1440, abs=1e-4
    )
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "outside the hierarchy" in html and "feeder" in html


def test_csvs_open_in_excel_with_chinese_text(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(_site())
    _store(tmp_path, start=local_ms(2026, 12, 1) - HOUR, end=local_ms(2026, 12, 2) + HOUR)
    code, _, err = _report(tmp_path, "2026-12-01", "2026-12-02")
    assert code == 0, err
    files = sorted((tmp_path / "r").glob("*.csv"))
    assert len(files) == 7
    for path in files:
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), path.name  # UTF-8 BOM: Excel reads UTF-8
        body = raw[3:]
        assert body.count(b"\r\n") == body.count(b"\n") > 0, path.name  # CRLF only
        body.decode("utf-8")
    assert "综合能耗" in (tmp_path / "r" / "indicators.csv").read_bytes().decode("utf-8-sig")

"""PromQL dashboards (`grafana generate --datasource prometheus`) against a real VictoriaMetrics.

A simulated site (the demo's four meters and hierarchy, polled every 60 s with changing
loads from 2026-10-31 22:00 to 2026-11-02 00:20 local, one feeder silent for 20 minutes)
is replayed through the real agent (scripted drivers, tests/recorded_site.py), a real
Mosquitto and the real ingest into a real VictoriaMetrics. Every query of every generated
dashboard, panel targets and variables, is expanded as Grafana expands it
(tests/grafana_emulation.py) for every area and for all devices or one, and executed there:
none may fail, and with the whole site selected none may come back empty. Then the numbers
the main panels show equal the `report`'s for the same period, read from the same store:
at 14:00 on 2026-11-01, today's electricity by TOU period (site and areas) and each
counter's completeness; at 00:15 the next day, the daily bars, the level below, this
month's standard coal and CO2 and the month's maximum demand of every meter.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped, shipped_demo
from edge_agent.cli import main as cli
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.delivery.outbox import OutboxStats
from edge_agent.energy.points import energy_points
from edge_agent.grafana.dashboards import STORES, dashboards
from edge_agent.ingest.service import Ingest
from edge_agent.ops.gateway_health import GATEWAY_DEVICE, gateway_doc
from edge_agent.uplink.platform import manual_doc
from edge_agent.uplink.store import IntervalRecord
from tests.e2e.test_grafana_push import FakeGrafana, grafana  # noqa: F401 (the stand-in's fixture)
from tests.energy_reference import local_ms
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.victoria import Victoria
from tests.grafana_emulation import Grafana, View, ask, series
from tests.ingest_support import unique_site
from tests.recorded_site import Sample, replay

pytestmark = pytest.mark.timeout(180)

MIN = 60_000
START = local_ms(2026, 10, 31, 22, 0) + 15_000  # polls at hh:mm:15
END = local_ms(2026, 11, 2, 0, 20)
TODAY = local_ms(2026, 11, 1, 14, 0)  # where the user looks from: during the day
NOW = local_ms(2026, 11, 2, 0, 15)  # and just after it
SILENT = (local_ms(2026, 11, 1, 2, 0), local_ms(2026, 11, 1, 2, 20))  # line-2-feeder
METERS = {
    "main-incomer": "chint-dtsu666",
    "compressor": "eastron-sdm630",
    "line-1-feeder": "acrel-adl400",
    "line-2-feeder": "acrel-adl400-float",
}


def _site_text(site: str, *, broker: str, prefix: str, influx: str) -> str:
    # The incomer's over-voltage alarm is configured: the ingest stores only alarms its site
    # file names (the recorded transition below is one of them).
    alarms = {"main-incomer": ", alarms: [{point: voltage_a, kind: high, limit: 245}]"}
    devices = "\n".join(
        f"  - {{name: {name}, driver: modbus, url: 'tcp://127.0.0.1:{i}', interval_s: 60,"
        f" profile: {profile}{alarms.get(name, '')}}}"
        for i, (name, profile) in enumerate(METERS.items(), 1)
    )
    return f"""site: {site}
gateway: gw-01
mqtt: {{url: "{broker}", prefix: "{prefix}"}}
outbox: {{path: outbox.sqlite}}
influx: {{url: "{influx}", token: "${{INFLUX_TOKEN}}", org: plant, bucket: edge}}
ingest: {{flush_interval_s: 0.05}}
energy:
  timezone: Asia/Shanghai
  interval_min: 15
  tariff: {shipped(Kind.TARIFFS, "example-tou")}
  contract_demand_kw: 40
  contract_demand_meter: main-incomer
  hierarchy:
    - {{name: workshop-1, level: area, meters: [main-incomer]}}
    - {{name: line-1, level: line, parent: workshop-1, meters: [line-1-feeder]}}
    - {{name: line-2, level: line, parent: workshop-1, meters: [line-2-feeder]}}
    - {{name: utilities, level: area, meters: [compressor]}}
  virtual_meters:
    - {{name: workshop-1-unmetered, formula: "main-incomer - line-1-feeder - line-2-feeder"}}
devices:
{devices}
"""


def _load_kw(device: str, t_ms: int) -> float:
    """What each meter draws: changing over the day, a 35 kW peak on line 1 at 09:00."""
    local = dt.datetime.fromtimestamp(t_ms / 1000, dt.timezone(dt.timedelta(hours=8)))
    h = local.hour + local.minute / 60
    line1 = 10 + 6 * math.sin(2 * math.pi * h / 6) + (25 if local.day == 1 and 9 <= h < 9.7 else 0)
    line2 = 8 + 2 * math.cos(2 * math.pi * h / 4)
    return {
        "line-1-feeder": line1,
        "line-2-feeder": line2,
        "main-incomer": line1 + line2 + 5,
        "compressor": 15 + (5 if int(h) % 2 else 0),
    }[device]


def _recording(loaded: LoadedConfig) -> dict[str, list[tuple[int, Sample]]]:
    """Each meter's polls: counters integrate the load between polls, the rest is steady."""
    counters = {(p.device, p.point): p.options for p in energy_points(loaded.devices)}
    out: dict[str, list[tuple[int, Sample]]] = {}
    for setup in loaded.devices:
        name = setup.device.name
        assert setup.profile is not None
        points = setup.profile.points
        energy = 2000.0 + 100 * len(out)
        samples: list[tuple[int, Sample]] = []
        t = START
        while t < END:
            kw = _load_kw(name, t)
            values: dict[str, float] = {}
            for p in points:
                options = counters.get((name, p.name))
                unit = p.unit or ""
                if options is not None and options.role == "counter":
                    value = {"electricity": energy if options.direction == "import" else 5.0}.get(
                        options.kind, 0.3 * energy
                    )
                elif options is not None or unit in ("W", "kW", "var", "VA"):
                    value = kw * (1000 if unit in ("W", "var", "VA") else 1)
                else:
                    value = {"V": 230.0, "A": 10.0, "Hz": 50.0, "kWh": energy}.get(unit, 0.95)
                values[p.name] = round(value, 2)
            silent = name == "line-2-feeder" and SILENT[0] <= t < SILENT[1]
            samples.append((t, None if silent else values))
            energy += kw / 60
            t += MIN
        out[name] = samples
    return out


def _extras(loaded: LoadedConfig, prefix: str) -> list[tuple[str, bytes]]:
    """What the agent publishes besides polls, at the recording's times: its health series,
    a manual entry (手工填报) and an alarm transition."""
    site, gateway = loaded.site.site, loaded.site.gateway
    base = f"{prefix}/{site}/{gateway}"
    head = {"gateway": gateway, "historical": False}
    health = gateway_doc(OutboxStats(), mqtt_connected=True, devices_up=4, devices=4)
    out = [
        (
            f"{base}/{GATEWAY_DEVICE}/data",
            orjson.dumps({**head, **health, "seq": 100_000 + k, "ts_ms": NOW - k * MIN}),
        )
        for k in range(1, 4)
    ]
    day = local_ms(2026, 11, 1)
    entry = IntervalRecord(
        site, gateway, "boiler-house", "coal_in", "raw_coal", "2026-11-01T00:00:00+08:00",
        "2026-11-02T00:00:00+08:00", day, day + 86_400_000, 3.2, "t", "good", None, manual=True,
    )  # fmt: skip
    out.append((f"{base}/energy", orjson.dumps({**head, **manual_doc(entry), "seq": 100_010})))
    at = NOW - 3_600_000
    alarm = {
        **head, "seq": 100_011, "ts_ms": at, "schema_version": 1, "event": "raise",
        "previous": "normal", "id": "main-incomer/voltage_a/high", "device": "main-incomer",
        "point": "voltage_a", "alarm": "high", "kind": "high", "priority": 2,
        "state": "active_unack", "active": True, "acked": False, "latched": False,
        "shelved_until_ms": None, "out_of_service": False, "since_ms": at, "transition": 1,
        "value": 250.0, "unit": "V", "message": "voltage_a high", "quality": "good",
        "chattering": False, "limit": 245.0,
    }  # fmt: skip
    out.append((f"{base}/alarms", orjson.dumps(alarm)))
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _num(text: str) -> float:
    return float(text) if text else 0.0


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto, victoria: Victoria
) -> tuple[LoadedConfig, Path]:
    """The site replayed into VictoriaMetrics, and two reports read from it: `month`
    (2026-10-31 to 2026-11-02 00:15) and `today` (2026-11-01 to 14:00)."""
    import asyncio

    folder = tmp_path_factory.mktemp("promql-site")
    path = folder / "site.yaml"
    prefix = f"promql-{unique_site()}"
    text = _site_text(unique_site(), broker=mosquitto.url, prefix=prefix, influx=victoria.url)
    path.write_text(text)
    loaded = load_config(path, environ={"INFLUX_TOKEN": "t"})
    ingest = Ingest(loaded, worker="promql")
    recording = _recording(loaded)
    asyncio.run(replay(loaded, recording, [ingest], extra=_extras(loaded, prefix)))
    assert ingest.stats.deadlettered == 0
    # Every poll is in the store and visible (VictoriaMetrics shows new data after a flush).
    polls = sum(len(samples) for samples in recording.values())
    site = loaded.site.site
    victoria.wait_for_samples(
        f'{{__name__="edge_quality",site="{site}",point="energy_import"}}', polls
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INFLUX_TOKEN", "t")
        for name, start, end in (
            ("month", "2026-10-31", "2026-11-02T00:15"),
            ("today", "2026-11-01", "2026-11-01T14:00"),
        ):
            args = ["report", str(path), "--from", start, "--to", end]
            assert cli.main([*args, "--out", str(folder / name)]) == 0
    return loaded, folder


def _run(victoria: Victoria, board: Mapping[str, Any], title: str, view: View) -> dict[str, Any]:
    """refId -> result series of one panel."""
    emulated = Grafana(board)
    panel = next(p for p in board["panels"] if p["title"] == title)
    return {
        t["refId"]: series(ask(victoria.url, emulated.request(panel, t, view)))
        for t in panel["targets"]
    }


def _by(result: Mapping[Any, list[tuple[int, float]]], label: str) -> dict[str, float]:
    """label value -> the (instant) value."""
    out = {}
    for key, points in result.items():
        ((_, value),) = points
        out[dict(key)[label]] = value
    return out


def _view(
    victoria: Victoria, board: Mapping[str, Any], now: int, site: str, area: str, **more: Any
) -> View:
    """The dashboard at `now` with `area` picked and all its devices (the variable's
    options, from the store)."""
    view = View(now, site, area, **more)
    view.all_devices = ask(victoria.url, Grafana(board).variable_request("device", view))
    return view


def test_every_query_runs_for_every_area_and_device_selection(
    stored: tuple[LoadedConfig, Path], victoria: Victoria
) -> None:
    loaded, _ = stored
    site = loaded.site.site
    boards = dashboards(loaded, kind="prometheus")
    ran = 0
    for name, board in boards.items():
        emulated = Grafana(board)
        sites = ask(victoria.url, emulated.variable_request("site", View(NOW, site, site)))
        assert site in sites
        areas = [o["text"] for o in emulated.variables["area"]["options"]]
        assert areas == [site, "workshop-1", "utilities"]
        for area in areas:
            view = _view(victoria, board, NOW, site, area)
            meters = [d for d in view.all_devices if d in METERS]
            assert meters, (area, view.all_devices)
            for picked in (None, meters[:1]):
                view.devices = picked
                for panel in board["panels"]:
                    for target in panel["targets"]:
                        request = emulated.request(panel, target, view)
                        result = ask(victoria.url, request)["result"]
                        ran += 1
                        if area == site and picked is None:
                            assert result, (name, panel["title"], target["refId"], request)
    assert ran > 150


def _rows(report: Path, name: str) -> list[dict[str, str]]:
    return _csv(report / name)


def test_today_by_tou_period_equals_the_report(
    stored: tuple[LoadedConfig, Path], victoria: Victoria
) -> None:
    loaded, reports = stored
    site = loaded.site.site
    board = dashboards(loaded, kind="prometheus")["energy-overview.json"]
    daily = _rows(reports / "today", "daily_energy.csv")
    checked = 0
    for area in (site, "workshop-1", "utilities"):
        view = _view(victoria, board, TODAY, site, area)
        (today,) = _run(victoria, board, "Today: electricity by TOU period", view).values()
        shown = {p.rsplit(".", 1)[1]: v for p, v in _by(today, "point").items()}
        (expected,) = [
            r
            for r in daily
            if (r["series"], r["counter"], r["date"]) == (area, "electricity", "2026-11-01")
        ]
        assert expected["span"] == "partial" and expected["end"].startswith("2026-11-01T14:00")
        assert shown["valley"] > 0 and shown["flat"] > 0 and shown["peak"] > 0
        for period in ("sharp", "peak", "flat", "valley"):
            assert shown[period] == pytest.approx(_num(expected[period]), abs=1e-3), period
            checked += 1
        assert sum(shown.values()) == pytest.approx(float(expected["energy"]), abs=1e-3)
    assert checked == 12


def test_daily_bars_level_below_and_this_months_coal_equal_the_report(
    stored: tuple[LoadedConfig, Path], victoria: Victoria
) -> None:
    loaded, reports = stored
    site = loaded.site.site
    board = dashboards(loaded, kind="prometheus")["energy-overview.json"]
    daily = _rows(reports / "month", "daily_energy.csv")

    def row(series_name: str, date: str) -> dict[str, str]:
        (found,) = [
            r
            for r in daily
            if (r["series"], r["date"]) == (series_name, date) and r["counter"] == "electricity"
        ]
        return found

    days = ((local_ms(2026, 10, 31), "2026-10-31"), (local_ms(2026, 11, 1), "2026-11-01"),
            (local_ms(2026, 11, 2), "2026-11-02"))  # fmt: skip
    assert [row(site, d)["span"] for _, d in days] == ["day", "day", "partial"]
    for area in (site, "workshop-1", "utilities"):
        # Daily bars over three days: one bar per local day, each the report's day.
        view = _view(victoria, board, NOW, site, area, time_from="now-2d")
        (bars,) = _run(victoria, board, "Daily electricity by TOU period", view).values()
        shown: dict[int, dict[str, float]] = {}
        for key, points in bars.items():
            for t, v in points:
                shown.setdefault(t, {})[dict(key)["point"].rsplit(".", 1)[1]] = v
        assert sorted(shown) == [t for t, _ in days]
        for t, date in days:
            for period in ("sharp", "peak", "flat", "valley"):
                expected = _num(row(area, date)[period])
                assert shown[t][period] == pytest.approx(expected, abs=1e-3), (area, date)

        # This month (November so far): standard coal and CO2 of the closed days.
        view = _view(victoria, board, NOW, site, area)
        for title, column in (
            ("This month: standard coal", "tce"),
            ("This month: CO2 (purchased electricity)", "co2_t"),
        ):
            (result,) = _run(victoria, board, title, view).values()
            assert _by(result, "site") == {
                site: pytest.approx(float(row(area, "2026-11-01")[column]), abs=1e-6)
            }

    # The level below the site and below workshop-1, this month.
    for area, below in ((site, {"workshop-1", "utilities"}), ("workshop-1", {"line-1", "line-2"})):
        view = _view(victoria, board, NOW, site, area)
        (result,) = _run(victoria, board, "Electricity by the level below (range)", view).values()
        shown_below = _by(result, "device")
        assert set(shown_below) == below
        for node, value in shown_below.items():
            month = float(row(node, "2026-11-01")["energy"]) + float(
                row(node, "2026-11-02")["energy"]
            )
            assert value == pytest.approx(month, abs=1e-3), node


def test_the_months_maximum_demand_equals_the_report(
    stored: tuple[LoadedConfig, Path], victoria: Victoria
) -> None:
    loaded, reports = stored
    site = loaded.site.site
    board = dashboards(loaded, kind="prometheus")["demand.json"]
    rows = [r for r in _rows(reports / "month", "demand.csv") if r["time"] > "2026-11-01T00:00"]
    expected = {m: max(float(r["demand_kw"]) for r in rows if r["meter"] == m) for m in METERS}
    assert expected["line-1-feeder"] > 30  # the 09:00 peak
    view = _view(victoria, board, NOW, site, site, time_from="now/M")
    maxima = _run(victoria, board, "Maximum demand this month", view)
    demand = _run(victoria, board, "Demand (contract 40 kW on main-incomer)", view)
    assert {dict(k)["device"] for k in maxima["A"]} == {"main-incomer"}  # the contract line
    seen: dict[str, float] = {}
    for ref in ("A", "B"):
        for key, points in maxima[ref].items():
            assert points[-1][0] == NOW
            seen[dict(key)["device"]] = points[-1][1]  # the running maximum, at now
    assert set(seen) == set(METERS)
    month_start = local_ms(2026, 11, 1)
    for meter, value in seen.items():
        assert value == pytest.approx(expected[meter], abs=1e-3), meter
        peak = max(
            v
            for ref in ("A", "B")
            for key, points in demand[ref].items()
            if dict(key)["device"] == meter
            for t, v in points
            if t > month_start  # the first step holds the minutes before the month
        )
        assert peak == pytest.approx(expected[meter], abs=1e-3), meter


def test_completeness_equals_the_report(
    stored: tuple[LoadedConfig, Path], victoria: Victoria
) -> None:
    loaded, reports = stored
    site = loaded.site.site
    board = dashboards(loaded, kind="prometheus")["data-quality.json"]
    # Today, on a panel 56 points wide: one point per 15-minute interval.
    view = _view(victoria, board, TODAY, site, site, time_from="now/d", max_data_points=56)
    (result,) = _run(victoria, board, "Interval completeness (>= 0.90 required)", view).values()
    rows = {
        (r["meter"], r["counter"]): float(r["completeness"])
        for r in _rows(reports / "today", "completeness.csv")
        if r["date"] == "2026-11-01"
    }
    shown = {}
    for key, points in result.items():
        labels = dict(key)
        counter = labels["point"].removeprefix("interval.").removesuffix(".completeness")
        # The first point, at 00:00, holds the step before the range (23:45); then
        # 00:15 to 14:00, the intervals 00:00 to 13:45 at their ends.
        assert points[0][0] == local_ms(2026, 11, 1)
        values = [v for t, v in points if t > local_ms(2026, 11, 1)]
        assert len(values) == 56
        shown[(labels["device"], counter)] = sum(values) / len(values)
    assert set(shown) == set(rows)
    for key, value in shown.items():
        assert value == pytest.approx(rows[key], abs=1e-4), key
    assert rows[("line-2-feeder", "energy_import")] == pytest.approx(1 - 20 / 840, abs=1e-4)
    assert rows[("compressor", "energy_import")] == 1.0


# -- the generated files --------------------------------------------------------------------


def test_the_prometheus_dashboards_have_the_flux_dashboards_panels_and_units(
    tmp_path: Path,
) -> None:
    loaded = load_config(shipped_demo())
    flux, prom = dashboards(loaded), dashboards(loaded, kind="prometheus")
    assert list(prom) == list(flux)
    for name in flux:
        a, b = flux[name], prom[name]

        def shape(board: Mapping[str, Any]) -> list[tuple[Any, ...]]:
            return [
                (p["title"], p["type"], p["gridPos"], p["fieldConfig"], p.get("timeFrom"))
                for p in board["panels"]
            ]

        assert shape(a) == shape(b), name
        assert [v["name"] for v in a["templating"]["list"]] == [
            v["name"] for v in b["templating"]["list"]
        ]
        assert (a["uid"], a["timezone"], a["time"]) == (b["uid"], b["timezone"], b["time"])
        (source,) = b["__inputs"]
        assert (source["pluginId"], source["name"]) == ("prometheus", "DS_EDGE")
        assert b["templating"]["list"][0]["query"] == "prometheus"
        for panel in b["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert set(target) >= {"refId", "expr", "instant", "range", "format"}
                assert target["range"] is not target["instant"]
                assert "main-incomer" not in target["expr"]  # per variable, not per device
                assert "query" not in target


def test_generate_writes_the_prometheus_source_and_keeps_flux_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = shipped_demo()
    assert cli.main(["grafana", "generate", str(demo), "--out", str(tmp_path / "f")]) == 0
    code = cli.main(
        [
            "grafana",
            "generate",
            str(demo),
            "--out",
            str(tmp_path / "p"),
            "--datasource",
            "prometheus",
            "--influx-url",
            "http://vm:8428",
        ]
    )
    assert code == 0
    import yaml

    flux = yaml.safe_load((tmp_path / "f/datasources/edge.yaml").read_text())["datasources"][0]
    prom = yaml.safe_load((tmp_path / "p/datasources/edge.yaml").read_text())["datasources"][0]
    assert flux["type"] == "influxdb" and flux["jsonData"]["version"] == "Flux"
    assert (prom["type"], prom["uid"], prom["url"]) == (
        "prometheus",
        STORES["prometheus"].uid,
        "http://vm:8428",
    )
    assert prom["secureJsonData"] == {"httpHeaderValue1": "Token $INFLUX_TOKEN"}
    board = json.loads((tmp_path / "p/dashboards/edge-agent/energy-overview.json").read_text())
    assert "expr" in board["panels"][0]["targets"][0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["grafana", "generate", str(demo), "--datasource", "graphite"])
    assert "invalid choice: 'graphite'" in capsys.readouterr().err


def test_push_sends_the_prometheus_source_and_promql_dashboards_once(
    grafana: tuple[str, FakeGrafana],  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, state = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_test")
    monkeypatch.setenv("INFLUX_TOKEN", "influx-secret")
    args = ["grafana", "push", str(shipped_demo()), "--url", url, "--datasource", "prometheus"]
    assert cli.main(args) == 0
    (source,) = state.datasources.values()
    assert (source["uid"], source["type"]) == ("edge-prometheus", "prometheus")
    assert state.secrets["edge-prometheus"] == {"httpHeaderValue1": "Token influx-secret"}
    (overview,) = [
        d for d in state.dashboards.values() if d["dashboard"]["uid"] == "edge-energy-overview"
    ]
    assert all("expr" in t for p in overview["dashboard"]["panels"] for t in p["targets"])
    state.requests.clear()
    assert cli.main(args) == 0
    assert state.writes() == []  # nothing changed: nothing written

"""Generated Grafana dashboards: valid dashboard JSON, and queries over what the ingest wrote.

The names check is against a REAL ingest run: the demo site's devices (their profiles'
points) are polled synthetically over a local midnight and a month end, the agent's own
encoder and energy stage turn the polls into data and energy messages, those go through a
real Mosquitto into the real ingest and a real VictoriaMetrics (which names series
`{measurement}_{field}` and keeps tags as labels). Every measurement, field, tag and point
name a generated Flux query filters on must be among what was stored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from drivers.reading import Poll
from edge_agent.catalog import Kind, shipped, shipped_demo
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.delivery.outbox import OutboxStats
from edge_agent.energy.stage import build_energy_stages
from edge_agent.grafana.dashboards import DATASOURCE_UID, SCHEMA_VERSION, dashboards, write
from edge_agent.ingest.service import Ingest
from edge_agent.ops.gateway_health import GATEWAY_DEVICE, gateway_doc
from edge_agent.pipeline.payload import DeviceEncoder
from edge_agent.runtime.agent import build_lines
from edge_agent.uplink.platform import manual_doc
from edge_agent.uplink.store import IntervalRecord
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.victoria import Victoria
from tests.ingest_support import publish, running, unique_site, until

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
DEMO = shipped_demo()
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _site(tmp_path: Path, *, broker: str, prefix: str, site: str, influx: str) -> LoadedConfig:
    """The demo config, pointed at the test's broker, store and a site name of its own."""
    text = DEMO.read_text()
    text = text.replace("site: demo-plant", f"site: {site}")
    text = re.sub(r"^mqtt: .*$", f'mqtt: {{url: "{broker}", prefix: "{prefix}"}}', text, flags=re.M)
    text = re.sub(r"^outbox: .*$", "", text, flags=re.M)
    tariff = shipped(Kind.TARIFFS, "example-tou")
    text = text.replace("tariff: example-tou", f"tariff: {tariff}")
    text += (
        f'influx: {{url: "{influx}", token: "${{INFLUX_TOKEN}}", org: plant, bucket: edge}}\n'
        f"profiles_dir: {shipped(Kind.PROFILES)}\n"
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path, environ={"INFLUX_TOKEN": "t"})


class _Outlet:
    """The agent's Outlet envelope, kept as (topic, payload) instead of going to an outbox."""

    def __init__(self, base: str, gateway: str, seq: list[int]) -> None:
        self.base, self.gateway, self.seq = base, gateway, seq
        self.messages: list[tuple[str, bytes]] = []

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        self.seq[0] += 1
        body = {"gateway": self.gateway, "seq": self.seq[0], "historical": False, **doc}
        self.messages.append((f"{self.base}/{suffix}", orjson.dumps(body)))
        return self.seq[0]


def _messages(loaded: LoadedConfig, prefix: str) -> list[tuple[str, bytes]]:
    """Data and energy messages of 3 h of polls, 60 s apart, across 2026-11-01 00:00 local."""
    site, gateway = loaded.site.site, loaded.site.gateway
    base = f"{prefix}/{site}/{gateway}"
    seq = [0]
    outlet = _Outlet(base, gateway, seq)
    (stage,) = build_energy_stages(loaded, outlet)
    units = [u for line in build_lines(loaded.devices) for u in line.units]
    encoders = {
        u.driver.name: DeviceEncoder(gateway=gateway, device=u.driver.name, points=u.driver.points)
        for u in units
    }
    data: list[tuple[str, bytes]] = []
    start = dt.datetime(2026, 10, 31, 22, 0, tzinfo=SHANGHAI)
    for k in range(181):
        ts_ms = int((start + dt.timedelta(minutes=k)).timestamp() * 1000)
        for u in units:
            points = u.driver.points
            # Counters rise steadily, everything else is a plausible constant.
            values: list[Any] = [
                1000.0 + 0.25 * k if "energy" in p.name else 0.95 if "pf" in p.name else 230.0
                for p in points
            ]
            poll = Poll(u.driver.name, ts_ms * 1_000_000, tuple(points), values)
            stage.observe(poll)
            seq[0] += 1
            encoded = encoders[u.driver.name].encode(poll, seq=seq[0])
            data.append((f"{base}/{u.driver.name}/data", encoded))
    # The agent's own health series (GatewayHealth), once per 10 s in real life.
    health = gateway_doc(
        OutboxStats(), mqtt_connected=True, devices_up=len(units), devices=len(units)
    )
    for k in range(3):
        outlet.send(
            f"{GATEWAY_DEVICE}/data", {**health, "ts_ms": int(start.timestamp() * 1000) + k}
        )
    # One manual entry (手工填报), as the uplink publishes it (platform_uplink.manual_doc).
    day_ms = int(start.timestamp() * 1000)
    entry = IntervalRecord(
        site, gateway, "boiler-house", "coal_in", "raw_coal", start.isoformat(),
        (start + dt.timedelta(days=1)).isoformat(), day_ms, day_ms + 86_400_000,
        3.2, "t", "good", None, manual=True,
    )  # fmt: skip
    outlet.send("energy", manual_doc(entry), device="boiler-house")
    # One alarm transition, as the alarm stage publishes it (the gas preset's level 1).
    start_ms = int(start.timestamp() * 1000)
    alarm = {
        "gateway": gateway,
        "seq": seq[0] + 1,
        "ts_ms": start_ms,
        "historical": False,
        "schema_version": 1,
        "event": "raise",
        "previous": "normal",
        "id": "plant-plc/gas_lel/lel_1",
        "device": "plant-plc",
        "point": "gas_lel",
        "alarm": "lel_1",
        "kind": "high",
        "priority": 2,
        "state": "active_unack",
        "active": True,
        "acked": False,
        "latched": True,
        "shelved_until_ms": None,
        "out_of_service": False,
        "since_ms": start_ms,
        "transition": 1,
        "value": 30.0,
        "unit": "%LEL",
        "message": "gas_lel high: 30 %LEL (limit 25 %LEL)",
        "quality": "good",
        "chattering": False,
        "limit": 25.0,
    }
    seq[0] += 1
    alarms = [(f"{base}/alarms", orjson.dumps(alarm))]
    return data + outlet.messages + alarms


def _stored_names(victoria: Victoria, site: str, measurement: str) -> dict[str, set[str]]:
    series = victoria.export(f'{{site="{site}"}}')
    measurements, fields = set(), set()
    for s in series:
        name = s["metric"]["__name__"]
        # VictoriaMetrics names a series <measurement>_<field>; alarms are <m>_alarm.
        for candidate in (f"{measurement}_alarm", measurement):
            if name.startswith(f"{candidate}_"):
                measurements.add(candidate)
                fields.add(name.removeprefix(f"{candidate}_"))
                break
    names = {
        "measurement": measurements,
        "field": fields,
        "tag": {k for s in series for k in s["metric"] if k != "__name__"},
        "point": {s["metric"]["point"] for s in series},
        "series": {
            f"{s['metric']['device']} {s['metric']['point']}"
            for s in series
            if s["metric"]["__name__"] == f"{measurement}_value"
        },
    }
    return names


# What a Flux query refers to: r.<column>, literals compared with _measurement/_field/point,
# group() columns.
_COLUMN = re.compile(r"\br\.(\w+)")
_EQ = re.compile(r'\br\.(_measurement|_field|point) == "([^"]+)"')
_GROUP = re.compile(r"group\(columns: \[([^\]]*)\]")
_MATCH = re.compile(r"\br\.point =~ /((?:[^/\\]|\\.)+)/")
_BUILTIN = {"_measurement", "_field", "_value", "_time", "_start", "_stop"}


def _queries(board: dict[str, Any]) -> list[str]:
    texts = [t["query"] for p in board["panels"] for t in p["targets"]]
    texts += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return texts


def test_dashboards_are_valid_grafana_json(tmp_path: Path) -> None:
    loaded = load_config(DEMO)
    written = write(loaded, tmp_path)
    ds = yaml.safe_load((tmp_path / "datasources" / "edge.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert (source["uid"], source["type"], source["jsonData"]["version"]) == (
        DATASOURCE_UID,
        "influxdb",
        "Flux",
    )
    assert source["secureJsonData"] == {"token": "$INFLUX_TOKEN"}  # never a literal secret
    provider = yaml.safe_load((tmp_path / "dashboards" / "edge-agent.yaml").read_text())
    assert provider["providers"][0]["options"]["path"].startswith("/etc/grafana/provisioning/")

    boards = sorted(p for p in written if p.suffix == ".json")
    assert [p.name for p in boards] == [
        "data-quality.json",
        "demand.json",
        "energy-overview.json",
        "gateway-health.json",
        "meter.json",
    ]
    uids = set()
    for path in boards:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        assert board["schemaVersion"] == SCHEMA_VERSION
        assert board["timezone"] == "Asia/Shanghai"
        assert isinstance(board["title"], str) and board["title"]
        names = [v["name"] for v in board["templating"]["list"]]
        extra = ["contract"] if path.name == "demand.json" else []
        assert names == ["datasource", "site", "area", "device", *extra], path.name
        assert board["panels"], path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in board["panels"]:
            assert panel["type"] in {
                "stat",
                "timeseries",
                "bargauge",
                "barchart",
                "table",
                "state-timeline",
            }
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert re.fullmatch(r"[A-Z]", target["refId"])
                # Per template variable, not per device: no device name in a query (the
                # gateway's own health series is one pseudo-device of every gateway;
                # manual entries name devices that need not be configured ones).
                query = target["query"]
                assert target["datasource"] == panel["datasource"]
                assert (
                    "${device:regex}" in query
                    or 'r.device == "_gateway"' in query
                    or "r.point =~ /^manual" in query
                    or 'r.device == "${area:text}"' in query  # a node's own series
                    or "r.device =~ kids" in query  # the level below the node
                )
                assert "main-incomer" not in target["query"]
    assert len(uids) == 5
    # The areas of the hierarchy, each standing for its meters and nodes.
    area = json.loads((tmp_path / "dashboards/edge-agent/meter.json").read_text())
    options = {o["text"]: o["value"] for o in area["templating"]["list"][2]["options"]}
    assert options["utilities"] == "compressor|utilities"
    assert "line-1-feeder" in options["workshop-1"].split("|")
    demand = json.loads((tmp_path / "dashboards/edge-agent/demand.json").read_text())
    (override,) = demand["panels"][0]["fieldConfig"]["overrides"]
    steps = override["properties"][0]["value"]["steps"]
    assert steps[-1]["value"] == 40.0  # demo.yaml contract_demand_kw


def test_committed_provisioning_matches_the_demo_config(tmp_path: Path) -> None:
    """deploy/grafana is what `edge-agent grafana generate (the shipped demo)` writes."""
    for path in write(load_config(DEMO), tmp_path):
        committed = REPO / "deploy" / "grafana" / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"regenerate {committed}"


async def test_every_query_uses_only_names_a_real_ingest_wrote(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = _site(
        tmp_path, broker=mosquitto.url, prefix=unique_prefix, site=site, influx=victoria.url
    )
    messages = _messages(loaded, unique_prefix)
    ingest = Ingest(loaded, worker="grafana")
    async with running(ingest):
        await publish(mosquitto.url, messages)
        await until(
            lambda: (
                ingest.stats.stored_messages == len(messages) - 1
                and ingest.stats.stored_alarms == 1
            ),
            f"{len(messages) - 1} messages and 1 alarm transition stored",
            timeout_s=40,
        )
    stored = _stored_names(victoria, site, loaded.site.ingest.measurement)
    # The run wrote energy series of every type the dashboards use.
    assert {"edge_alarm", "edge"} <= stored["measurement"] and "state" in stored["field"]
    for needed in (
        "interval.energy_import.valley",
        "demand.energy_import",
        "day.energy_import.tce",
        "manual.coal_in",
    ):
        assert needed in stored["point"], needed

    checked = 0
    for name, board in dashboards(loaded).items():
        for text in _queries(board):
            for column in _COLUMN.findall(text):
                if column not in _BUILTIN:
                    assert column in stored["tag"], f"{name}: tag {column} never written"
            for kind, literal in _EQ.findall(text):
                key = {"_measurement": "measurement", "_field": "field", "point": "point"}[kind]
                assert literal in stored[key], f"{name}: {kind} {literal!r} never written"
                checked += 1
            for pattern in _MATCH.findall(text):
                assert any(re.search(pattern, p) for p in stored["point"]), f"{name}: {pattern}"
                checked += 1
            for group in _GROUP.findall(text):
                for column in re.findall(r'"(\w+)"', group):
                    if column not in _BUILTIN:
                        assert column in stored["tag"], f"{name}: group by {column}"
    assert checked > 50  # the regexes did find the filters
    # Every total reads the one series of the selected node, and the ingest stored it.
    boards = dashboards(loaded)
    overview = boards["energy-overview.json"]
    area = next(v for v in overview["templating"]["list"] if v["name"] == "area")
    nodes = [o["text"] for o in area["options"]]
    assert nodes == [site, "workshop-1", "utilities"]
    totals = [p for p in overview["panels"] if p["title"].startswith(TOTALS)]
    assert len(totals) == 5
    for panel in totals:
        (target,) = panel["targets"]
        for node in nodes:
            query = target["query"].replace("${area:text}", node)
            for point in re.findall(r'r\.point == "([^"]+)"', query):
                assert f"{node} {point}" in stored["series"], (panel["title"], node, point)


TOTALS = ("Today:", "This month:", "Daily electricity")


def _board(tmp_path: Path, name: str) -> dict[str, Any]:
    write(load_config(DEMO), tmp_path)
    return json.loads((tmp_path / "dashboards/edge-agent" / name).read_text())  # type: ignore[no-any-return]


def test_totals_come_from_one_level_and_breakdowns_from_the_level_below(tmp_path: Path) -> None:
    """Never a node added to its own children (demo: workshop-1 is main-incomer, and
    line-1/line-2 are feeders under it): a total filters the selected node's series by
    name; the breakdown selects the level just below it."""
    board = _board(tmp_path, "energy-overview.json")
    totals = [p for p in board["panels"] if p["title"].startswith(TOTALS)]
    assert [p["title"] for p in totals] == [
        "Today: electricity by TOU period",
        "This month: electricity by TOU period",
        "This month: standard coal",
        "This month: CO2 (purchased electricity)",
        "Daily electricity by TOU period",
    ]
    for panel in totals:
        (target,) = panel["targets"]
        devices = re.findall(r"r\.device (==|=~) ([^ )]+)", target["query"])
        assert devices == [("==", '"${area:text}"')], panel["title"]
        points = re.findall(r'r\.point == "([^"]+)"', target["query"])
        assert points and all(
            p.startswith(("interval.electricity.", "day.electricity.")) for p in points
        ), points  # node series: named by kind, never a meter's counter
    (below,) = [p for p in board["panels"] if p["title"].startswith("Electricity by the level")]
    query = below["targets"][0]["query"]
    tree = dict(re.findall(r'"([\w.-]+)": "([\w.|-]+)"', query.split("\n")[2]))
    assert tree == {
        "demo-plant": "utilities|workshop-1",
        "workshop-1": "line-1|line-2",
        "line-1": "line-1-feeder",
        "line-2": "line-2-feeder",
        "utilities": "compressor",
    }
    assert "r.device =~ kids" in query and "|> sum()" in query


# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts) the dashboards use.
GRAFANA_UNITS = {
    "kwatth",
    "kwatt",
    "watt",
    "volt",
    "amp",
    "none",
    "percentunit",
    "s",
    "masst",
    "m3",
}


def test_every_panel_has_a_grafana_unit(tmp_path: Path) -> None:
    write(load_config(DEMO), tmp_path)
    units = {}
    for path in sorted((tmp_path / "dashboards/edge-agent").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            unit = panel["fieldConfig"]["defaults"]["unit"]
            assert unit in GRAFANA_UNITS or unit.startswith("suffix: "), (path.name, unit)
            units[(path.stem, panel["title"])] = unit
    assert units[("energy-overview", "Today: electricity by TOU period")] == "kwatth"
    assert units[("energy-overview", "This month: standard coal")] == "suffix: tce"
    assert units[("energy-overview", "This month: CO2 (purchased electricity)")] == "masst"
    assert units[("energy-overview", "Interval energy (per meter) (kWh)")] == "kwatth"
    assert units[("energy-overview", "Interval energy (per meter) (kvarh)")] == "suffix: kvarh"
    assert units[("meter", "Interval energy (kWh)")] == "kwatth"
    assert units[("meter", "Active power")] == "kwatt"
    assert units[("demand", "Demand (contract 40 kW on main-incomer)")] == "kwatt"
    meter = json.loads((tmp_path / "dashboards/edge-agent/meter.json").read_text())
    power = next(p for p in meter["panels"] if p["title"] == "Active power")
    # The demo has W (SDM630 power_total) and kW (DTSU666, DL/T 645) meters: one unit, kW.
    assert 'if r.unit == "W" then r._value / 1000.0' in power["targets"][0]["query"]
    energy = next(p for p in meter["panels"] if p["title"] == "Interval energy (kWh)")
    assert "interval.reactive_energy_import" not in energy["targets"][0]["query"]


def test_the_data_source_is_a_variable_and_imports_through_the_ui(tmp_path: Path) -> None:
    board = _board(tmp_path, "meter.json")
    (source,) = board["__inputs"]
    assert (source["type"], source["pluginId"], source["name"]) == (
        "datasource",
        "influxdb",
        "DS_EDGE",
    )
    variable = board["templating"]["list"][0]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "influxdb",
    )
    assert variable["current"]["value"] == "${DS_EDGE}"  # replaced by the pick on import
    text = json.dumps(board)
    assert DATASOURCE_UID not in text  # no fixed uid left to edit by hand
    assert text.count('"uid": "${datasource}"') == sum(
        1 + len(p["targets"]) for p in board["panels"]
    ) + sum(1 for v in board["templating"]["list"] if v["type"] == "query")


def test_the_contract_demand_is_drawn_on_its_meter_only(tmp_path: Path) -> None:
    board = _board(tmp_path, "demand.json")
    contract = next(v for v in board["templating"]["list"] if v["name"] == "contract")
    assert (contract["type"], contract["query"]) == ("constant", "main-incomer")
    for panel in board["panels"]:
        assert "thresholds" not in panel["fieldConfig"]["defaults"]
        a, b = panel["targets"]
        assert 'r.device == "${contract}"' in a["query"]
        assert 'r.device != "${contract}"' in b["query"]
        (override,) = panel["fieldConfig"]["overrides"]
        assert override["matcher"] == {"id": "byFrameRefID", "options": "A"}

"""The ingest's cardinality promise: series only for configured (or allowed) names.

Hostile and mistaken publishers (thousands of unknown device names, points the config
does not list, one message with 20,001 points, a 10 MB message, a 5,000-character name)
go through a real Mosquitto into the real embedded store and a real VictoriaMetrics: none
of it makes a series, all of it is counted and dead-lettered, and the configured readings
published alongside still arrive.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.reading import PointSpec, Poll
from edge_agent.config.site import load_config
from edge_agent.energy.stage import build_energy_stages
from edge_agent.ingest.http import serving_ingest_metrics
from edge_agent.ingest.schema import DataMessage, Source
from edge_agent.ingest.series import KnownSeries
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.pipeline.payload import DeviceEncoder
from tests.energy_harness import Collect
from tests.energy_reference import local_ms
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.ingest_support import publish, running, unique_site, until, write_site

pytestmark = pytest.mark.timeout(90)

# Points of meter-1's profile (chint-dtsu666) and of no profile.
CONFIGURED = (PointSpec("voltage_a", "V"), PointSpec("current_a", "A"))
STRANGERS = (PointSpec("relay", None), PointSpec("x" * 64, None))


def _message(
    prefix: str,
    site: str,
    device: str,
    points: tuple[PointSpec, ...],
    *,
    seq: int = 1,
    gateway: str = "gw-01",
) -> tuple[str, bytes]:
    ts_ms = time.time_ns() // 1_000_000 - 3_600_000 + seq * 10
    encoder = DeviceEncoder(gateway=gateway, device=device, points=points)
    values = [float(k + seq) for k in range(len(points))]
    poll = Poll(device, ts_ms * 1_000_000, points, values, {})
    return f"{prefix}/{site}/{gateway}/{device}/data", encoder.encode(poll, seq=seq)


def _hostile(prefix: str, site: str) -> list[tuple[str, bytes]]:
    """What must make no series: 1,000 unknown devices, a stranger gateway, big messages."""
    unknown = [_message(prefix, site, f"rogue-{k}", CONFIGURED, seq=k + 1) for k in range(1000)]
    other_gateway = [_message(prefix, site, "meter-1", CONFIGURED, gateway="gw-99")]
    many = tuple(PointSpec(f"p{k}", None) for k in range(20_001))
    wide = [_message(prefix, site, "meter-1", many, seq=5000)]
    # One 10 MB message: over ingest.max_message_bytes (4 MiB) and refused unread.
    huge = [(f"{prefix}/{site}/gw-01/meter-1/data", b'{"x": "' + b"y" * 10_000_000 + b'"}')]
    long_name = [_message(prefix, site, "d" * 5000, CONFIGURED)]
    return unknown + other_gateway + wide + huge + long_name


EXPECTED_KINDS = {"not_configured": 1001 + 1, "too_large": 2, "topic_mismatch": 1}


async def test_unknown_names_and_big_messages_make_no_rows_and_are_dead_letters(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Any,
    unique_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.ingest.deadletter")
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{store: edge.sqlite, flush_interval_s: 0.05}",
        allow=(),  # only what the file configures
    )
    letters: Subscriber = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    good = [_message(unique_prefix, site, "meter-1", CONFIGURED, seq=s) for s in range(1, 11)]
    # Configured and unknown points in one message: the configured ones are stored.
    mixed = _message(unique_prefix, site, "meter-1", CONFIGURED + STRANGERS, seq=11)
    hostile = _hostile(unique_prefix, site)
    ingest = Ingest(loaded, worker="cardinality")
    async with running(ingest), serving_ingest_metrics(ingest, "127.0.0.1", 0) as http:
        await publish(mosquitto.url, [*good[:5], *hostile, mixed, *good[5:]])
        total = len(good) + len(hostile) + 1
        await until(lambda: ingest.client.stats.acked == total, f"{total} acknowledged")
        host, port = http.address
        metrics = await asyncio.to_thread(_scrape, f"http://{host}:{port}/metrics")
    assert {
        dict(labels)["kind"]: value
        for (name, labels), value in metrics.items()
        if name == "edge_ingest_rejected_total"
    } == EXPECTED_KINDS
    plain = frozenset[tuple[str, str]]()
    assert metrics[("edge_ingest_unconfigured_points_total", plain)] == 1000 * 2 + 2 + 2
    assert metrics[("edge_ingest_stored_messages_total", plain)] == len(good) + 1
    assert metrics[("edge_ingest_deadlettered_total", plain)] == sum(EXPECTED_KINDS.values())

    with sqlite3.connect(store_path(loaded)) as db:
        series = db.execute("SELECT site, gateway, device, point FROM series").fetchall()
        rows = db.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert sorted(series) == [
        (site, "gw-01", "meter-1", "current_a"),
        (site, "gw-01", "meter-1", "voltage_a"),
    ]
    assert rows == 2 * (len(good) + 1)
    assert ingest.stats.stored_messages == len(good) + 1
    assert dict(ingest.rejects.counts) == EXPECTED_KINDS
    assert ingest.stats.unconfigured_points == 1000 * 2 + 2 * 1 + 2
    assert ingest.stats.deadlettered == sum(EXPECTED_KINDS.values())

    def letters_in() -> list[dict[str, Any]]:
        return [
            orjson.loads(m.payload) for m in letters.messages if m.topic.endswith("/deadletter")
        ]

    await until(lambda: len(letters_in()) >= ingest.stats.deadlettered, "the dead letters")
    dead = letters_in()
    assert len(dead) == sum(EXPECTED_KINDS.values())
    by_topic = {d["topic"]: d for d in dead}
    part = by_topic[mixed[0]]
    assert part["kind"] == "not_configured" and part["payload"] == mixed[1].decode()
    assert part["detail"] == (
        f"2 points of '{site}/gw-01/meter-1' not configured: 'relay', '{'x' * 64}'"
    )
    rogue = by_topic[f"{unique_prefix}/{site}/gw-01/rogue-7/data"]
    assert rogue["detail"].startswith(f"2 points of '{site}/gw-01/rogue-7' not configured")
    assert max(len(d["detail"]) for d in dead) < 400  # no detail echoes a runaway name
    sizes = sorted(d["detail"] for d in dead if d["kind"] == "too_large")
    assert sizes == [
        "10,000,009 bytes, over ingest.max_message_bytes (4,194,304)",
        "20,001 points, over ingest.max_points_per_message (10,000)",
    ]
    # Logged: at most 10 sources in full, then one summary line (at stop, or a minute on).
    records = [r for r in caplog.records if r.name == "edge_agent.ingest.deadletter"]
    assert len(records) <= 11
    assert sum(len(r.getMessage()) for r in records) < 11 * 600


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_energy_series_the_stage_publishes_is_configured(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(ENERGY_SITE)
    loaded = load_config(site)
    out = Collect()
    (stage,) = build_energy_stages(loaded, out, time_origin_ms=local_ms(2026, 11, 30))
    specs = {
        "incomer": (
            PointSpec("energy_import", "kWh"),
            PointSpec("reactive_energy_import", "kvarh"),
        ),
        "feeder": (PointSpec("energy_import", "kWh"),),
    }
    start = local_ms(2026, 11, 30, 23, 0)
    for minute in range(0, 60 * 26):  # across a day and into a new month
        t = start + minute * 60_000
        for device, points in specs.items():
            values = [1000.0 + minute * 0.5 * (k + 1) for k in range(len(points))]
            stage.observe(Poll(device, t * 1_000_000, points, values, {}))
    names = {(d["device"], p) for d in out.docs for p in d["points"]}
    devices = {device for device, _ in names}
    assert devices == {"incomer", "feeder", "hall", "rest", "plant-e"}
    spans = {p.split(".")[0] for _, p in names}
    assert spans == {"interval", "demand", "day", "month"}
    assert ("incomer", "day.pf") in names and ("incomer", "interval.energy_import.valley") in names
    known = KnownSeries.from_config(loaded)
    for device, point in sorted(names):
        message = _energy_message(device, [point])
        assert known.admit(message, energy=True) == [], (device, point)
    # The operator's manual entries of this gateway, and its own health series.
    assert known.admit(_energy_message("boiler-house", ["manual.coal_in"]), energy=True) == []
    health = DataMessage(
        Source("t", "plant-e", "gw-01", "_gateway"),
        1,
        0,
        False,
        [("outbox_bytes", 1.0, "B", 0, None), ("devices_up", 2.0, None, 0, None)],
    )
    assert known.admit(health, energy=False) == []
    # Names of the same shape the configuration cannot produce.
    for device, point in [
        ("incomer", "interval.voltage"),  # not a point of the device
        ("incomer", "interval.energy_import.midnight"),  # not a suffix
        ("incomer", "week.energy_import"),  # not a span
        ("hall", "interval.energy_import"),  # a node's series are per kind
        ("nobody", "interval.electricity"),
        ("incomer", "energy_import"),
        ("incomer", "manuals.coal_in"),
    ]:
        assert known.admit(_energy_message(device, [point]), energy=True) == [point]


def _energy_message(device: str, points: list[str]) -> DataMessage:
    source = Source("f/plant-e/gw-01/energy", "plant-e", "gw-01", device)
    return DataMessage(source, 1, 0, False, [(p, 1.0, None, 0, None) for p in points])


def test_allow_patterns_name_each_level(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        ENERGY_SITE.replace(
            "energy:",
            "ingest: {allow: ['plant-b/gw-0[12]/meter-*/*', '*/gw-09/pump/flow']}\nenergy:",
            1,
        )
    )
    known = KnownSeries.from_config(load_config(site))
    cases = [
        (("plant-b", "gw-01", "meter-7", "anything"), True),
        (("plant-b", "gw-03", "meter-7", "anything"), False),
        (("plant-b", "gw-02", "pump", "flow"), False),
        (("plant-z", "gw-09", "pump", "flow"), True),
        (("plant-z", "gw-09", "pump", "head"), False),
        (("plant-e", "gw-01", "incomer", "energy_import"), False),  # configured, not allowed
    ]
    for (s, g, d, p), expected in cases:
        assert known.allowed(s, g, d, p) is expected, (s, g, d, p)
    message = DataMessage(
        Source("t", "plant-b", "gw-01", "meter-7"),
        1,
        0,
        False,
        [("a", 1.0, None, 0, None), ("b", 2.0, None, 0, None)],
        {1: 5},
    )
    assert known.admit(message, energy=False) == []
    configured = DataMessage(
        Source("t", "plant-e", "gw-01", "feeder"),
        1,
        0,
        False,
        [("frequency", 1.0, None, 0, None), ("energy_import", 2.0, None, 0, None)],
        {1: 5},
    )
    assert known.admit(configured, energy=False) == ["frequency", "energy_import"]
    assert configured.points == []  # energy_import came without its unit (kWh)
    configured = DataMessage(
        Source("t", "plant-e", "gw-01", "feeder"),
        1,
        0,
        False,
        [
            ("frequency", 1.0, None, 0, None),
            ("energy_import", 2.0, "kWh", 0, None),
            ("voltage", 230.0, "kV", 0, None),  # a unit is a tag: another would be a series
        ],
        {1: 5},
    )
    assert known.admit(configured, energy=False) == ["frequency", "voltage"]
    assert [p[0] for p in configured.points] == ["energy_import"]
    assert configured.point_ts == {0: 5}  # the kept point keeps its own time


ENERGY_SITE = """\
site: plant-e
gateway: gw-01
mqtt: {url: "mqtt://127.0.0.1:1", prefix: t}
energy:
  tariff: example-tou
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
      - {name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
      - {name: reactive_energy_import, address: 2, type: uint32, scale: 0.01, unit: kvarh,
         energy: {kind: reactive, direction: import}}
  - name: feeder
    driver: modbus
    url: tcp://127.0.0.1:1503
    interval_s: 60
    points:
      - {name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
      - {name: voltage, address: 2, type: float32, unit: V}
"""


async def test_victoriametrics_gets_series_only_for_configured_names(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
        ingest="{flush_interval_s: 0.05}",
        allow=(),
    )
    good = [_message(unique_prefix, site, "meter-1", CONFIGURED, seq=s) for s in range(1, 6)]
    mixed = _message(unique_prefix, site, "meter-1", CONFIGURED + STRANGERS, seq=6)
    hostile = _hostile(unique_prefix, site)
    ingest = Ingest(loaded, worker="vm-cardinality")
    async with running(ingest):
        await publish(mosquitto.url, [*hostile, *good, mixed])
        total = len(good) + len(hostile) + 1
        await until(lambda: ingest.client.stats.acked == total, f"{total} acknowledged")
    assert dict(ingest.rejects.counts) == EXPECTED_KINDS
    # edge_value and edge_quality of the two configured points, 6 samples each; nothing else.
    exported = victoria.wait_for_samples(f'{{site="{site}"}}', count=2 * 2 * 6)
    assert sorted((s["metric"]["__name__"], s["metric"]["point"]) for s in exported) == [
        ("edge_quality", "current_a"),
        ("edge_quality", "voltage_a"),
        ("edge_value", "current_a"),
        ("edge_value", "voltage_a"),
    ]
    assert {s["metric"]["device"] for s in exported} == {"meter-1"}
    assert all(len(s["values"]) == 6 for s in exported)

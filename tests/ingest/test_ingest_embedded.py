"""The embedded default: no `influx:` block, readings land in SQLite (real Mosquitto/amqtt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from edge_agent.cli.main import main
from edge_agent.ingest.embedded_store import EmbeddedStore, StoredPoint, count_readings, read_points
from edge_agent.ingest.schema import decode_data, parse_topic
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.mqtt.embedded_broker import embedded_broker
from tests.fixtures.mosquitto import Mosquitto
from tests.ingest_support import (
    make_messages,
    poll_values,
    publish,
    publish_all,
    running,
    unique_site,
    until,
    write_site,
)

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


async def test_every_reading_lands_in_sqlite_once(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{store: data/edge.sqlite, flush_interval_s: 0.05}",
    )
    path = store_path(loaded)
    assert path == tmp_path / "data" / "edge.sqlite"
    messages = make_messages(unique_prefix, site, seqs=range(1, 21))
    replay = make_messages(
        unique_prefix, site, seqs=range(1, 11), ts0_ms=messages[0].ts_ms - 1000, historical=True
    )
    ingest = Ingest(loaded, worker="sqlite")
    async with running(ingest):
        await publish(mosquitto.url, messages)
        await until(lambda: ingest.stats.stored_messages == 20, "20 messages stored")
        await publish(mosquitto.url, replay)  # the same readings again
        await until(lambda: ingest.stats.stored_messages == 30, "the replay stored")
        await until(lambda: ingest.client.stats.acked == 30, "30 acknowledged")

    assert count_readings(path) == 20 * 6  # one row per point per reading
    rows = read_points(path, site=site, device="meter-1")
    by_point: dict[str, list[StoredPoint]] = {}
    for row in rows:
        by_point.setdefault(row.point, []).append(row)
    times = [m.ts_ms for m in messages]
    for point, rows_of in by_point.items():
        assert [r.ts_ms for r in rows_of] == times, point
        assert {(r.site, r.gateway, r.device, r.profile) for r in rows_of} == {
            (site, "gw-01", "meter-1", "chint-dtsu666")
        }
    expected = [poll_values(m.seq)[0] for m in messages]
    assert [r.value for r in by_point["voltage_a"]] == [v[0] for v in expected]
    assert {r.unit for r in by_point["voltage_a"]} == {"V"}
    assert [r.value for r in by_point["energy_import"]] == [float(v[1]) for v in expected]
    assert [r.value for r in by_point["relay"]] == [float(v[2]) for v in expected]
    assert {r.unit for r in by_point["relay"]} == {None}
    # strings are kept here (VictoriaMetrics would store 0)
    assert [(r.value, r.text) for r in by_point["state"]] == [(None, v[3]) for v in expected]
    assert {(r.value, r.quality, r.reason) for r in by_point["pf_total"]} == {
        (None, "bad", "exception 02 (illegal data address)")
    }
    assert [(r.value, r.quality, r.reason) for r in by_point["current_a"]] == [
        (v[5], "uncertain", "stale") for v in expected
    ]


async def test_on_the_demo_broker_the_ingest_uses_mqtt_3(
    tmp_path: Path, unique_prefix: str
) -> None:
    site = unique_site()
    async with embedded_broker("127.0.0.1", 0) as url:
        loaded = write_site(
            tmp_path / "site.yaml",
            broker_url=url,
            prefix=unique_prefix,
            site=site,
            ingest='{protocol: "3.1.1", flush_interval_s: 0.05}',
        )
        messages = make_messages(unique_prefix, site, seqs=range(1, 6))
        ingest = Ingest(loaded, worker="amqtt")
        assert ingest.client.topic_filters == (
            f"{unique_prefix}/+/+/+/data",
            f"{unique_prefix}/+/+/energy",
            f"{unique_prefix}/+/+/alarms",
            f"{unique_prefix}/+/+/+/cmd/audit",
        )
        async with running(ingest):
            await publish(url, messages)
            await until(lambda: ingest.client.stats.acked == 5, "5 acknowledged")
    assert ingest.client.protocol == "3.1.1"
    rows = read_points(store_path(loaded), point="voltage_a")
    assert [r.ts_ms for r in rows] == [m.ts_ms for m in messages]


def test_the_ingest_command_runs_until_interrupted(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    write_site(tmp_path / "site.yaml", broker_url=mosquitto.url, prefix=unique_prefix, site=site)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "ingest", str(tmp_path / "site.yaml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the log says when it is subscribed
            if "ingest subscribed" in line:  # publishing earlier would race the SUBACK
                break
        else:
            pytest.fail(f"the ingest exited early with {proc.wait()}")
        messages = make_messages(unique_prefix, site, seqs=range(1, 4))
        publish_all(mosquitto.url, messages)
        store = tmp_path / "edge-data.sqlite"
        deadline = time.monotonic() + 10
        while not (store.exists() and count_readings(store) == 18):
            assert time.monotonic() < deadline, "3 messages not in the store after 10 s"
            time.sleep(0.05)  # a poll interval, not a synchronisation
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert count_readings(tmp_path / "edge-data.sqlite") == 18


@pytest.mark.e2e  # the whole demo: simulators, embedded broker, agent and ingest
def test_the_demo_runs_agent_and_ingest_on_the_embedded_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "demo.sqlite"
    assert main(["demo", "--seconds", "4", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    rows = count_readings(store)
    assert rows > 0
    assert f"ingest: {rows:,} readings in {store}" in out
    incomer = read_points(store, device="main-incomer", point="voltage_a")
    assert incomer and {(r.profile, r.unit, r.quality) for r in incomer} == {
        ("chint-dtsu666", "V", "good")
    }


def test_a_reopened_store_overwrites_the_same_readings(tmp_path: Path) -> None:
    site = unique_site()
    sent = make_messages("f", site, seqs=range(1, 6))
    now_ms = time.time_ns() // 1_000_000
    sources = [parse_topic(m.topic, "f") for m in sent]
    messages = [
        decode_data(source, m.payload, now_ms=now_ms, max_future_ms=0)
        for source, m in zip(sources, sent, strict=True)
        if source is not None
    ]
    assert len(messages) == 5
    path = tmp_path / "edge.sqlite"
    first = EmbeddedStore(path)
    assert first.write_sync(messages) == 30
    first.close_sync()
    again = EmbeddedStore(path)  # a restart: series ids come from the file
    assert again.write_sync(messages[2:]) == 18
    again.close_sync()
    assert count_readings(path) == 30
    series = {(r.point, r.unit) for r in read_points(path)}
    assert len(series) == 6


async def test_energy_series_are_ingested_like_readings(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    """The energy stage's topic names its meter in the payload; the ingest stores it."""
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml", broker_url=mosquitto.url, prefix=unique_prefix, site=site
    )
    doc = {
        "schema_version": 1,
        "type": "interval",
        "gateway": "gw-01",
        "device": "main-incomer",
        "seq": 7,
        "ts_ms": 1_764_000_000_000,
        "historical": False,
        "points": {
            "interval.energy_import": {"value": 31.25, "unit": "kWh", "quality": "good"},
            "interval.energy_import.completeness": {"value": 1.0, "unit": None, "quality": "good"},
        },
    }
    wrong = {**doc, "device": "no such/device"}
    topic = f"{unique_prefix}/{site}/gw-01/energy"
    ingest = Ingest(loaded, worker="energy")
    async with running(ingest):
        await publish(mosquitto.url, [(topic, orjson.dumps(doc)), (topic, orjson.dumps(wrong))])
        await until(lambda: ingest.client.stats.acked == 2, "both acknowledged")
    rows = read_points(store_path(loaded), site=site, device="main-incomer")
    assert sorted((r.point, r.value, r.unit, r.ts_ms) for r in rows) == [
        ("interval.energy_import", 31.25, "kWh", 1_764_000_000_000),
        ("interval.energy_import.completeness", 1.0, None, 1_764_000_000_000),
    ]
    assert ingest.stats.stored_messages == 1  # a device name no topic could carry: dead letter
    assert dict(ingest.rejects.counts) == {"topic_mismatch": 1}


async def test_every_meters_energy_lands_under_its_meter(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    """Every meter's derived series share one topic; each is stored under its own meter."""
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{flush_interval_s: 0.05}",
    )
    topic = f"{unique_prefix}/{site}/gw-01/energy"
    meters = ["main-incomer", "line-1-feeder", "line-2-feeder", "utility-meter"]
    t0 = 1_764_000_000_000
    sent: list[tuple[str, bytes]] = []
    expected: dict[str, list[tuple[str, float, int]]] = {m: [] for m in meters}
    seq = 0
    for k in range(3):  # three intervals, the meters interleaved in each
        for n, meter in enumerate(meters):
            seq += 1
            ts = t0 + k * 900_000
            kwh = 10.0 * (n + 1) + k  # a different number for every meter and interval
            doc = {
                "schema_version": 1,
                "type": "interval",
                "gateway": "gw-01",
                "device": meter,
                "seq": seq,
                "ts_ms": ts,
                "historical": False,
                "points": {
                    "interval.energy_import": {"value": kwh, "unit": "kWh", "quality": "good"},
                    "interval.energy_import.valley": {
                        "value": kwh,
                        "unit": "kWh",
                        "quality": "good",
                    },
                },
            }
            sent.append((topic, orjson.dumps(doc)))
            expected[meter] += [
                ("interval.energy_import", kwh, ts),
                ("interval.energy_import.valley", kwh, ts),
            ]
    ingest = Ingest(loaded, worker="meters")
    async with running(ingest):
        await publish(mosquitto.url, sent)
        await until(lambda: ingest.client.stats.acked == len(sent), "all acknowledged")
    path = store_path(loaded)
    assert count_readings(path) == 3 * 4 * 2
    for meter in meters:
        rows = read_points(path, site=site, device=meter)
        assert sorted((r.point, r.value, r.ts_ms) for r in rows) == sorted(expected[meter]), meter
        assert {(r.gateway, r.unit) for r in rows} == {("gw-01", "kWh")}
    # a restarted worker (series ids read back from the file) keeps them apart too
    store = EmbeddedStore(path)
    now_ms = time.time_ns() // 1_000_000
    source = parse_topic(topic, unique_prefix)
    assert source is not None
    again = [
        decode_data(source, payload, now_ms=now_ms, max_future_ms=10**12)
        for _, payload in sent[::-1]
    ]
    assert store.write_sync(again) == 24
    store.close_sync()
    assert count_readings(path) == 24
    for meter in meters:
        rows = read_points(path, site=site, device=meter)
        assert sorted((r.point, r.value, r.ts_ms) for r in rows) == sorted(expected[meter]), meter

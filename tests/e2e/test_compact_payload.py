"""The compact payload end to end: simulators -> agent -> real Mosquitto -> ingest -> SQLite store.

Two gateways poll the same frozen simulated devices, one publishing the default JSON
(v1), the other `mqtt: {payload: compact}` (retained metadata + v3 data messages); each
has its own ingest and store. Both stores must hold the same readings: values, units,
qualities, reasons and profiles. Then the ingest's side of the contract alone: a compact
message that comes before its metadata is held and stored once it arrives; one whose
metadata never comes is read with the device's latest, or is a dead letter. The metadata
follows reloads; a broker outage replays compact messages flagged historical, as v1.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.reading import Poll
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ingest.embedded_store import read_points
from edge_agent.ingest.meta import parse_meta_topic
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.device_meta import device_meta
from edge_agent.pipeline.payload import DeviceEncoder
from edge_agent.runtime.agent import Agent
from simulators.common.faults import FaultKind
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.ingest_support import POINTS, poll_values, unique_site, until, write_site
from tests.ingest_support import running as ingesting
from tests.running_agent import running

ROOT = Path(__file__).resolve().parents[2]
PROFILES = shipped(Kind.PROFILES)
V3 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v3.schema.json").read_text())
)
META = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/meta-v1.schema.json").read_text())
)
V1 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_text())
)

pytestmark = pytest.mark.timeout(90)


def _site(
    path: Path,
    *,
    broker: Mosquitto,
    prefix: str,
    payload: str,
    devices: list[dict[str, Any]],
    session_expiry_s: int = 0,
    ingest_protocol: str = "5",
) -> Path:
    path.mkdir()
    site = path / "site.yaml"
    site.write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}", payload: {payload}, '
        # Two gateways of the same name run at once here: each its own MQTT client.
        f'client_id: "{prefix.replace("/", "-")}-{payload}"}}\n'
        "outbox: {path: outbox.sqlite}\n"
        "ingest: {store: edge.sqlite, flush_interval_s: 0.05, "
        f'session_expiry_s: {session_expiry_s}, protocol: "{ingest_protocol}"}}\n'
        "devices:\n" + "".join(f"  - {json.dumps(d)}\n" for d in devices)
    )
    return site


def _readings(path: Path, device: str) -> set[tuple[Any, ...]]:
    """What a store holds of a device, without times: the distinct readings per point."""
    return {
        (r.point, r.unit, r.profile, r.value, r.text, r.quality, r.reason)
        for r in read_points(path, device=device)
    }


async def test_compact_and_json_gateways_store_the_same_readings(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    names = {"meter": "chint-dtsu666", "plc": "test-plc"}
    specs = [
        SimDeviceSpec(
            name=name,
            url="tcp://127.0.0.1:0",
            device_id=i + 1,
            profile=load_profile(PROFILES / f"{profile}.yaml"),
            seed=31 + i,
        )
        for i, (name, profile) in enumerate(names.items())
    ]
    async with serve(specs) as sim:
        for name in names:
            sim.device(name).freeze()
        devices = [
            {
                "name": name,
                "driver": "modbus",
                "url": sim.device(name).url,
                "device_id": sim.device(name).device_id,
                "profile": profile,
                "interval_s": 0.1,
            }
            for name, profile in names.items()
        ]
        prefixes = {p: f"{unique_prefix}/{p}" for p in ("json", "compact")}
        loaded = {
            p: load_config(
                _site(
                    tmp_path / p, broker=mosquitto, prefix=prefixes[p], payload=p, devices=devices
                )
            )
            for p in prefixes
        }
        agents = {p: Agent(loaded[p]) for p in prefixes}
        ingests = {
            p: Ingest(loaded[p], worker=f"{unique_prefix}-{p}".replace("/", "-")) for p in prefixes
        }
        sub = subscribe(mosquitto.host, mosquitto.port, f"{prefixes['compact']}/#")
        async with ingesting(ingests["json"]), ingesting(ingests["compact"]):
            async with running(agents["json"]), running(agents["compact"]):
                for p in prefixes:
                    await until(lambda p=p: agents[p].seq >= 20, f"20 {p} messages")
                # Every request of the meter answers exception 02: bad points with a reason.
                sim.device("meter").faults.set(FaultKind.EXCEPTION, code=2)
                for p in prefixes:
                    await until(
                        lambda p=p: any(
                            r[5] == "bad" for r in _readings(store_path(loaded[p]), "meter")
                        ),
                        f"bad meter readings in the {p} store",
                    )
                sim.device("meter").faults.clear()
                marks = {p: agents[p].seq for p in prefixes}
                for p in prefixes:
                    await until(lambda p=p: agents[p].seq >= marks[p] + 10, f"{p} good again")
            for p in prefixes:
                sent = agents[p].seq
                await until(
                    lambda p=p, sent=sent: ingests[p].stats.stored_messages >= sent,
                    f"{sent} {p} messages stored",
                )

    for name in names:
        json_rows = _readings(store_path(loaded["json"]), name)
        compact_rows = _readings(store_path(loaded["compact"]), name)
        assert compact_rows == json_rows, name
        points = {r[0] for r in json_rows}
        assert points == {p.name for p in agents["json"].encoders[name].points}
        assert {r[2] for r in json_rows} == {names[name]}
    meter_rows = _readings(store_path(loaded["compact"]), "meter")
    assert ("voltage_a", "V") in {(r[0], r[1]) for r in meter_rows}
    assert {r[6] for r in meter_rows if r[5] == "bad"} == {"exception 02 (illegal data address)"}
    assert ingests["compact"].stats.without_meta == 0
    assert ingests["compact"].rejects.counts == {}

    # On the wire: retained metadata per device, then values-only data messages.
    data = [m for m in sub.messages if m.topic.endswith("/data")]
    metas = {m.topic: orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/meta")}
    assert set(metas) == {f"{prefixes['compact']}/plant-a/gw-01/{n}/meta" for n in names}
    for doc in metas.values():
        META.validate(doc)
        assert doc["meta"] == agents["compact"].metas[doc["device"]].meta_id
    assert data
    for m in data:
        doc = orjson.loads(m.payload)
        V3.validate(doc)
        assert doc["meta"] == metas[m.topic.removesuffix("data") + "meta"]["meta"]
    compact_bytes = sum(e.bytes for e in agents["compact"].encoders.values())
    json_bytes = sum(e.bytes for e in agents["json"].encoders.values())
    compact_n = sum(e.messages for e in agents["compact"].encoders.values())
    json_n = sum(e.messages for e in agents["json"].encoders.values())
    assert compact_bytes / compact_n < 0.5 * json_bytes / json_n


# -- the ingest alone: compact messages and their metadata --------------------------------


def _publish(url: str, messages: list[tuple[str, bytes, bool]]) -> None:
    """QoS 1, (topic, payload, retain) in order over one connection; returns once acked."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    gone = threading.Event()
    client.on_disconnect = lambda *_: gone.set()
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1, retain=r) for t, p, r in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        gone.wait(10)
        client.loop_stop()


def _meta(points: tuple[Any, ...] = POINTS) -> Any:
    return device_meta(
        gateway="gw-01", device="meter-1", driver="modbus", profile=None, points=points, types={}
    )


def _compact(meta_id: str, seq: int, ts_ms: int) -> bytes:
    encoder = CompactEncoder(gateway="gw-01", device="meter-1", points=POINTS, meta_id=meta_id)
    values, issues = poll_values(seq)
    return encoder.encode(Poll("meter-1", ts_ms * 1_000_000, POINTS, values, issues), seq=seq)


async def test_a_compact_message_before_its_metadata_waits_for_it(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{store: edge.sqlite, flush_interval_s: 0.05, meta_wait_s: 30}",
        allow=[f"{site}/gw-01/meter-1/*"],
    )
    base = f"{unique_prefix}/{site}/gw-01/meter-1"
    meta = _meta()
    ts_ms = time.time_ns() // 1_000_000 - 60_000
    ingest = Ingest(loaded, worker="compact-early")
    async with ingesting(ingest):
        await asyncio.to_thread(
            _publish, mosquitto.url, [(f"{base}/data", _compact(meta.meta_id, 1, ts_ms), False)]
        )
        await until(lambda: ingest.stats.waiting_for_meta == 1, "the message held")
        assert (ingest.stats.stored_messages, ingest.client.stats.acked) == (0, 0)
        await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/meta", meta.payload, True)])
        await until(lambda: ingest.stats.stored_messages == 1, "stored once its metadata came")
        await until(lambda: ingest.client.stats.acked == 1, "acknowledged after the write")
        assert ingest.stats.waiting_for_meta == 0
        # The next one finds the metadata at once.
        await asyncio.to_thread(
            _publish,
            mosquitto.url,
            [(f"{base}/data", _compact(meta.meta_id, 2, ts_ms + 1000), False)],
        )
        await until(lambda: ingest.stats.stored_messages == 2, "the second stored")
    assert ingest.stats.without_meta == 0
    rows = read_points(store_path(loaded), site=site, device="meter-1")
    by_point = {(r.point, r.ts_ms): r for r in rows}
    assert len(rows) == 2 * len(POINTS)
    for seq, at in ((1, ts_ms), (2, ts_ms + 1000)):
        values, _ = poll_values(seq)
        assert by_point[("voltage_a", at)].value == values[0]
        assert by_point[("voltage_a", at)].unit == "V"
        assert by_point[("energy_import", at)].unit == "kWh"
        assert by_point[("pf_total", at)].quality == "bad"
        assert by_point[("pf_total", at)].reason == "exception 02 (illegal data address)"
        assert (by_point[("current_a", at)].quality, by_point[("current_a", at)].unit) == (
            "uncertain",
            "A",
        )
    await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/meta", b"", True)])


async def test_without_its_metadata_a_message_reads_the_latest_or_is_a_dead_letter(
    tmp_path: Path, mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{store: edge.sqlite, flush_interval_s: 0.05, meta_wait_s: 0.3}",
        allow=[f"{site}/gw-01/meter-1/*"],
    )
    base = f"{unique_prefix}/{site}/gw-01/meter-1"
    letters = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/{site}/gw-01/deadletter")
    ts_ms = time.time_ns() // 1_000_000 - 60_000
    latest = _meta()
    fewer = _meta(POINTS[:2])  # today's metadata lists two points only
    orphan = _compact("0badc0de", 1, ts_ms)  # no metadata has this id
    ingest = Ingest(loaded, worker="compact-late")
    async with ingesting(ingest):
        # No metadata at all: a dead letter after the wait, its payload kept.
        await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/data", orphan, False)])
        await until(lambda: ingest.rejects.counts.get("no_metadata") == 1, "no_metadata")
        await until(lambda: ingest.client.stats.acked == 1, "acknowledged after its dead letter")
        letter = orjson.loads(letters.messages[0].payload)
        assert letter["kind"] == "no_metadata" and "0badc0de" in letter["detail"]
        # The latest metadata lists every point of an old message: read with it.
        await asyncio.to_thread(
            _publish,
            mosquitto.url,
            [
                (f"{base}/meta", latest.payload, True),
                (f"{base}/data", _compact("0ldmeta0", 2, ts_ms + 1000), False),
            ],
        )
        await until(lambda: ingest.stats.stored_messages == 1, "read with the latest metadata")
        # ... and one that does not: a dead letter.
        await asyncio.to_thread(
            _publish,
            mosquitto.url,
            [
                (f"{base}/meta", fewer.payload, True),
                (f"{base}/data", _compact("0ldmeta1", 3, ts_ms + 2000), False),
            ],
        )
        await until(lambda: ingest.rejects.counts.get("no_metadata") == 2, "second no_metadata")
        await until(lambda: ingest.client.stats.acked == 3, "all acknowledged")
        # Broken metadata is a dead letter of its gateway, and the book keeps what it had.
        await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/meta", b"{nope", False)])
        await until(lambda: len(letters.messages) == 3, "the broken metadata's dead letter")
        letter = orjson.loads(letters.messages[2].payload)
        assert (letter["kind"], letter["topic"]) == ("malformed_json", f"{base}/meta")
        assert ingest.metas.latest(parse_meta_topic(f"{base}/meta", unique_prefix)) == {
            p.name: p.unit for p in POINTS[:2]
        }
    assert ingest.stats.without_meta == 3
    assert ingest.stats.stored_messages == 1
    rows = read_points(store_path(loaded), site=site, device="meter-1")
    assert {r.ts_ms for r in rows} == {ts_ms + 1000}
    assert {(r.point, r.unit) for r in rows} == {(p.name, p.unit) for p in POINTS}
    await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/meta", b"", True)])


async def test_metadata_follows_reloads_and_reconnects(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    """A reload that changes a device republishes its metadata before its next data; one
    that removes a device clears it; the broker's retained copy is always the current one."""
    specs = [
        SimDeviceSpec(
            name=name,
            url="tcp://127.0.0.1:0",
            device_id=i + 1,
            profile=load_profile(PROFILES / "chint-dtsu666.yaml"),
            seed=41 + i,
        )
        for i, name in enumerate(("m1", "m2"))
    ]
    async with serve(specs) as sim:

        def device(name: str, unit: str = "V") -> dict[str, Any]:
            return {
                "name": name,
                "driver": "modbus",
                "url": sim.device(name).url,
                "device_id": sim.device(name).device_id,
                "interval_s": 0.1,
                "points": [{"name": "v", "address": 0x2006, "type": "float32", "unit": unit}],
            }

        folder = tmp_path / "gw"
        site = _site(
            folder,
            broker=mosquitto,
            prefix=unique_prefix,
            payload="compact",
            devices=[device("m1"), device("m2")],
        )
        agent = Agent(load_config(site))
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        base = f"{unique_prefix}/plant-a/gw-01"

        def seen(topic: str) -> list[bytes]:
            return [m.payload for m in sub.messages if m.topic == topic]

        async with running(agent):
            await until(lambda: len(seen(f"{base}/m1/data")) >= 3, "m1 data")
            first = agent.metas["m1"].meta_id
            assert [orjson.loads(p)["meta"] for p in seen(f"{base}/m1/meta")] == [first]
            # m1's unit changes, m2 goes.
            site.write_text(
                site.read_text()
                .replace(f"  - {json.dumps(device('m2'))}\n", "")
                .replace('"unit": "V"', '"unit": "kV"')
            )
            assert await agent.reload_file() is not None
            second = agent.metas["m1"].meta_id
            assert second != first and "m2" not in agent.metas
            await until(
                lambda: any(orjson.loads(p)["meta"] == second for p in seen(f"{base}/m1/data")),
                "data against the new metadata",
            )
            metas = seen(f"{base}/m1/meta")
            assert [orjson.loads(p)["meta"] for p in metas] == [first, second]
            assert orjson.loads(metas[-1])["points"] == {"v": {"unit": "kV", "type": "float32"}}
            assert seen(f"{base}/m2/meta")[-1] == b""  # cleared
            # Every data message after the new metadata names it, none before does.
            ids = [orjson.loads(p)["meta"] for p in seen(f"{base}/m1/data")]
            switch = ids.index(second)
            assert set(ids[:switch]) == {first} and set(ids[switch:]) == {second}

    # What a subscriber arriving now gets: the current metadata of m1, nothing of m2.
    late = subscribe(mosquitto.host, mosquitto.port, f"{base}/+/meta")
    await until(lambda: len(late.messages) >= 1, "the retained metadata")
    assert [(m.topic, orjson.loads(m.payload)["meta"]) for m in late.messages] == [
        (f"{base}/m1/meta", second)
    ]


@pytest.mark.parametrize("payload", ["json", "compact"])
async def test_a_broker_outage_replays_messages_flagged_historical_into_the_store(
    payload: str,
    mosquitto_fresh: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    broker = mosquitto_fresh
    spec = SimDeviceSpec(
        name="meter",
        url="tcp://127.0.0.1:0",
        profile=load_profile(PROFILES / "chint-dtsu666.yaml"),
        seed=51,
    )
    async with serve([spec]) as sim:
        site = _site(
            tmp_path / "gw",
            broker=broker,
            prefix=unique_prefix,
            payload=payload,
            devices=[
                {
                    "name": "meter",
                    "driver": "modbus",
                    "url": sim.device("meter").url,
                    "profile": "chint-dtsu666",
                    "interval_s": 0.05,
                }
            ],
            session_expiry_s=300,  # the ingest's session outlives the broker's restart
        )
        loaded = load_config(site)
        agent = Agent(loaded)
        ingest = Ingest(loaded, worker=f"{unique_prefix}-outage".replace("/", "-"))
        sub = subscribe(
            broker.host, broker.port, f"{unique_prefix}/#", client_id="sub-c", clean_session=False
        )
        data = f"{unique_prefix}/plant-a/gw-01/meter/data"
        async with ingesting(ingest), running(agent):
            await until(lambda: agent.seq >= 10, "live data")
            broker.stop()
            await agent.sink.wait_disconnected(10)
            seq_down = agent.seq
            await until(lambda: agent.outbox.stats.messages >= 20, "a backlog")
            seq_up = agent.seq
            broker.start()
            await until(
                lambda: agent.outbox.stats.messages == 0 and not agent.forwarder.backlog_pending,
                "the backlog to drain",
                timeout_s=30,
            )
            await until(lambda: ingest.client.connected, "the ingest back", timeout_s=30)
            mark = agent.seq
            await until(lambda: agent.seq >= max(mark, seq_up) + 5, "live data after the outage")
            last = agent.seq
            await until(
                lambda: (
                    {orjson.loads(m.payload)["seq"] for m in sub.messages if m.topic == data}
                    >= set(range(1, last + 1))
                ),
                "every sequence number at the subscriber",
                timeout_s=30,
            )
            # Every poll the broker accepted, before, during and after its restart, is in
            # the store: by seq, no gaps. (The ingest's default plain subscription comes
            # back with its session; a shared one Mosquitto 2.0.11 does not persist, and
            # the backlog the agent sends before the worker is back was lost with it:
            # tests/e2e/test_ingest_broker_restart.py.)
            ts_of = {
                doc["seq"]: doc["ts_ms"]
                for doc in (orjson.loads(m.payload) for m in sub.messages if m.topic == data)
            }
            sent = {ts_of[s] for s in range(1, last + 1)}

            def missing() -> list[int]:
                stored = {r.ts_ms for r in read_points(store_path(loaded), device="meter")}
                return [s for s in range(1, last + 1) if ts_of[s] not in stored]

            try:
                await until(lambda: not missing(), "every poll in the store", timeout_s=30)
            except AssertionError:
                raise AssertionError(
                    f"seqs missing from the store: {missing()} (broker down after seq "
                    f"{seq_down}, up at {seq_up}, ingest back by {mark}, last {last}); "
                    f"ingest {ingest.client.stats}\n{broker.log_text()[-6000:]}"
                ) from None
    first: dict[int, dict[str, Any]] = {}
    for m in sub.messages:
        if m.topic == data:
            doc = orjson.loads(m.payload)
            if payload == "compact":
                V3.validate(doc)
            first.setdefault(doc["seq"], doc)
    outage = range(seq_down + 1, seq_up + 1)
    assert len(outage) >= 10
    assert all(first[s]["historical"] is True for s in outage)
    # Before the outage polls went out live (a poll made before the very first connect
    # is backlog, historical: which is the first depends on the start's timing).
    assert any(not first[s]["historical"] for s in range(1, seq_down + 1))
    # Whatever the ingest stored is the gateway's polls, each point in its unit.
    rows = read_points(store_path(loaded), device="meter")
    stored = {r.ts_ms for r in rows}
    assert sent <= stored <= {d["ts_ms"] for d in first.values()}  # nothing else
    assert {(r.point, r.unit) for r in rows} == {
        (p.name, p.unit) for p in agent.encoders["meter"].points
    }
    assert ingest.rejects.counts == {}


async def test_victoria_metrics_holds_the_same_series_from_both_payloads(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    """The same polls as v1 (device meter-json) and compact (meter-compact): in the store,
    the same series labels but the device, the same timestamps and the same values."""
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
        ingest="{flush_interval_s: 0.05}",
        allow=[f"{site}/gw-01/*/*"],
    )
    ts0 = time.time_ns() // 1_000_000 - 3_600_000
    base = f"{unique_prefix}/{site}/gw-01"
    meta = device_meta(
        gateway="gw-01",
        device="meter-compact",
        driver="modbus",
        profile=None,
        points=POINTS,
        types={},
    )
    v1 = DeviceEncoder(gateway="gw-01", device="meter-json", points=POINTS)
    v3 = CompactEncoder(
        gateway="gw-01", device="meter-compact", points=POINTS, meta_id=meta.meta_id
    )
    messages: list[tuple[str, bytes, bool]] = []
    for seq in range(1, 11):
        values, issues = poll_values(seq)
        at = (ts0 + seq * 1000) * 1_000_000
        messages.append(
            (
                f"{base}/meter-json/data",
                v1.encode(Poll("meter-json", at, POINTS, values, issues), seq=seq),
                False,
            )
        )
        messages.append(
            (
                f"{base}/meter-compact/data",
                v3.encode(Poll("meter-compact", at, POINTS, values, issues), seq=seq),
                False,
            )
        )
    ingest = Ingest(loaded, worker="compact-victoria")
    async with ingesting(ingest):
        # The compact data first: it waits for its metadata.
        await asyncio.to_thread(_publish, mosquitto.url, messages)
        await until(lambda: ingest.stats.waiting_for_meta == 10, "10 compact messages held")
        await asyncio.to_thread(
            _publish, mosquitto.url, [(f"{base}/meter-compact/meta", meta.payload, True)]
        )
        await until(lambda: ingest.stats.stored_messages == 20, "20 messages stored")
    per_message = 4 + 6 + 2  # values (not the string, not the bad point), qualities, reasons
    series = victoria.wait_for_samples(f'{{site="{site}"}}', count=2 * 10 * per_message)
    by_device: dict[str, dict[tuple[str, ...], tuple[list[int], list[float]]]] = {}
    for s in series:
        labels = dict(s["metric"])
        device = labels.pop("device")
        key = tuple(sorted(f"{k}={v}" for k, v in labels.items()))
        by_device.setdefault(device, {})[key] = (s["timestamps"], s["values"])
    assert set(by_device) == {"meter-json", "meter-compact"}
    assert by_device["meter-compact"] == by_device["meter-json"]
    units = {dict(x.split("=", 1) for x in key).get("unit") for key in by_device["meter-json"]}
    assert units == {"V", "kWh", "A", None}
    await asyncio.to_thread(_publish, mosquitto.url, [(f"{base}/meter-compact/meta", b"", True)])

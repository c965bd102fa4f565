"""The gateway as a Sparkplug B 3.0 edge node, against a real Mosquitto and our simulators.

Each assertion names the specification's tck-id it checks (Eclipse Sparkplug 3.0.0,
chapters Topics, Operational Behavior and Payloads). Payloads are decoded with the
classes generated from sparkplug_b.proto and, independently, with Eclipse Tahu's
JavaScript `sparkplug-payload` (npm) under node.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.reading import Poll
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from edge_agent.sparkplug import datatypes as dt
from edge_agent.sparkplug import sparkplug_b_pb2 as pb
from edge_agent.sparkplug.payload import decode
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Received, Subscriber, publish_once
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
TAHU = ROOT / ".venv" / "node" / "node_modules" / "sparkplug-payload"
METER = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))
PLC = load_profile(shipped(Kind.PROFILES, "test-plc"))

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Msg:
    """One Sparkplug message as the subscriber saw it."""

    kind: str  # NBIRTH, DDATA, ...
    device: str | None
    payload: Any  # pb.Payload
    raw: Received


def _messages(sub: Subscriber) -> list[Msg]:
    out = []
    for m in sub.messages:
        parts = m.topic.split("/")
        if parts[0] != "spBv1.0" or parts[1] == "STATE" or parts[2] in ("NCMD", "DCMD"):
            continue  # the host's messages (our test's), not the node's
        out.append(Msg(parts[2], parts[4] if len(parts) > 4 else None, decode(m.payload), m))
    return out


def _metrics(msg: Msg) -> dict[str, Any]:
    return {m.name: m for m in msg.payload.metrics}


def _value(metric: Any) -> Any:
    """The Python value of a metric; Int8/16/32 are 32-bit two's complement in int_value,
    Int64 64-bit in long_value (the spec's datatype table; Tahu reads them so too)."""
    if metric.is_null:
        return None
    value = getattr(metric, metric.WhichOneof("value"))
    bits = {dt.INT8: 32, dt.INT16: 32, dt.INT32: 32, dt.INT64: 64}.get(metric.datatype)
    if bits and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _write_site(
    path: Path,
    *,
    url: str,
    prefix: str,
    devices: list[tuple[str, str, int, str]],
    interval_s: float,
    sparkplug: dict[str, Any],
    outbox: str = "outbox.sqlite",
    extra: str = "",
) -> Path:
    lines = [
        "site: plant-a",
        "gateway: gw-01",
        f'mqtt: {{url: "{url}", prefix: "{prefix}", backoff_max_s: 1.0}}',
        f"outbox: {{path: {json.dumps(outbox)}}}",
        f"sparkplug: {json.dumps(sparkplug)}",
        extra,
        "devices:",
    ]
    for name, dev_url, device_id, profile in devices:
        lines.append(
            f"  - {{name: {name}, driver: modbus, url: '{dev_url}', device_id: {device_id}, "
            f"profile: {profile}, interval_s: {interval_s}}}"
        )
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


@asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=20)
        assert done == {task}


def _group(unique_prefix: str) -> str:
    return unique_prefix.split("/")[-1]


def _seq_chain(msgs: list[Msg]) -> list[int]:
    return [m.payload.seq for m in msgs if m.kind not in ("NDEATH",)]


def _assert_seq_increments(msgs: list[Msg]) -> None:
    """tck-id-payloads-sequence-num-incrementing: +1 per message, 255 -> 0, NBIRTH 0."""
    previous: int | None = None
    for m in msgs:
        if m.kind == "NDEATH":
            assert not m.payload.HasField("seq")  # tck-id-payloads-ndeath-seq
            continue
        assert m.payload.HasField("seq"), m  # tck-id-payloads-sequence-num-always-included
        if m.kind == "NBIRTH":
            assert m.payload.seq == 0  # tck-id-payloads-sequence-num-zero-nbirth
        elif previous is not None:
            assert m.payload.seq == (previous + 1) % 256, (m.kind, previous, m.payload.seq)
        previous = m.payload.seq


def _tahu_decode(payloads: list[bytes]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the check with Eclipse Tahu's decoder needs Node.js")
    if not (TAHU / "package.json").is_file():
        pytest.fail(
            f"{TAHU.relative_to(ROOT)} is missing: run scripts/test (its scripts/bootstrap "
            "line installs sparkplug-payload from npm)"
        )
    run = subprocess.run(
        [node, str(ROOT / "tests" / "sparkplug_tahu_decode.js")],
        input="".join(base64.b64encode(p).decode() + "\n" for p in payloads),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(TAHU.parent)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


async def test_births_data_seq_and_rebirth_as_the_specification_says(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    group = _group(unique_prefix)
    specs = [
        SimDeviceSpec(name="meter", url="tcp://127.0.0.1:0", profile=METER, device_id=1),
        SimDeviceSpec(name="plc", url="tcp://127.0.0.1:0", profile=PLC, device_id=2),
    ]
    async with serve(specs) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=mosquitto.url,
            prefix=unique_prefix,
            devices=[
                ("meter", sim.device("meter").url, 1, "chint-dtsu666"),
                ("plc", sim.device("plc").url, 2, "test-plc"),
            ],
            interval_s=0.02,
            sparkplug={"group_id": group, "edge_node_id": "gw-01"},
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"spBv1.0/{group}/#")
        json_sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        agent = Agent(load_config(site))
        node = agent.sparkplug
        assert node is not None
        async with _running(agent):
            # Past one wrap of seq: 255 -> 0 must be seen.
            await until(lambda: len(_messages(sub)) >= 300, what="300 Sparkplug messages")
            rebirth = pb.Payload(timestamp=1)
            rebirth.metrics.add(
                name="Node Control/Rebirth", datatype=dt.BOOLEAN, boolean_value=True
            )
            publish_once(
                mosquitto.host,
                mosquitto.port,
                f"spBv1.0/{group}/NCMD/gw-01",
                rebirth.SerializeToString(),
            )
            await until(
                lambda: sum(m.kind == "NBIRTH" for m in _messages(sub)) == 2, what="a rebirth"
            )
            count = len(_messages(sub))
            await until(lambda: len(_messages(sub)) >= count + 20, what="data after the rebirth")
    msgs = _messages(sub)
    # tck-id-topics-nbirth-mqtt, -ndata-, -dbirth-, -ddata-mqtt: QoS 0, retain false.
    assert {(m.raw.qos, m.raw.retain) for m in msgs if m.kind != "NDEATH"} == {(0, False)}
    assert msgs[0].kind == "NBIRTH"
    nbirth = _metrics(msgs[0])
    # tck-id-topics-nbirth-bdseq-included, tck-id-payloads-nbirth-bdseq (Int64 in 3.0)
    assert nbirth["bdSeq"].datatype == dt.INT64
    bd_seq = nbirth["bdSeq"].long_value
    # tck-id-topics-nbirth-rebirth-metric, tck-id-operational-behavior-data-commands-rebirth-*
    assert nbirth["Node Control/Rebirth"].datatype == dt.BOOLEAN
    assert nbirth["Node Control/Rebirth"].boolean_value is False
    assert msgs[0].payload.timestamp > 0  # tck-id-topics-nbirth-timestamp
    # tck-id-payloads-dbirth-order: the DBIRTHs follow the NBIRTH before any data.
    assert [(m.kind, m.device) for m in msgs[1:3]] == [("DBIRTH", "meter"), ("DBIRTH", "plc")]
    _assert_seq_increments(msgs)
    assert any(m.payload.seq == 0 for m in msgs[1:] if m.kind != "NBIRTH")  # the wrap
    # tck-id-topics-dbirth-metrics: name, datatype and value of every point; units as
    # engineering properties; Device Control/Rebirth offered.
    meter_birth = _metrics(msgs[1])
    assert set(meter_birth) == {p.name for p in METER.points} | {"Device Control/Rebirth"}
    voltage = meter_birth["voltage_a"]
    assert voltage.datatype == dt.DOUBLE  # float32 with a scale: engineering values
    props = dict(zip(voltage.properties.keys, voltage.properties.values, strict=True))
    assert props["engUnit"].string_value == "V"
    # Born before its first poll: null and STALE; else its value, without a Quality.
    assert ("Quality" in props) is voltage.is_null
    assert not voltage.is_null or props["Quality"].int_value == 500
    assert meter_birth["energy_import"].datatype == dt.FLOAT  # plain float32
    plc_birth = _metrics(msgs[2])
    assert plc_birth["h_int16_abcd"].datatype == dt.INT16
    assert plc_birth["h_uint32_abcd"].datatype == dt.UINT32
    assert plc_birth["input_0"].datatype == dt.BOOLEAN
    for birth in (msgs[1], msgs[2]):
        for metric in birth.payload.metrics:
            # tck-id-payloads-name-birth-data-requirement: a timestamp on every metric
            assert metric.HasField("timestamp") and metric.HasField("datatype"), metric.name
    # tck-id-topics-ddata-payload: DDATA carries the readings; the values are the JSON
    # contract's for the same poll (same device, same ts_ms).
    json_docs = {
        (d["device"], d["ts_ms"]): d
        for d in (orjson.loads(m.payload) for m in json_sub.messages if m.topic.endswith("/data"))
    }
    births = {m.device: _metrics(m) for m in msgs if m.kind == "DBIRTH"}
    compared = 0
    born_at = 0
    for m in msgs:
        if m.kind == "NBIRTH":
            born_at = m.payload.timestamp
        if m.kind != "DDATA":
            continue
        assert m.payload.timestamp > 0  # tck-id-topics-ddata-timestamp
        for metric in m.payload.metrics:
            assert metric.HasField("timestamp")
            # Only what was read before the (re)birth goes up as history.
            assert not metric.is_historical or metric.timestamp <= born_at
            doc = json_docs.get((m.device, metric.timestamp))
            if doc is None:
                continue
            metric.datatype = births[m.device][metric.name].datatype
            expected = doc["points"][metric.name]["value"]
            got = _value(metric)
            if births[m.device][metric.name].datatype == dt.FLOAT:
                assert got == pytest.approx(expected, rel=1e-6)
            else:
                assert got == expected, (m.device, metric.name)
            compared += 1
    assert compared > 1000
    # The rebirth: NBIRTH seq 0 with the same bdSeq (no new CONNECT), DBIRTHs after it
    # (tck-id-operational-behavior-data-commands-rebirth-action-2 and -3).
    second = next(i for i, m in enumerate(msgs) if m.kind == "NBIRTH" and i > 0)
    assert _metrics(msgs[second])["bdSeq"].long_value == bd_seq
    assert [m.kind for m in msgs[second + 1 : second + 3]] == ["DBIRTH", "DBIRTH"]
    assert node.births == 2

    # An independent decoder reads the same: Eclipse Tahu's sparkplug-payload.
    sample = [msgs[0], msgs[1], msgs[2], *[m for m in msgs if m.kind == "DDATA"][:5]]
    tahu = _tahu_decode([m.raw.payload for m in sample])
    assert [int(t["seq"]) for t in tahu] == [m.payload.seq for m in sample]
    assert [t["metrics"][0]["name"] for t in tahu[:1]] == ["bdSeq"]
    assert tahu[0]["metrics"][0]["type"] == "Int64"
    assert int(tahu[0]["metrics"][0]["value"]) == bd_seq
    by_name = {t["name"]: t for t in tahu[2]["metrics"]}
    assert by_name["h_int16_abcd"]["type"] == "Int16"
    assert by_name["h_int16_abcd"]["value"] == _value(plc_birth["h_int16_abcd"])
    assert by_name["input_0"]["type"] == "Boolean"
    tahu_meter = {t["name"]: t for t in tahu[1]["metrics"]}
    assert tahu_meter["voltage_a"]["type"] == "Double"
    assert tahu_meter["voltage_a"]["value"] == _value(voltage)
    assert tahu_meter["voltage_a"]["properties"]["engUnit"]["value"] == "V"
    for t, m in zip(tahu[3:], sample[3:], strict=True):
        assert [x["name"] for x in t["metrics"]] == [x.name for x in m.payload.metrics]
        assert [int(x["timestamp"]) for x in t["metrics"]] == [
            x.timestamp for x in m.payload.metrics
        ]


class _Recorder:
    """A stage that records every poll the agent takes (what must reach the host)."""

    name = "recorder"

    def __init__(self) -> None:
        self.polls: list[tuple[str, int]] = []

    def observe(self, poll: Poll) -> None:
        self.polls.append((poll.device, poll.ts_ns // 1_000_000))

    async def run(self) -> None:
        await asyncio.Future()


async def test_broker_outage_new_bdseq_and_history_marked_historical(
    mosquitto_fresh: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    broker = mosquitto_fresh
    group = _group(unique_prefix)
    specs = [
        SimDeviceSpec(name=f"m{i}", url="tcp://127.0.0.1:0", profile=METER, device_id=i + 1)
        for i in range(2)
    ]
    async with serve(specs) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=broker.url,
            prefix=unique_prefix,
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1, "chint-dtsu666") for i in range(2)],
            interval_s=0.05,
            sparkplug={"group_id": group, "edge_node_id": "gw-01", "json": False},
        )
        agent = Agent(load_config(site))
        node = agent.sparkplug
        assert node is not None
        recorder = _Recorder()
        agent.stages.insert(0, recorder)
        sub = subscribe(
            broker.host,
            broker.port,
            f"spBv1.0/{group}/#",
            client_id="sp-outage",
            clean_session=False,
        )
        # A host reconnects at once: QoS 0 births and history sent before it is back are
        # not for it (the node may reconnect first, its backoff starts at a random delay).
        sub.reconnect_quickly()
        async with _running(agent):
            await until(lambda: len(_messages(sub)) >= 20, what="live data")
            broker.stop()
            await node.sink.wait_disconnected(10)
            await until(lambda: node.outbox.stats.messages >= 40, what="a backlog")
            broker.start()
            backlog = node.outbox.stats.messages
            await until(
                lambda: (
                    node.ready
                    and node.forwarder.replayed >= backlog
                    and not node.forwarder.backlog_pending
                ),
                what="the backlog to drain",
            )
            taken = len(recorder.polls)
            await until(lambda: len(recorder.polls) >= taken + 10, what="live polls after")
        polls = list(recorder.polls)
    msgs = _messages(sub)
    births = [m for m in msgs if m.kind == "NBIRTH"]
    assert len(births) == 2, " ".join([m.kind for m in msgs][-80:])
    first, second = (_metrics(b)["bdSeq"].long_value for b in births)
    assert second == (first + 1) % 256  # tck-id-topics-nbirth-bdseq-increment
    # Nothing accepted is lost: every poll reached the host, as DDATA of its device.
    seen = {(m.device, x.timestamp) for m in msgs if m.kind == "DDATA" for x in m.payload.metrics}
    assert {p for p in polls if p[1] <= max(t for _, t in seen)} <= seen
    # Readings of the outage went up after the new births, is_historical on every metric,
    # each device's history in order; live values never carry the flag.
    at = msgs.index(births[1])
    after = msgs[at:]
    assert [m.kind for m in after[1:3]] == ["DBIRTH", "DBIRTH"]
    history = [m for m in after if m.kind == "DDATA" and m.payload.metrics[0].is_historical]
    assert len(history) >= 20
    for m in history:
        assert all(x.is_historical for x in m.payload.metrics)
    for device in ("m0", "m1"):
        stamps = [m.payload.metrics[0].timestamp for m in history if m.device == device]
        assert stamps == sorted(stamps)
    born_at = births[1].payload.timestamp
    assert all(m.payload.metrics[0].timestamp <= born_at for m in history)
    _assert_seq_increments(after)


def _spawn(site: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", str(site), "--http", "off"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_sigkill_will_ndeath_then_restart_loses_nothing_accepted(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    group = _group(unique_prefix)
    box = tmp_path / "outbox-sparkplug.sqlite"
    specs = [
        SimDeviceSpec(name=f"m{i}", url="tcp://127.0.0.1:0", profile=METER, device_id=i + 1)
        for i in range(3)
    ]
    async with serve(specs) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=mosquitto.url,
            prefix=unique_prefix,
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1, "chint-dtsu666") for i in range(3)],
            interval_s=0.01,
            sparkplug={"group_id": group, "edge_node_id": "gw-01", "json": False},
            outbox=str(tmp_path / "outbox.sqlite"),
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"spBv1.0/{group}/#")
        log = tmp_path / "agent.log"
        agent = _spawn(site, log)
        try:
            await until(lambda: len(_messages(sub)) >= 200, what="a burst of data")
            agent.send_signal(signal.SIGKILL)
            assert agent.wait(10) == -signal.SIGKILL
        finally:
            if agent.poll() is None:
                agent.kill()
        # tck-id-payloads-ndeath-will-message: the broker publishes the will NDEATH.
        await until(lambda: any(m.kind == "NDEATH" for m in _messages(sub)), what="the will NDEATH")
        with sqlite3.connect(box) as db:
            left = [
                decode(r[0])
                for r in db.execute("SELECT payload FROM outbox WHERE topic LIKE '%/DDATA/%'")
            ]
        seen_before = len(_messages(sub))
        agent = _spawn(site, log)
        try:
            await until(lambda: len(_messages(sub)) >= seen_before + 200, what="data after restart")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(20) == 0, log.read_text()[-2000:]
        finally:
            if agent.poll() is None:
                agent.kill()
    msgs = _messages(sub)
    deaths = [m for m in msgs if m.kind == "NDEATH"]
    births = [m for m in msgs if m.kind == "NBIRTH"]
    assert len(births) == 2 and len(deaths) == 2
    will = deaths[0]
    # tck-id-payloads-ndeath-will-message-qos / -retain, tck-id-topics-ndeath-payload
    assert (will.raw.qos, will.raw.retain) == (1, False)
    assert [x.name for x in will.payload.metrics] == ["bdSeq"]
    # tck-id-topics-nbirth-bdseq-matching: the will's bdSeq is the NBIRTH's before it.
    assert will.payload.metrics[0].long_value == _metrics(births[0])["bdSeq"].long_value
    # A restarted agent takes the next bdSeq (kept beside the outbox), not 0 again.
    assert _metrics(births[1])["bdSeq"].long_value == will.payload.metrics[0].long_value + 1
    # SIGTERM: tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath.
    assert deaths[1].payload.metrics[0].long_value == _metrics(births[1])["bdSeq"].long_value
    assert msgs[-1].kind == "NDEATH"
    # What the outbox held at the kill came back after the restart, as history.
    assert left, "the kill left nothing in the outbox: the test proves nothing"
    after = msgs[msgs.index(births[1]) :]
    replayed = {
        (m.device, x.timestamp)
        for m in after
        if m.kind == "DDATA"
        for x in m.payload.metrics
        if x.is_historical
    }
    for payload in left:
        for x in payload.metrics:
            assert any(x.timestamp == t for _, t in replayed), x.timestamp
    with sqlite3.connect(box) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_primary_host_device_death_and_device_rebirth(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    group = _group(unique_prefix)
    host = f"scada-{group}"
    specs = [
        SimDeviceSpec(name=f"m{i}", url="tcp://127.0.0.1:0", profile=METER, device_id=i + 1)
        for i in range(2)
    ]
    async with serve(specs) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=mosquitto.url,
            prefix=unique_prefix,
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1, "chint-dtsu666") for i in range(2)],
            interval_s=0.05,
            sparkplug={
                "group_id": group,
                "edge_node_id": "gw-01",
                "primary_host_id": host,
                "json": False,
            },
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"spBv1.0/{group}/#")
        json_sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        agent = Agent(load_config(site))
        node = agent.sparkplug
        assert node is not None
        state = f"spBv1.0/STATE/{host}"
        async with _running(agent):
            await until(lambda: node.sink.connected, what="the node connected")
            await until(lambda: node.outbox.stats.appended >= 10, what="polls stored")
            # tck-id-message-flow-edge-node-birth-publish-subscribe,
            # tck-id-operational-behavior-edge-node-birth-sequence-wait: nothing before
            # the primary host says it is online.
            assert _messages(sub) == []
            publish_once(
                mosquitto.host,
                mosquitto.port,
                state,
                orjson.dumps({"online": True, "timestamp": 1000}),
                retain=True,
            )
            await until(lambda: node.ready, what="births after STATE online")
            await until(
                lambda: any(m.kind == "DDATA" for m in _messages(sub)), what="data after births"
            )
            sim.device("m1").faults.set("no_answer")
            await until(
                lambda: any(m.kind == "DDEATH" for m in _messages(sub)), what="DDEATH of m1"
            )
            sim.device("m1").faults.clear()
            await until(
                lambda: sum(m.kind == "DBIRTH" and m.device == "m1" for m in _messages(sub)) == 2,
                what="DBIRTH of m1 when it answers again",
            )
            command = pb.Payload(timestamp=1)
            command.metrics.add(
                name="Device Control/Rebirth", datatype=dt.BOOLEAN, boolean_value=True
            )
            publish_once(
                mosquitto.host,
                mosquitto.port,
                f"spBv1.0/{group}/DCMD/gw-01/m0",
                command.SerializeToString(),
            )
            await until(
                lambda: sum(m.kind == "DBIRTH" and m.device == "m0" for m in _messages(sub)) == 2,
                what="DBIRTH of m0 on Device Control/Rebirth",
            )
            publish_once(
                mosquitto.host,
                mosquitto.port,
                state,
                orjson.dumps({"online": False, "timestamp": 2000}),
                retain=True,
            )
            await until(lambda: not node.ready, what="the node holds data for the host")
            await until(lambda: any(m.kind == "NDEATH" for m in _messages(sub)), what="NDEATH")
            held = node.outbox.stats.appended
            await until(lambda: node.outbox.stats.appended >= held + 10, what="polls held")
            publish_once(mosquitto.host, mosquitto.port, state, b"", retain=True)
    msgs = _messages(sub)
    _assert_seq_increments(msgs)
    kinds = [(m.kind, m.device) for m in msgs]
    death = kinds.index(("DDEATH", "m1"))
    reborn = kinds.index(("DBIRTH", "m1"), death)
    # DDATA of m1 just before its death carries Quality BAD on every metric
    # (tck-id-payloads-propertyset-quality-value-type / -value).
    last_data = [m for m in msgs[:death] if m.kind == "DDATA" and m.device == "m1"][-1]
    for metric in last_data.payload.metrics:
        props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
        assert props["Quality"].type == dt.INT32 and props["Quality"].int_value == 0
        assert metric.is_null
    assert not any(k == ("DDATA", "m1") for k in kinds[death:reborn])
    back = _metrics(msgs[reborn])
    assert not back["voltage_a"].is_null and back["voltage_a"].double_value > 0
    # No JSON data messages with `json: false`; the gateway status stays on JSON.
    assert not [m for m in json_sub.messages if m.topic.endswith("/data")]
    assert any(m.topic.endswith("/status") for m in json_sub.messages)


def test_a_site_without_sparkplug_loads_no_protobuf(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: s\ngateway: g\ndevices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:9', profile: chint-dtsu666}\n"
    )
    probe = (
        "import sys\nfrom pathlib import Path\n"
        "from edge_agent.cli.main import start_agent\n"
        "from edge_agent.config.site import load_config\n"
        "start_agent(load_config(Path('site.yaml')))\n"
        "loaded = ('google', 'edge_agent.sparkplug.node')\n"
        "print(sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_sparkplug_block_errors_name_file_line_and_key(tmp_path: Path) -> None:
    from edge_agent.config.site import ConfigError

    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\ngateway: g\n"
        "sparkplug:\n  group_id: plant/a\n  edge_node_id: gw-01\n  jsn: true\n"
        "devices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:9', profile: chint-dtsu666}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(site)
    text = str(caught.value)
    assert "site.yaml:4" in text and "sparkplug.group_id" in text
    assert "site.yaml:6" in text and "jsn" in text

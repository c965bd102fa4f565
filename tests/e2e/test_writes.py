"""Writes end to end: MQTT request -> agent -> simulated PLC -> read-back -> reply -> audit.

A real Mosquitto, the Modbus simulator on loopback and the whole agent: every request is
published by a client of its own on {base}/plc-1/cmd, the reply read on .../cmd/reply and
the audit messages (through the outbox) on .../cmd/audit; the simulator's register image
shows what the device kept.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.modbus.codec import PointType, Table
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.config.site import load_config
from edge_agent.ingest.service import Ingest
from edge_agent.ops.metrics import AgentMetrics, MeteredDriver
from edge_agent.runtime.agent import Agent
from simulators.common.faults import FaultKind
from simulators.modbus.site import SimDeviceSpec, SimSite, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.fixtures.victoria import Victoria
from tests.ingest_support import running as running_ingest
from tests.running_agent import running

pytestmark = pytest.mark.timeout(60)

SCHEMA = orjson.loads(
    (Path(__file__).resolve().parents[2] / "edge_agent/schemas/command-v1.schema.json").read_bytes()
)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{name}"})


REQUEST, REPLY, AUDIT = _validator("request"), _validator("reply"), _validator("audit")

PROFILE = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="temp_sp", address=102, type=PointType.INT16, scale=0.1),
        ModbusPoint(name="level", address=103),
        ModbusPoint(name="pump_run", table=Table.COIL, address=5),
        # The process the set-points drive once written (simulators/modbus/plc_signals.py).
        ModbusPoint(name="flow", address=104, type=PointType.FLOAT32),
        ModbusPoint(name="pump_current", address=106, type=PointType.UINT16, scale=0.01),
    ),
)
SITE = """\
site: plant-a
gateway: gw-01
mqtt: {{url: "{broker}", prefix: "{prefix}", backoff_max_s: 0.5{auth}}}
outbox: {{path: var/outbox.sqlite}}
writes: {{enabled: {enabled}, per_point_per_min: 5}}
devices:
  - name: plc-1
    driver: modbus
    url: "{url}"
    interval_s: 0.2
    timeout_s: 1.0
    backoff_max_s: 0.5
    points:
      - {{name: flow_setpoint, table: holding, address: 100, type: float32,
         write: {{min: 0, max: 50}}}}
      - {{name: temp_sp, address: 102, type: int16, scale: 0.1, write: {{address: 300}}}}
      - {{name: level, address: 103}}
      - {{name: pump_run, table: coil, address: 5, write: {{}}}}
      - {{name: flow, address: 104, type: float32}}
      - {{name: pump_current, address: 106, type: uint16, scale: 0.01}}
"""


async def _until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


def _docs(sub: Subscriber, suffix: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(suffix)]


class Plant:
    """The broker, the simulated PLC, the running agent and a client on its command topic."""

    def __init__(
        self, broker: Mosquitto, sub: Subscriber, sim: SimSite, base: str, metrics: AgentMetrics
    ) -> None:
        self.broker = broker
        self.sub = sub
        self.sim = sim
        self.base = base
        self.metrics = metrics

    def counted(self, result: str, code: str = "") -> float | None:
        return self.metrics.registry.get_sample_value(
            "edge_agent_write_results_total", {"result": result, "code": code}
        )

    def send(self, request: dict[str, Any]) -> None:
        if set(request) <= {"id", "point", "value", "expires_s", "by"}:
            REQUEST.validate(request)  # what the schema allows (bad requests are tests' own)
        topic = f"{self.base}/plc-1/cmd"
        publish_once(self.broker.host, self.broker.port, topic, orjson.dumps(request))

    def replies(self) -> list[dict[str, Any]]:
        docs = _docs(self.sub, "/cmd/reply")
        for doc in docs:
            REPLY.validate(doc)
        return docs

    def audits(self) -> list[dict[str, Any]]:
        docs = _docs(self.sub, "/cmd/audit")
        for doc in docs:
            AUDIT.validate(doc)
        return docs

    async def reply_to(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        await _until(
            lambda: any(r["id"] == request["id"] for r in self.replies()),
            what=f"the reply to {request['id']}",
        )
        return next(r for r in self.replies() if r["id"] == request["id"])

    def served(self, name: str) -> object:
        return self.sim.device("plc-1").served_values()[name]


@asynccontextmanager
async def _plant(
    broker: Mosquitto,
    subscribe: Callable[..., Subscriber],
    prefix: str,
    tmp_path: Path,
    *,
    enabled: bool = True,
    auth: str = "",
    reader: dict[str, str] | None = None,
    extra: str = "",
) -> AsyncIterator[tuple[Plant, Agent]]:
    spec = SimDeviceSpec(name="plc-1", url="tcp://127.0.0.1:0", profile=PROFILE)
    async with serve([spec]) as sim:
        device = sim.device("plc-1")
        device.freeze()
        device.image.store(
            {
                "flow_setpoint": 12.5,
                "temp_sp": 20.0,
                "level": 7,
                "pump_run": False,
                "flow": 3.0,
                "pump_current": 0.0,
            }
        )
        path = tmp_path / "site.yaml"
        path.write_text(
            SITE.format(
                broker=broker.url,
                prefix=prefix,
                url=device.url,
                enabled="true" if enabled else "false",
                auth=auth,
            )
            + extra
        )
        agent = Agent(load_config(path))
        # As `run --http` has it: every driver under the metrics' timing wrapper.
        metrics = AgentMetrics(agent, uplink_down_for=lambda: None)
        assert isinstance(agent.units[0].driver, MeteredDriver)
        base = f"{prefix}/plant-a/gw-01"
        sub = subscribe(broker.host, broker.port, f"{base}/plc-1/cmd/#", **(reader or {}))
        async with running(agent):
            unit = agent.units[0]
            await _until(lambda: unit.stats.good_polls > 0, what="the first poll")
            await _until(lambda: agent.sink.connected, what="the agent's connection")
            # The subscription is made on connect: a fence round trip says it is in place.
            fenced = asyncio.Event()
            assert agent.sink.fence(fenced.set)
            await asyncio.wait_for(fenced.wait(), 5)
            yield Plant(broker, sub, sim, base, metrics), agent


async def test_a_set_point_is_written_read_back_answered_and_audited(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, _agent):
        request = {"id": "c-1", "point": "flow_setpoint", "value": 42.5, "expires_s": 10}
        reply = await plant.reply_to({**request, "by": "li.wei"})
        assert reply == {"id": "c-1", "result": "done", "value": 42.5}
        assert plant.served("flow_setpoint") == 42.5

        assert await plant.reply_to({"id": "c-2", "point": "pump_run", "value": True}) == {
            "id": "c-2",
            "result": "done",
            "value": True,
        }
        assert plant.served("pump_run") is True

        await _until(lambda: len(plant.audits()) >= 4, what="the audit messages")
        audits = plant.audits()
        assert [(a["event"], a["id"]) for a in audits[:4]] == [
            ("request", "c-1"),
            ("result", "c-1"),
            ("request", "c-2"),
            ("result", "c-2"),
        ]
        result = audits[1]
        assert result["by"] == "li.wei" and result["point"] == "flow_setpoint"
        assert (result["value"], result["old_value"], result["new_value"]) == (42.5, 12.5, 42.5)
        assert result["result"] == "done" and result["gateway"] == "gw-01"
        assert result["received_ms"] <= result["executed_ms"] <= result["ts_ms"]
        assert audits[0]["seq"] < audits[1]["seq"]
        assert plant.counted("done") == 2.0


async def test_a_write_lands_its_audit_records_in_the_store(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    victoria: Victoria,
) -> None:
    # The session's VictoriaMetrics is shared: this test's requester is its own series.
    who = f"op-{uuid.uuid4().hex[:10]}"
    influx = f'influx: {{url: "{victoria.url}", token: t, org: plant, bucket: edge}}\n'
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path, extra=influx) as (
        plant,
        _agent,
    ):
        ingest = Ingest(load_config(tmp_path / "site.yaml"), worker="audit")
        async with running_ingest(ingest):
            done = await plant.reply_to(
                {"id": "s-1", "point": "flow_setpoint", "value": 42.5, "by": who}
            )
            assert done["result"] == "done"
            refused = await plant.reply_to(
                {"id": "s-2", "point": "flow_setpoint", "value": 60, "by": who}
            )
            assert refused["code"] == "out_of_range"
            await _until(lambda: ingest.stats.stored_audits == 4, what="4 audits stored")
        sent = {(a["event"], a["id"]): a for a in plant.audits()}

    series = victoria.wait_for_samples(f'{{who="{who}"}}', count=2 + 5 + 2 + 2)
    got = {
        (s["metric"]["__name__"], s["metric"]["event"], s["metric"].get("result", "")): s
        for s in series
    }
    tags = {k: v for k, v in series[0]["metric"].items() if k not in ("__name__", "event")}
    assert {k: tags[k] for k in ("site", "gateway", "device", "point", "who")} == {
        "site": "plant-a",
        "gateway": "gw-01",
        "device": "plc-1",
        "point": "flow_setpoint",
        "who": who,
    }

    def samples(name: str, event: str, result: str = "") -> list[tuple[int, float]]:
        s = got[(f"edge_command_{name}", event, result)]
        return list(zip(s["timestamps"], s["values"], strict=True))

    request_1, result_1 = sent["request", "s-1"], sent["result", "s-1"]
    result_2 = sent["result", "s-2"]
    # One sample per audit message at its ts_ms, carrying what the message said.
    assert samples("value", "request") == [
        (request_1["ts_ms"], 42.5),
        (sent["request", "s-2"]["ts_ms"], 60.0),
    ]
    assert samples("value", "result", "done") == [(result_1["ts_ms"], 42.5)]
    assert samples("old_value", "result", "done") == [(result_1["ts_ms"], 12.5)]
    assert samples("new_value", "result", "done") == [(result_1["ts_ms"], 42.5)]
    assert samples("executed_ms", "result", "done") == [
        (result_1["ts_ms"], float(result_1["executed_ms"]))
    ]
    assert samples("received_ms", "result", "done") == [
        (result_1["ts_ms"], float(result_1["received_ms"]))
    ]
    assert samples("value", "result", "rejected") == [(result_2["ts_ms"], 60.0)]
    assert got["edge_command_value", "result", "rejected"]["metric"]["code"] == "out_of_range"
    # Refused before it was queued: no old value taken, nothing sent, nothing read back.
    for name in ("old_value", "new_value", "executed_ms"):
        assert (f"edge_command_{name}", "result", "rejected") not in got
    assert len(series) == 2 + 5 + 2


async def test_the_simulated_process_follows_what_is_written(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, agent):
        plant.sim.device("plc-1").unfreeze()  # the process moves again: patterns, set-points
        reply = await plant.reply_to({"id": "p-1", "point": "flow_setpoint", "value": 42.5})
        assert reply["result"] == "done"
        # The agent's own polls see the flow settle on the set-point and stay there, while
        # its pattern alone moves it by 10 per second or more.
        await _until(
            lambda: abs(_polled(agent, "flow") - 42.5) < 0.05, what="the flow to reach 42.5"
        )
        settled = await _next_polls(agent, 5, "flow")
        assert all(abs(v - 42.5) < 0.05 for v in settled), settled

        assert (await plant.reply_to({"id": "p-2", "point": "pump_run", "value": True}))[
            "value"
        ] is True
        await _until(lambda: _polled(agent, "pump_current") > 100, what="the pump running")
        assert (await plant.reply_to({"id": "p-3", "point": "pump_run", "value": False}))[
            "value"
        ] is False
        await _until(lambda: _polled(agent, "pump_current") == 0, what="the pump stopped")
        assert await _next_polls(agent, 3, "pump_current") == [0, 0, 0]


def _polled(agent: Agent, point: str) -> float:
    """The point's value in the device's last poll."""
    poll = agent.units[0].stats.last_poll
    assert poll is not None
    value = poll.values[[p.name for p in poll.points].index(point)]
    assert isinstance(value, int | float)
    return float(value)


async def _next_polls(agent: Agent, n: int, point: str) -> list[float]:
    """The point's value in each of the next `n` polls."""
    stats = agent.units[0].stats
    values: list[float] = []
    seen = stats.good_polls
    while len(values) < n:
        await _until(lambda seen=seen: stats.good_polls > seen, what="the next poll")
        seen = stats.good_polls
        values.append(_polled(agent, point))
    return values


async def test_every_refusal_says_why_and_nothing_reaches_the_device(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, _agent):
        writes_before = plant.sim.device("plc-1").counters.writes
        cases = [
            ({"point": "flow_setpoint", "value": 50.5}, "out_of_range", "above max 50"),
            ({"point": "flow_setpoint", "value": -1}, "out_of_range", "below min 0"),
            ({"point": "flow_setpoint", "value": "42"}, "wrong_type", "takes a number"),
            ({"point": "pump_run", "value": 1}, "wrong_type", "takes true or false"),
            ({"point": "level", "value": 3}, "not_writable", "level is not writable"),
            ({"point": "nope", "value": 3}, "unknown_point", "has no point 'nope'"),
            ({"point": "flow_setpoint", "value": 1, "expires_s": 61}, "bad_request", "at most"),
            ({"point": "flow_setpoint", "value": 1, "colour": 1}, "bad_request", "unknown field"),
            ({"point": "temp_sp", "value": 20.05}, "wrong_type", "steps of 0.1"),
        ]
        for n, (fields, code, reason) in enumerate(cases):
            reply = await plant.reply_to({"id": f"r-{n}", **fields})
            assert (reply["result"], reply["code"]) == ("rejected", code), reply
            assert reason in reply["reason"]
        assert plant.sim.device("plc-1").counters.writes == writes_before
        assert plant.served("flow_setpoint") == 12.5
        # Each one that could be read is recorded: its arrival and its result.
        await _until(lambda: len(plant.audits()) >= 2 * (len(cases) - 1), what="the audits")
        results = [a for a in plant.audits() if a["event"] == "result"]
        assert [(a["id"], a["code"]) for a in results] == [
            (f"r-{n}", code) for n, (_, code, _) in enumerate(cases) if n != 7
        ]
        assert all(a["executed_ms"] is None for a in results)
        assert plant.counted("rejected", "wrong_type") == 3.0
        assert plant.counted("rejected", "bad_request") == 2.0
        assert plant.counted("done") is None


async def test_a_device_exception_is_a_failure_with_its_code(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, _agent):
        # temp_sp's set-point address 300 is not in the PLC's map.
        reply = await plant.reply_to({"id": "f-1", "point": "temp_sp", "value": 21.5})
        assert reply == {
            "id": "f-1",
            "result": "failed",
            "reason": "exception 02 (illegal data address)",
        }


async def test_requests_run_in_arrival_order_within_the_rate_limit(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, _agent):
        for n in range(6):
            plant.send({"id": f"o-{n}", "point": "flow_setpoint", "value": float(n + 1)})
        await _until(lambda: len(plant.replies()) >= 6, what="six replies")
        replies = plant.replies()
        # The sixth is over the limit of 5 a minute: answered at once, before the queue runs.
        done = [(r["id"], r["value"]) for r in replies if r["result"] == "done"]
        assert done == [(f"o-{n}", float(n + 1)) for n in range(5)]
        rejected = [(r["id"], r["code"]) for r in replies if r["result"] == "rejected"]
        assert rejected == [("o-5", "rate_limited")]
        assert plant.served("flow_setpoint") == 5.0


async def test_a_request_that_waited_past_its_expiry_never_reaches_the_device(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, _agent):
        device = plant.sim.device("plc-1")
        device.faults.set(FaultKind.SLOW, delay_s=0.3)  # a write and its read-back: 0.6 s
        plant.send({"id": "e-1", "point": "pump_run", "value": True})
        plant.send({"id": "e-2", "point": "flow_setpoint", "value": 30.0, "expires_s": 0.2})
        await _until(lambda: len(plant.replies()) >= 2, what="two replies")
        first, second = plant.replies()
        assert (first["id"], first["result"]) == ("e-1", "done")
        assert second == {
            "id": "e-2",
            "result": "rejected",
            "reason": "expired: not executed within 0.2 s",
            "code": "expired",
        }
        assert device.counters.writes == 1
        assert plant.served("flow_setpoint") == 12.5


async def test_a_device_that_is_down_is_not_tried(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, agent):
        device = plant.sim.device("plc-1")
        device.faults.set(FaultKind.NO_ANSWER)
        await _until(lambda: agent.units[0].stats.up is False, what="the device down")
        reply = await plant.reply_to({"id": "d-1", "point": "pump_run", "value": True})
        assert (reply["result"], reply["code"]) == ("rejected", "device_down")
        assert reply["reason"] == "device down: timeout"
        assert device.counters.writes == 0


async def test_writes_are_off_unless_the_site_turns_them_on(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path, enabled=False) as (plant, _):
        reply = await plant.reply_to({"id": "x-1", "point": "flow_setpoint", "value": 1.0})
        assert reply == {
            "id": "x-1",
            "result": "rejected",
            "reason": "writes are disabled on this gateway",
            "code": "writes_disabled",
        }
        assert plant.sim.device("plc-1").counters.writes == 0


def _publish_v5(
    broker: Mosquitto, topic: str, payload: bytes, *, username: str, password: str
) -> str:
    """Publish one QoS 1 message as an MQTT 5 client; the PUBACK's reason, by name."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    acked = threading.Event()
    reasons: list[str] = []

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        reasons.append(reason.getName())
        acked.set()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1)
        assert acked.wait(5), "no PUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


@pytest.fixture
def acl_broker(tmp_path: Path, unique_prefix: str) -> Iterator[Mosquitto]:
    """A broker where `edge` (the agent) and `operator` may use the command topics, and
    `viewer` may only read."""
    workdir = tmp_path / "acl-broker"
    workdir.mkdir()
    passwd = workdir / "passwd"
    for n, user in enumerate(("edge", "operator", "viewer")):
        flags = ["-c"] if n == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwd), user, f"{user}-pw"], check=True
        )
    passwd.chmod(0o600)
    acl = workdir / "acl"
    acl.write_text(
        f"user edge\ntopic readwrite {unique_prefix}/#\n"
        f"user operator\ntopic write {unique_prefix}/+/+/+/cmd\n"
        f"topic read {unique_prefix}/+/+/+/cmd/#\n"
        f"user viewer\ntopic read {unique_prefix}/#\n"
    )
    broker = Mosquitto(workdir, password_file=passwd, listeners=f"acl_file {acl}")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_the_broker_refuses_a_client_without_the_right_to_write(
    acl_broker: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", "edge-pw")
    auth = ', username: edge, password: "${MQTT_PASSWORD}"'
    reader = {"username": "operator", "password": "operator-pw"}
    async with _plant(acl_broker, subscribe, unique_prefix, tmp_path, auth=auth, reader=reader) as (
        plant,
        _agent,
    ):
        topic = f"{plant.base}/plc-1/cmd"
        denied = {"id": "v-1", "point": "flow_setpoint", "value": 1.0}
        allowed = {"id": "o-1", "point": "flow_setpoint", "value": 2.0}
        refused = await asyncio.to_thread(
            _publish_v5,
            acl_broker,
            topic,
            orjson.dumps(denied),
            username="viewer",
            password="viewer-pw",
        )
        assert refused == "Not authorized"
        accepted = await asyncio.to_thread(
            _publish_v5,
            acl_broker,
            topic,
            orjson.dumps(allowed),
            username="operator",
            password="operator-pw",
        )
        assert accepted == "Success"
        await _until(lambda: plant.replies() != [], what="the operator's reply")
        assert plant.replies() == [{"id": "o-1", "result": "done", "value": 2.0}]
        assert plant.sim.device("plc-1").counters.writes == 1
        assert plant.served("flow_setpoint") == 2.0


async def test_an_mqtt5_request_is_answered_on_its_response_topic_with_its_correlation_data(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path, auth=", protocol: 5") as (
        plant,
        _agent,
    ):
        inbox = f"{unique_prefix}/clients/hmi-7/replies"
        got: list[tuple[bytes, bytes | None]] = []
        arrived = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            got.append((message.payload, getattr(message.properties, "CorrelationData", None)))
            arrived.set()

        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect(mosquitto.host, mosquitto.port, keepalive=30)
        client.loop_start()
        try:
            client.subscribe(inbox, qos=1)
            assert await asyncio.to_thread(subscribed.wait, 5)
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = inbox
            properties.CorrelationData = b"\x00\x07corr"
            request = {"id": "m-1", "point": "flow_setpoint", "value": 7.25}
            info = client.publish(
                f"{plant.base}/plc-1/cmd", orjson.dumps(request), qos=1, properties=properties
            )
            await asyncio.to_thread(info.wait_for_publish, 5)
            assert await asyncio.to_thread(arrived.wait, 10), "no reply on the response topic"
        finally:
            client.disconnect()
            client.loop_stop()
        payload, correlation = got[0]
        assert orjson.loads(payload) == {"id": "m-1", "result": "done", "value": 7.25}
        assert correlation == b"\x00\x07corr"
        # ... and on the device's reply topic as for every request.
        await _until(lambda: plant.replies() != [], what="the reply on .../cmd/reply")
        assert plant.replies() == [{"id": "m-1", "result": "done", "value": 7.25}]


async def test_writes_of_a_line_restarted_by_a_reload_are_answered(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, agent):
        device = plant.sim.device("plc-1")
        device.faults.set(FaultKind.SLOW, delay_s=0.5)
        plant.send({"id": "l-1", "point": "pump_run", "value": True})
        plant.send({"id": "l-2", "point": "flow_setpoint", "value": 30.0})
        await _until(lambda: agent.commands.counters.requests == 2, what="both requests")
        await _until(lambda: device.counters.writes == 1, what="the first write on the wire")
        site = tmp_path / "site.yaml"
        site.write_text(site.read_text().replace("interval_s: 0.2", "interval_s: 0.3"))
        plan = await agent.reload(load_config(site))
        assert plan.stop  # the line of plc-1 was restarted
        await _until(lambda: len(plant.replies()) >= 2, what="both answers")
        # The waiting one is answered as the line stops, the one on the wire as it is cut.
        second, first = plant.replies()
        assert first == {
            "id": "l-1",
            "result": "failed",
            "reason": "stopped during the write; read the point",
        }
        assert second == {
            "id": "l-2",
            "result": "rejected",
            "reason": "the device's line was restarted (config reload) before the write ran",
            "code": "device_down",
        }
        assert device.counters.writes == 1


def _publish_many(broker: Mosquitto, topic: str, payloads: list[bytes]) -> None:
    """Publish QoS 1 messages in order over one connection; return once all are acked."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_flood_of_refused_requests_is_answered_but_audited_within_a_budget(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with _plant(mosquitto, subscribe, unique_prefix, tmp_path) as (plant, agent):
        payloads = [orjson.dumps({"id": f"z-{n}", "point": "level", "value": n}) for n in range(75)]
        await asyncio.to_thread(_publish_many, mosquitto, f"{plant.base}/plc-1/cmd", payloads)
        await _until(lambda: len(plant.replies()) >= 75, what="75 replies")
        assert {r["code"] for r in plant.replies()} == {"not_writable"}
        # A write that is accepted is audited whatever the flood before it.
        assert (await plant.reply_to({"id": "ok", "point": "pump_run", "value": True}))[
            "result"
        ] == "done"
        await _until(
            lambda: any(a["id"] == "ok" and a["event"] == "result" for a in plant.audits()),
            what="the audit of the accepted write",
        )
        audits = plant.audits()
        assert [a["id"] for a in audits if a["event"] == "result"] == [
            *(f"z-{n}" for n in range(60)),
            "ok",
        ]
        assert len(audits) == 2 * 61
        assert agent.commands.counters.unaudited == 15

"""Alarms end to end: a Modbus simulator -> the agent -> a real Mosquitto -> an operator.

A simulated boiler serves a pressure the test sets; the agent raises and clears its
alarms, publishes every transition on .../alarms (QoS 1, through the outbox) and the
active set retained on .../alarms/active, and takes acknowledgements on .../alarms/cmd.
The broker is stopped while an alarm raises and clears; the agent is restarted with
alarms active.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.alarms.stage import AlarmStage
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, SimSite, serve
from tests.alarm_support import site_yaml
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.running_agent import running

pytestmark = pytest.mark.timeout(60)

PROFILE = ModbusProfile(
    name="boiler",
    points=(
        ModbusPoint(name="pressure", address=0, type=PointType.FLOAT32, unit="bar"),
        ModbusPoint(name="gas", address=2, type=PointType.FLOAT32, unit="%LEL"),
    ),
)
DEVICE = """\
  - name: boiler
    driver: modbus
    url: "{url}"
    interval_s: 0.05
    points:
      - name: pressure
        address: 0
        type: float32
        unit: bar
        alarms: [{{kind: high, limit: 80, deadband: 2}}]
      - name: gas
        address: 2
        type: float32
        unit: "%LEL"
        alarms: [{{preset: gas_lel}}]
"""
HIGH = "boiler/pressure/high"


def _set(sim: SimSite, **values: float) -> None:
    device = sim.device("boiler")
    device.image.store({**device.served_values(), **values})


async def _until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


def _docs(sub: Subscriber, suffix: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(suffix)]


def _transitions(sub: Subscriber, alarm_id: str | None = None) -> list[dict[str, Any]]:
    return [d for d in _docs(sub, "/alarms") if alarm_id is None or d["id"] == alarm_id]


def _site(tmp_path: Path, broker: Mosquitto, prefix: str, sim: SimSite) -> Path:
    path = tmp_path / "site.yaml"
    text = site_yaml(DEVICE.format(url=sim.device("boiler").url), url=broker.url)
    path.write_text(text.replace("prefix: t}", f'prefix: "{prefix}", backoff_max_s: 0.5}}'))
    return path


@asynccontextmanager
async def _boiler() -> AsyncIterator[SimSite]:
    spec = SimDeviceSpec(name="boiler", url="tcp://127.0.0.1:0", profile=PROFILE)
    async with serve([spec]) as sim:
        sim.device("boiler").freeze()
        _set(sim, pressure=50.0, gas=1.0)
        yield sim


async def test_limit_crossing_raises_retains_and_is_acknowledged_over_mqtt(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    base = f"{unique_prefix}/plant-a/gw-01"
    async with _boiler() as sim:
        agent = Agent(load_config(_site(tmp_path, mosquitto, unique_prefix, sim)))
        sub = subscribe(mosquitto.host, mosquitto.port, f"{base}/alarms/#")
        async with running(agent):
            await _until(lambda: _docs(sub, "/alarms/active"), what="the active set")
            assert _docs(sub, "/alarms/active")[-1]["alarms"] == []

            _set(sim, pressure=85.0)
            await _until(lambda: _transitions(sub, HIGH), what="the raise")
            raised = _transitions(sub, HIGH)[0]
            assert (raised["event"], raised["state"], raised["value"]) == (
                "raise",
                "active_unack",
                85.0,
            )
            assert raised["historical"] is False and raised["gateway"] == "gw-01"

            # A client that connects now sees the alarm in the retained active set.
            late = subscribe(mosquitto.host, mosquitto.port, f"{base}/alarms/active")
            await late.wait_for(1)
            active = orjson.loads(late.messages[-1].payload)
            assert late.messages[-1].retain is True
            assert [(a["id"], a["state"]) for a in active["alarms"]] == [(HIGH, "active_unack")]
            assert active["active_by_priority"] == {"1": 0, "2": 0, "3": 1, "4": 0}

            command = {"cmd": "ack", "id": HIGH, "operator": "li.wei", "request_id": "c-1"}
            publish_once(
                mosquitto.host, mosquitto.port, f"{base}/alarms/cmd", orjson.dumps(command)
            )
            await _until(lambda: _docs(sub, "/alarms/cmd/reply"), what="the command reply")
            reply = _docs(sub, "/alarms/cmd/reply")[0]
            assert reply["ok"] is True and reply["request_id"] == "c-1"
            assert reply["alarm"]["state"] == "active_ack"

            _set(sim, pressure=50.0)
            await _until(lambda: len(_transitions(sub, HIGH)) >= 3, what="the clear")
            await _until(
                lambda: _docs(sub, "/alarms/active")[-1]["alarms"] == [],
                what="an empty active set",
            )
        got = [(d["event"], d["state"], d["transition"]) for d in _transitions(sub, HIGH)]
        assert got == [
            ("raise", "active_unack", 1),
            ("ack", "active_ack", 2),
            ("clear", "normal", 3),
        ]
        assert _transitions(sub, HIGH)[1]["operator"] == "li.wei"
        seqs = [d["seq"] for d in _transitions(sub)]
        assert seqs == sorted(seqs)


def _stage(agent: Agent) -> AlarmStage:
    return next(s for s in agent.stages if isinstance(s, AlarmStage))


async def test_alarm_raised_and_cleared_while_the_broker_is_down_arrives_in_order(
    mosquitto_fresh: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    broker = mosquitto_fresh
    base = f"{unique_prefix}/plant-a/gw-01"
    async with _boiler() as sim:
        agent = Agent(load_config(_site(tmp_path, broker, unique_prefix, sim)))
        alarm = _stage(agent).alarms[HIGH]
        sub = subscribe(
            broker.host, broker.port, f"{base}/alarms/#", client_id="op-1", clean_session=False
        )
        async with running(agent):
            await _until(lambda: _docs(sub, "/alarms/active"), what="the active set")
            broker.stop()
            await agent.sink.wait_disconnected(10)
            _set(sim, pressure=85.0)
            await _until(lambda: alarm.status.active, what="the raise at the edge")
            _set(sim, pressure=50.0)
            await _until(lambda: not alarm.status.active, what="the clear at the edge")
            assert _transitions(sub) == []
            broker.start()
            await _until(lambda: len(_transitions(sub, HIGH)) >= 2, what="the replayed alarms")
            await _until(
                lambda: (
                    [a["state"] for a in _docs(sub, "/alarms/active")[-1]["alarms"]]
                    == ["rtn_unack"]
                ),
                what="the active set after the outage",
            )
        got = _transitions(sub, HIGH)
        assert [(d["event"], d["state"], d["transition"]) for d in got] == [
            ("raise", "active_unack", 1),
            ("clear", "rtn_unack", 2),
        ]
        assert all(d["historical"] for d in got)
        assert got[0]["seq"] < got[1]["seq"] and got[0]["ts_ms"] <= got[1]["ts_ms"]


async def test_restart_with_active_alarms_raises_nothing_twice_and_keeps_acks(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    base = f"{unique_prefix}/plant-a/gw-01"
    lel_1 = "boiler/gas/lel_1"

    def command(cmd: str, alarm_id: str, request_id: str) -> None:
        doc = {"cmd": cmd, "id": alarm_id, "operator": "li.wei", "request_id": request_id}
        publish_once(mosquitto.host, mosquitto.port, f"{base}/alarms/cmd", orjson.dumps(doc))

    def reply(sub: Subscriber, request_id: str) -> dict[str, Any] | None:
        return next(
            (r for r in _docs(sub, "/alarms/cmd/reply") if r["request_id"] == request_id), None
        )

    async with _boiler() as sim:
        site = _site(tmp_path, mosquitto, unique_prefix, sim)
        sub = subscribe(mosquitto.host, mosquitto.port, f"{base}/alarms/#")
        first = Agent(load_config(site))
        async with running(first):
            await _until(lambda: _docs(sub, "/alarms/active"), what="the active set")
            _set(sim, pressure=85.0, gas=30.0)
            await _until(lambda: len(_transitions(sub)) >= 2, what="two raises")
            command("ack", HIGH, "r-1")
            await _until(lambda: reply(sub, "r-1") is not None, what="the ack reply")
        before = len(_transitions(sub))
        assert before == 3

        second = Agent(load_config(site))
        unit = second.units[0]
        active_before = len(_docs(sub, "/alarms/active"))
        async with running(second):
            await _until(lambda: unit.stats.polls >= 20, what="20 polls after the restart")
            assert len(_transitions(sub)) == before  # still active: nothing raised again
            await _until(
                lambda: len(_docs(sub, "/alarms/active")) > active_before,
                what="the active set of the restarted agent",
            )
            states = {a["id"]: a["state"] for a in _docs(sub, "/alarms/active")[-1]["alarms"]}
            assert states == {HIGH: "active_ack", lel_1: "active_unack"}
            command("ack", lel_1, "r-2")
            await _until(lambda: reply(sub, "r-2") is not None, what="the second ack")
            assert reply(sub, "r-2")["alarm"]["state"] == "active_ack"  # type: ignore[index]
            _set(sim, pressure=50.0, gas=1.0)
            await _until(lambda: len(_transitions(sub)) >= before + 3, what="both clears")
            command("reset", lel_1, "r-3")
            await _until(lambda: reply(sub, "r-3") is not None, what="the reset")
        after = [(d["id"], d["event"], d["state"]) for d in _transitions(sub)[before:]]
        assert after[0] == (lel_1, "ack", "active_ack")
        assert set(after[1:3]) == {(HIGH, "clear", "normal"), (lel_1, "clear", "latched")}
        assert after[3] == (lel_1, "reset", "normal")
        assert reply(sub, "r-3")["alarm"]["state"] == "normal"  # type: ignore[index]

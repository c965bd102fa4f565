"""A device that answers every request with an exception is in trouble (issue 18.2).

End to end: simulators -> agent (with its HTTP port) -> real Mosquitto. The device status
topic says `fault` with the reason, one log line marks each change, `/healthz` counts the
device like a dead one, and `/metrics` has `edge_agent_device_fault`. Exception 06 (busy)
is retried a bounded number of times before the points are marked bad.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.modbus.config import ModbusDevice, ModbusProfile
from drivers.modbus.driver import BUSY_RETRY_DELAYS_S, ModbusDriver
from drivers.reading import PointSpec, Poll, Quality
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.http_server import serving_http
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poller import Unit, fault_reason
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PROFILE = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))
ILLEGAL_ADDRESS = "exception 02 (illegal data address)"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(url: str, line_start: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return float(next(x for x in text.splitlines() if x.startswith(line_start)).split()[-1])


def _unit(agent: Agent, name: str) -> Unit:
    return next(u for u in agent.units if u.driver.name == name)


def _statuses(sub: Subscriber, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in sub.payloads(topic) if p]


async def test_a_device_with_every_point_bad_is_in_fault_on_its_topic_log_and_health(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    specs = [
        SimDeviceSpec(name=n, url="tcp://127.0.0.1:0", profile=PROFILE, device_id=i + 1)
        for i, n in enumerate(["m1", "m2"])
    ]
    async with serve(specs) as sim:
        site = tmp_path / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            "outbox: {path: outbox.sqlite}\n"
            "health: {device_down_s: 0.2, max_devices_down_share: 0.4}\n"
            "devices:\n"
            + "".join(
                f'  - {{name: {n}, driver: modbus, url: "{sim.device(n).url}", '
                f"device_id: {sim.device(n).device_id}, profile: chint-dtsu666, "
                "interval_s: 0.05}\n"
                for n in ("m1", "m2")
            )
        )
        topic = f"{unique_prefix}/plant-a/gw-01/m1/status"
        sub = subscribe(mosquitto.host, mosquitto.port, topic)
        agent = Agent(load_config(site))
        async with serving_http(agent, "127.0.0.1", 0) as http:
            host, port = http.server.address
            base = f"http://{host}:{port}"
            task = asyncio.create_task(agent.run())
            try:
                m1 = _unit(agent, "m1")
                await until(lambda: _statuses(sub, topic)[-1:] != [], what="m1 up")
                assert _statuses(sub, topic)[-1]["state"] == "up"
                assert (await asyncio.to_thread(_get, f"{base}/healthz"))[0] == 200

                sim.device("m1").faults.set("exception", code=2)
                await until(
                    lambda: [s.get("state") for s in _statuses(sub, topic)][-1] == "fault",
                    what="m1 in fault",
                )
                assert _statuses(sub, topic)[-1]["reason"] == ILLEGAL_ADDRESS
                assert m1.stats.up is True and m1.stats.fault == ILLEGAL_ADDRESS
                # Past device_down_s in fault: 1 of 2 devices is more than 40 %.
                loop = asyncio.get_running_loop()
                polls = m1.stats.polls
                await until(
                    lambda: loop.time() - m1.fault_since > 0.25 and m1.stats.polls > polls + 3,
                    what="m1 in fault for a while",
                )
                status, doc = await asyncio.to_thread(_get, f"{base}/healthz")
                assert (status, doc["devices_down"], doc["devices_fault"]) == (503, [], ["m1"])
                assert doc["problems"] == [
                    "1 of 2 devices down or in fault for more than 0.2 s (limit 40% of devices): m1"
                ]
                fault_metric = 'edge_agent_device_fault{device="m1"}'
                assert await asyncio.to_thread(_metric, f"{base}/metrics", fault_metric) == 1

                sim.device("m1").faults.clear()
                await until(
                    lambda: [s.get("state") for s in _statuses(sub, topic)][-1] == "up",
                    what="m1 up again",
                )
                assert m1.stats.fault is None and m1.stats.reason is None
                status, doc = await asyncio.to_thread(_get, f"{base}/healthz")
                assert (status, doc["devices_fault"]) == (200, [])
                assert await asyncio.to_thread(_metric, f"{base}/metrics", fault_metric) == 0
            finally:
                task.cancel()
                await asyncio.wait({task}, timeout=15)
    states = [(s["state"], s.get("reason")) for s in _statuses(sub, topic)]
    assert states == [("up", None), ("fault", ILLEGAL_ADDRESS), ("up", None)]
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.runtime.poller"]
    assert [x for x in lines if x.startswith("m1:")] == [
        f"m1: every point bad ({ILLEGAL_ADDRESS}); device in fault",
        lines[-1],
    ]
    assert lines[-1].startswith("m1: points good again after ")


async def test_busy_is_retried_a_bounded_number_of_times() -> None:
    profile = ModbusProfile.model_validate(
        {"name": "p", "points": [{"name": "v", "address": 0x2006, "type": "float32"}]}
    )
    spec = SimDeviceSpec(name="busy", url="tcp://127.0.0.1:0", profile=PROFILE, device_id=1)
    async with serve([spec]) as sim:
        device = sim.device("busy")
        config = ModbusDevice.model_validate(
            {"name": "busy", "driver": "modbus", "url": device.url, "profile": "p"}
        )
        driver = ModbusDriver(config, profile)
        try:
            # Busy every other request: the retry gets the answer, every point is good.
            device.faults.set("intermittent", code=6)
            before = device.counters.requests
            poll = await driver.read()
            assert (poll.issues, device.counters.requests - before) == ({}, 2)
            assert isinstance(poll.values[0], float)
            # Busy for good: the request goes out 1 + len(BUSY_RETRY_DELAYS_S) times, then bad.
            device.faults.set("exception", code=6)
            before = device.counters.requests
            poll = await driver.read()
            assert device.counters.requests - before == 1 + len(BUSY_RETRY_DELAYS_S) == 3
            assert poll.issues == {0: (Quality.BAD, "exception 06 (device busy)")}
            # Other exceptions are not retried.
            device.faults.set("exception", code=2)
            before = device.counters.requests
            poll = await driver.read()
            assert device.counters.requests - before == 1
            assert poll.issues == {0: (Quality.BAD, ILLEGAL_ADDRESS)}
        finally:
            await driver.close()


def test_fault_reason_is_the_most_frequent_reason_when_every_point_is_bad() -> None:
    points = tuple(PointSpec(n) for n in "abc")
    bad, other = (Quality.BAD, ILLEGAL_ADDRESS), (Quality.BAD, "not finite: nan")

    def poll(issues: dict[int, tuple[Quality, str]]) -> Poll:
        return Poll("d", 0, points, [None if i in issues else 1.0 for i in range(3)], issues)

    assert fault_reason(poll({})) is None
    assert fault_reason(poll({0: bad, 1: bad})) is None  # one good point: not in fault
    assert fault_reason(poll({0: other, 1: bad, 2: bad})) == ILLEGAL_ADDRESS
    assert fault_reason(poll({0: other, 1: bad, 2: (Quality.UNCERTAIN, "stale")})) is None
    assert fault_reason(Poll("d", 0, (), [], {})) is None

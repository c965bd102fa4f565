"""/metrics and /healthz of a running agent: simulators -> agent -> real Mosquitto.

The agent runs with its HTTP port on a free loopback port; the test scrapes it with
urllib (an independent HTTP client) and parses the text with prometheus-client's own
parser. Counters are checked against the agent's state and against each other (every
poll's jitter observed, every answered poll's wire bytes from the plan), and the health
check is walked through its failures: too many devices down, then the broker gone.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.modbus.codec import PointType, Table
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.driver import ModbusDriver
from drivers.reading import PointSpec, Poll
from edge_agent import __version__
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.health import check_health
from edge_agent.ops.health_config import HealthConfig
from edge_agent.ops.http_server import AgentHttp, serving_http
from edge_agent.ops.metrics import MeteredDriver, alarm_stage, reason_label, wire_estimate
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poller import Unit
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.timeout(60)

PROFILES = shipped(Kind.PROFILES)
BOILER = ModbusProfile(
    name="boiler",
    points=(ModbusPoint(name="pressure", address=0, type=PointType.FLOAT32, unit="bar"),),
)
HIGH = "boiler/pressure/high"


def _site(tmp_path: Path, broker: Mosquitto, prefix: str, sim: SimSite, dead_port: int) -> Path:
    meter = sim.device("meter-1")
    other = sim.device("meter-2")
    boiler = sim.device("boiler")
    text = f"""\
site: plant-a
gateway: gw-01
mqtt: {{url: "{broker.url}", prefix: "{prefix}", backoff_max_s: 0.5}}
outbox: {{path: var/outbox.sqlite}}
health: {{uplink_down_s: 0.5, device_down_s: 0.3, max_devices_down_share: 0.5}}
devices:
  - {{name: meter-1, driver: modbus, url: "{meter.url}", device_id: {meter.device_id},
     profile: chint-dtsu666, interval_s: 0.05}}
  - {{name: meter-2, driver: modbus, url: "{other.url}", device_id: {other.device_id},
     profile: chint-dtsu666, interval_s: 0.05, timeout_s: 0.2, backoff_max_s: 0.2}}
  - {{name: dead, driver: modbus, url: "tcp://127.0.0.1:{dead_port}",
     profile: chint-dtsu666, interval_s: 0.05, backoff_max_s: 0.2}}
  - name: boiler
    driver: modbus
    url: "{boiler.url}"
    device_id: {boiler.device_id}
    interval_s: 0.05
    timeout_s: 0.2
    backoff_max_s: 0.2
    points:
      - {{name: pressure, address: 0, type: float32, unit: bar,
         alarms: [{{kind: high, limit: 80}}]}}
"""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


@asynccontextmanager
async def _simulators() -> AsyncIterator[SimSite]:
    chint = load_profile(PROFILES / "chint-dtsu666.yaml")
    specs = [
        SimDeviceSpec(name="meter-1", url="tcp://127.0.0.1:0", profile=chint, device_id=1),
        SimDeviceSpec(name="meter-2", url="tcp://127.0.0.1:0", profile=chint, device_id=2),
        SimDeviceSpec(name="boiler", url="tcp://127.0.0.1:0", profile=BOILER, device_id=3),
    ]
    async with serve(specs) as sim:
        boiler = sim.device("boiler")
        boiler.freeze()
        boiler.image.store({"pressure": 50.0})
        yield sim


@asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[AgentHttp]:
    async with serving_http(agent, "127.0.0.1", 0) as http:
        task = asyncio.create_task(agent.run(), name="agent")
        try:
            yield http
        finally:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=15)
            assert done == {task}, "the agent did not stop within 15 s"


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@dataclass
class Scrape:
    """One /metrics answer, as {(name, labels): value}."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        want = set(labels.items())
        return {k: v for (n, k), v in self.samples.items() if n == name and want <= set(k)}


async def _scrape(base: str) -> Scrape:
    status, content_type, text = await asyncio.to_thread(_get, f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            scrape.samples[(s.name, frozenset(s.labels.items()))] = s.value
    return scrape


async def _health(base: str) -> tuple[int, dict[str, Any]]:
    status, content_type, text = await asyncio.to_thread(_get, f"{base}/healthz")
    assert content_type == "application/json"
    return status, json.loads(text)


async def _until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def _until_health(base: str, status: int, *, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        got, doc = await _health(base)
        if got == status:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last /healthz: {got} {doc}")
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


def _unit(agent: Agent, name: str) -> Unit:
    return next(u for u in agent.units if u.driver.name == name)


async def test_metrics_count_what_the_agent_did_and_healthz_follows_outages(
    mosquitto_fresh: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    async with _simulators() as sim:
        site = _site(tmp_path, mosquitto_fresh, unique_prefix, sim, dead_port=free_port())
        # A short grace: the broker is stopped at the end, nothing will acknowledge.
        agent = Agent(load_config(site), grace_s=0.2)
        async with _running(agent) as http:
            host, port = http.server.address
            assert host == "127.0.0.1"
            base = f"http://{host}:{port}"
            meter, dead = _unit(agent, "meter-1"), _unit(agent, "dead")
            await _until(
                lambda: meter.stats.good_polls >= 5 and dead.stats.up is False
                and agent.sink.connected and agent.outbox.stats.deleted > 0,
                what="polls, a dead device and acknowledged messages",
            )  # fmt: skip

            m = await _scrape(base)
            # Every poll's start jitter is observed, every poll's latency once it returned.
            polls = m.value("edge_agent_polls_total", device="meter-1")
            assert polls >= 5
            assert m.value("edge_agent_poll_jitter_seconds_count", device="meter-1") == polls
            assert polls - m.value("edge_agent_poll_latency_seconds_count", device="meter-1") in (
                0,
                1,
            )
            answered = m.value("edge_agent_polls_answered_total", device="meter-1")
            assert m.value("edge_agent_polls_failed_total", device="meter-1") == 0
            assert m.value("edge_agent_device_up", device="meter-1") == 1
            # Wire bytes: every answered poll costs exactly the plan's request and answer sizes.
            metered = meter.driver
            assert isinstance(metered, MeteredDriver)
            wire = wire_estimate(metered.inner)
            assert wire is not None
            assert m.value("edge_agent_wire_bytes_total", device="meter-1", direction="tx") == (
                answered * wire.request_bytes
            )
            assert m.value("edge_agent_wire_bytes_total", device="meter-1", direction="rx") == (
                answered * wire.response_bytes
            )
            # Uplink (issue 11): without report options every reading polled goes up.
            points = len(meter.driver.points)
            assert m.value("edge_agent_uplink_readings_polled_total", device="meter-1") == (
                answered * points
            )
            assert m.value("edge_agent_uplink_readings_published_total", device="meter-1") == (
                answered * points
            )
            assert m.value("edge_agent_uplink_messages_total", device="meter-1") == answered
            assert m.value("edge_agent_uplink_bytes_total", device="meter-1") > 100 * answered
            # The dead device: every failed poll counted under its reason, nothing answered.
            failed = m.value("edge_agent_polls_failed_total", device="dead")
            errors = m.matching("edge_agent_poll_errors_total", device="dead")
            assert failed >= 1 and sum(errors.values()) == failed
            assert [dict(k)["reason"] for k in errors] == ["connection refused"]
            assert m.value("edge_agent_device_up", device="dead") == 0
            assert m.value("edge_agent_device_down_seconds", device="dead") > 0
            assert m.value("edge_agent_polls_answered_total", device="dead") == 0
            # Outbox, uplink, alarms, identity.
            assert m.value("edge_agent_outbox_appended_total") >= answered
            assert m.value("edge_agent_outbox_acked_total") > 0
            assert m.value("edge_agent_mqtt_connected") == 1
            assert m.value("edge_agent_mqtt_down_seconds") == 0
            assert m.value("edge_agent_mqtt_acked_total") > 0
            assert m.value("edge_agent_alarms_active", priority="3") == 0
            assert m.value("edge_agent_alarms_raised_total") == 0
            info = {"version": __version__, "site": "plant-a", "gateway": "gw-01"}
            assert m.value("edge_agent_info", **info) == 1

            loop = asyncio.get_running_loop()
            await _until(
                lambda: loop.time() - dead.down_since > 0.35, what="dead down for over 0.3 s"
            )
            status, doc = await _health(base)
            assert (status, doc["ok"], doc["devices_down"]) == (200, True, ["dead"])

            # An exception answer: the points are bad, counted by reason; the poll answered.
            other = sim.device("meter-2")
            other.faults.set("exception", code=2)
            reason = "exception 02 (illegal data address)"
            await _until(
                lambda: (
                    (p := _unit(agent, "meter-2").stats.last_poll) is not None and bool(p.issues)
                ),
                what="a poll with bad points",
            )
            m = await _scrape(base)
            bad = m.value("edge_agent_point_issues_total", device="meter-2", quality="bad",
                          reason=reason)  # fmt: skip
            assert bad > 0 and bad % len(metered.points) == 0  # every point, in every poll

            # A malformed answer: its points bad with what was wrong, the answer counted.
            other.faults.set("corrupt")
            await _until(lambda: _malformed(agent, "meter-2"), what="malformed answers")
            m = await _scrape(base)
            assert m.value("edge_agent_bad_answers_total", device="meter-2") > 0
            assert m.value("edge_agent_bad_answers_total", device="meter-1") == 0
            assert m.value("edge_agent_point_issues_total", device="meter-2", quality="bad",
                           reason="malformed answer") > 0  # fmt: skip
            assert m.value("edge_agent_device_up", device="meter-2") == 1

            # A raised alarm shows in the alarm counts.
            sim.device("boiler").image.store({"pressure": 85.0})
            await _until(lambda: agent.outbox.stats.appended > 0 and _raised(agent), what="raise")
            m = await _scrape(base)
            assert m.value("edge_agent_alarms_active", priority="3") == 1
            assert m.value("edge_agent_alarms_raised_total") == 1
            assert m.value("edge_agent_alarms_unacked") == 1

            # Two of four devices down longer than 0.3 s is half: still healthy.
            other.faults.set("no_answer")
            m2 = _unit(agent, "meter-2")
            await _until(
                lambda: m2.stats.up is False and loop.time() - m2.down_since > 0.35,
                what="meter-2 down for longer than device_down_s",
            )
            status, doc = await _health(base)
            assert (status, doc["devices_down"]) == (200, ["meter-2", "dead"])
            # Three of four is more than half.
            sim.device("boiler").faults.set("no_answer")
            doc = await _until_health(base, 503, what="3 of 4 devices down")
            assert doc["ok"] is False
            assert doc["devices_down"] == ["meter-2", "dead", "boiler"]
            assert doc["problems"] == [
                "3 of 4 devices down for more than 0.3 s (limit 50% of devices): "
                "meter-2, dead, boiler"
            ]
            other.faults.clear()
            sim.device("boiler").faults.clear()
            boiler = _unit(agent, "boiler")
            await _until(lambda: m2.stats.up and boiler.stats.up, what="answering again")
            status, doc = await _health(base)
            assert (status, doc["devices_down"]) == (200, ["dead"])

            # The broker goes away: unhealthy once the uplink has been down for 0.5 s.
            mosquitto_fresh.stop()
            doc = await _until_health(base, 503, what="the uplink down too long")
            assert len(doc["problems"]) == 1
            assert doc["problems"][0].startswith("MQTT uplink down for ")
            assert doc["uplink_down_s"] > 0.5
            m = await _scrape(base)
            assert m.value("edge_agent_mqtt_connected") == 0
            assert m.value("edge_agent_mqtt_down_seconds") > 0.5
            assert m.value("edge_agent_outbox_messages") > 0
            assert m.value("edge_agent_outbox_oldest_age_seconds") > 0

            # Other paths and methods.
            assert (await asyncio.to_thread(_get, f"{base}/nope"))[0] == 404
            page = await asyncio.to_thread(_get, f"{base}/")
            assert page[0] == 200 and page[1] == "text/html; charset=utf-8"
            assert "<title>edge-agent status</title>" in page[2]
            request = urllib.request.Request(f"{base}/healthz", method="POST")
            assert (await asyncio.to_thread(_post, request)) == 405


def _post(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _malformed(agent: Agent, device: str) -> bool:
    poll = _unit(agent, device).stats.last_poll
    return poll is not None and any(
        reason.startswith("malformed answer: byte count") for _, reason in poll.issues.values()
    )


def _raised(agent: Agent) -> bool:
    stage = alarm_stage(agent)
    return stage is not None and stage.counters.raised == 1


async def test_http_port_binds_to_loopback_and_refuses_a_busy_port(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        f'site: s\ngateway: g\nmqtt: {{url: "{mosquitto.url}"}}\n'
        "devices:\n  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:1', profile: test-plc}\n"
    )
    agent = Agent(load_config(site))
    async with serving_http(agent, "127.0.0.1", 0) as http:
        host, port = http.server.address
        assert host == "127.0.0.1"
        other = AgentHttp(Agent(load_config(site)))
        with pytest.raises(OSError):
            await other.start("127.0.0.1", port)
        await other.close()


def test_wire_estimate_follows_the_framing() -> None:
    profile = ModbusProfile(
        name="p",
        points=(
            ModbusPoint(name="a", address=0, type=PointType.FLOAT32),
            ModbusPoint(name="b", address=100, type=PointType.UINT16),
            ModbusPoint(name="c", table=Table.COIL, address=0),
            ModbusPoint(name="d", table=Table.COIL, address=9),
        ),
        max_gap=1,
    )
    tcp = ModbusDriver(
        ModbusDevice(name="t", driver="modbus", url="tcp://h:502", profile="p"), profile
    )
    rtu = ModbusDriver(
        ModbusDevice(name="r", driver="modbus", url="rtu:///dev/x", profile="p"), profile
    )
    # Requests: HR 0-1 (2 regs), HR 100 (1 reg), coils 0-9 (10 bits = 2 bytes).
    assert sorted((r.table, r.count) for r in tcp.plan.requests) == [
        (Table.COIL, 10),
        (Table.HOLDING, 1),
        (Table.HOLDING, 2),
    ]
    t = wire_estimate(tcp)
    assert t is not None
    assert (t.request_bytes, t.response_bytes, t.first_request_bytes) == (
        3 * 12,
        (9 + 4) + (9 + 2) + (9 + 2),
        12,
    )
    r = wire_estimate(rtu)
    assert r is not None
    assert (r.request_bytes, r.response_bytes) == (3 * 8, (5 + 4) + (5 + 2) + (5 + 2))
    assert wire_estimate(_Driver("stand-in")) is None  # no protocol plugin, no estimate


def test_reason_labels_are_bounded() -> None:
    assert reason_label("cannot open line: [Errno 2] No such file") == "cannot open line"
    assert (
        reason_label("exception 02 (illegal data address)") == "exception 02 (illegal data address)"
    )
    assert reason_label("x" * 100) == "x" * 48
    assert reason_label(": odd") == "unknown"


class _Driver:
    protocol = "scripted"

    def __init__(self, name: str) -> None:
        self.name = name
        self.points: tuple[PointSpec, ...] = ()

    async def read(self) -> Poll:
        raise AssertionError("not polled")

    async def close(self) -> None:
        return None


def _units(states: list[tuple[bool | None, float]]) -> list[Unit]:
    units = []
    for i, (up, since) in enumerate(states):
        u = Unit(_Driver(f"d{i}"), 1.0)
        u.stats.up = up
        u.down_since = since
        units.append(u)
    return units


def test_health_thresholds() -> None:
    cfg = HealthConfig(uplink_down_s=10, device_down_s=5, max_devices_down_share=0.25)
    # now = 100: d0 down 10 s (counts), d1 down 2 s (not yet), d2 up, d3 never polled.
    units = _units([(False, 90.0), (False, 98.0), (True, 0.0), (None, 0.0)])
    report = check_health(cfg, uplink_down_s=None, units=units, now=100.0)
    assert (report.ok, report.devices_down, report.problems) == (True, ["d0"], [])
    later = check_health(cfg, uplink_down_s=9.9, units=units, now=103.5)
    assert later.ok is False and later.devices_down == ["d0", "d1"]
    assert later.problems == [
        "2 of 4 devices down for more than 5 s (limit 25% of devices): d0, d1"
    ]
    uplink = check_health(cfg, uplink_down_s=10.5, units=[], now=0.0)
    assert uplink.problems == ["MQTT uplink down for 10 s (limit 10 s)"]
    strict = HealthConfig(max_devices_down_share=0.0, device_down_s=1)
    assert check_health(strict, uplink_down_s=None, units=units, now=100.0).ok is False
    assert check_health(strict, uplink_down_s=None, units=units[2:], now=100.0).ok is True

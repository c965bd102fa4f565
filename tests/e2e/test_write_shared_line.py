"""A write on a shared RS-485 line costs the other units at most one transaction.

Three simulated PLCs answer on one real pty line (socat); the whole agent polls them and
takes write requests over a real Mosquitto. The simulator records the order of the
requests the line carried (`SimDevice.journal`), so the test counts transactions, not
time: a poll reads each PLC's block (address 100, 3 registers), a write is FC16 on the
set-point, a dedicated read-back would read the set-point alone (address 100, 2).
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
from edge_agent.config.site import load_config
from edge_agent.ops.metrics import AgentMetrics
from edge_agent.runtime.agent import Agent
from simulators.modbus.device import LineRequest
from simulators.modbus.site import SimDeviceSpec, SimSite, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.ingest_support import publish
from tests.running_agent import running

pytestmark = pytest.mark.timeout(60)

PROFILE = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="level", address=102),
    ),
)
NAMES = ("plc-1", "plc-2", "plc-3")
POLL = (3, 100, 3)  # fc, address, count of every regular poll
WRITE = (16, 100, 2)
READ_BACK = (3, 100, 2)


def _site(broker: Mosquitto, prefix: str, url: str, interval_s: float, gap_s: float) -> str:
    devices = "".join(
        f"""  - name: {name}
    driver: modbus
    url: "{url}"
    device_id: {n}
    interval_s: {interval_s}
    frame_gap_s: {gap_s}
    timeout_s: 1.0
    points:
      - {{name: flow_setpoint, address: 100, type: float32, write: {{min: 0, max: 50}}}}
      - {{name: level, address: 102}}
"""
        for n, name in enumerate(NAMES, start=1)
    )
    return f"""\
site: plant-a
gateway: gw-01
mqtt: {{url: "{broker.url}", prefix: "{prefix}", backoff_max_s: 0.5}}
outbox: {{path: var/outbox.sqlite}}
writes: {{enabled: true}}
devices:
{devices}"""


async def _until(predicate: Callable[[], bool], *, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.005)  # polling a condition, bounded by the deadline


class Line:
    """The simulated PLCs, the agent and the recorder of what the line carried."""

    def __init__(
        self, sim: SimSite, agent: Agent, broker: Mosquitto, sub: Subscriber, base: str
    ) -> None:
        self.base = base
        self.sim = sim
        self.agent = agent
        self.broker = broker
        self.sub = sub
        self.journal: list[LineRequest] = []
        for name in NAMES:
            sim.device(name).journal = self.journal

    def units(self) -> dict[str, Any]:
        return {u.driver.name: u for u in self.agent.units}

    async def reply_to(self, device: str, request: dict[str, Any]) -> dict[str, Any]:
        topic = f"{self.base}/{device}/cmd"
        publish_once(self.broker.host, self.broker.port, topic, orjson.dumps(request))

        await _until(
            lambda: any(r["id"] == request["id"] for r in self.replies()), what="the reply"
        )
        return next(r for r in self.replies() if r["id"] == request["id"])

    def replies(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.payload) for m in self.sub.messages if m.topic.endswith("/reply")]

    def entries(self) -> list[tuple[str, tuple[int, int, int]]]:
        return [(r.device, (r.fc, r.address, r.count)) for r in self.journal]


@asynccontextmanager
async def _line(
    broker: Mosquitto,
    subscribe: Callable[..., Subscriber],
    prefix: str,
    tmp_path: Path,
    serial_pair: tuple[str, str],
    *,
    interval_s: float,
    gap_s: float,
) -> AsyncIterator[Line]:
    server_end, agent_end = serial_pair
    specs = [
        SimDeviceSpec(
            name=name, url=f"rtu://{server_end}?baudrate=19200", profile=PROFILE, device_id=n
        )
        for n, name in enumerate(NAMES, start=1)
    ]
    async with serve(specs) as sim:
        for name in NAMES:
            sim.device(name).freeze()
            sim.device(name).image.store({"flow_setpoint": 12.5, "level": 7})
        path = tmp_path / "site.yaml"
        path.write_text(
            _site(broker, prefix, f"rtu://{agent_end}?baudrate=19200", interval_s, gap_s)
        )
        agent = Agent(load_config(path))
        assert len(agent.lines) == 1 and len(agent.lines[0].units) == 3
        sub = subscribe(broker.host, broker.port, f"{prefix}/plant-a/gw-01/+/cmd/reply")
        async with running(agent):
            await _until(
                lambda: all(u.stats.good_polls > 1 for u in agent.units), what="first polls"
            )
            await _until(lambda: agent.sink.connected, what="the agent's connection")
            fenced = asyncio.Event()
            assert agent.sink.fence(fenced.set)
            await asyncio.wait_for(fenced.wait(), 5)
            yield Line(sim, agent, broker, sub, f"{prefix}/plant-a/gw-01")


async def test_on_a_busy_line_the_read_back_is_the_next_poll_and_the_write_one_slot(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    serial_pair: tuple[str, str],
) -> None:
    # Polls due every 20 ms, each followed by a 10 ms gap: the line never idles.
    async with _line(
        mosquitto, subscribe, unique_prefix, tmp_path, serial_pair, interval_s=0.02, gap_s=0.01
    ) as line:
        reply = await line.reply_to("plc-2", {"id": "w-1", "point": "flow_setpoint", "value": 42.5})
        assert reply == {"id": "w-1", "result": "done", "value": 42.5}
        assert line.sim.device("plc-2").served_values()["flow_setpoint"] == 42.5
        reply = await line.reply_to("plc-3", {"id": "w-2", "point": "flow_setpoint", "value": 7.0})
        assert reply == {"id": "w-2", "result": "done", "value": 7.0}
        entries = line.entries()
        assert line.agent.commands.counters.read_backs == {"poll": 2}
        # Two writes to one point in a row: each reply carries what its own write left.
        await publish(
            line.broker.url,
            [
                (
                    f"{line.base}/plc-1/cmd",
                    orjson.dumps({"id": f"d-{v}", "point": "flow_setpoint", "value": v}),
                )
                for v in (20.0, 30.0)
            ],
        )
        await _until(
            lambda: {"d-20.0", "d-30.0"} <= {r["id"] for r in line.replies()}, what="2 replies"
        )
        assert [r for r in line.replies() if r["id"].startswith("d-")] == [
            {"id": "d-20.0", "result": "done", "value": 20.0},
            {"id": "d-30.0", "result": "done", "value": 30.0},
        ]
        doubled = line.entries()[len(entries) :]
    writes = [(i, e) for i, e in enumerate(entries) if e[1] != POLL]
    # Two requests, two transactions on the line: the writes; no read-back of their own.
    assert [e for _, e in writes] == [("plc-2", WRITE), ("plc-3", WRITE)]
    assert ("plc-2", READ_BACK) not in entries and ("plc-3", READ_BACK) not in entries
    for i, (device, _) in writes:
        # The written device's next transaction is its regular poll: the read-back.
        after = next(e for e in entries[i + 1 :] if e[0] == device)
        assert after == (device, POLL)
        assert entries[i - 1][1] == POLL and entries[i + 1][1] == POLL
    first, second = [i for i, e in enumerate(doubled) if e == ("plc-1", WRITE)]
    # Between them plc-1 was read: by its poll, or (the second came first) at once.
    between = [e for e in doubled[first + 1 : second] if e[0] == "plc-1"]
    assert between in ([("plc-1", POLL)], [("plc-1", READ_BACK)]), between


async def test_on_an_idle_line_the_read_back_follows_the_write_at_once(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    serial_pair: tuple[str, str],
) -> None:
    # Polls 1 s apart, spread over the second: after plc-3's poll the line idles ~330 ms.
    async with _line(
        mosquitto, subscribe, unique_prefix, tmp_path, serial_pair, interval_s=1.0, gap_s=0.0
    ) as line:
        stats = line.units()["plc-3"].stats
        seen = stats.polls
        await _until(lambda: stats.polls > seen, what="plc-3's poll")
        reply = await line.reply_to("plc-2", {"id": "w-1", "point": "flow_setpoint", "value": 42.5})
        assert reply == {"id": "w-1", "result": "done", "value": 42.5}
        entries = line.entries()
        metrics = AgentMetrics(line.agent, uplink_down_for=lambda: None).registry
        for source, n in (("at_once", 1.0), ("poll", 0.0)):
            sample = metrics.get_sample_value(
                "edge_agent_write_read_backs_total", {"source": source}
            )
            assert sample == n
    i = entries.index(("plc-2", WRITE))
    assert entries[i + 1] == ("plc-2", READ_BACK)
    assert [e for e in entries if e[1] != POLL] == [("plc-2", WRITE), ("plc-2", READ_BACK)]

"""A stage that raises costs only that stage: readings and the other stages go on.

A deliberately broken stage (its `observe` raises on every poll, its timers raise at start)
is added to a real agent polling a simulated meter through a real Mosquitto. Every poll is
still published in order, the other stages still see every poll, the failures are counted
(edge_agent_stage_failures_total) and logged once per stage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from drivers.reading import Poll
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.metrics import AgentCollector
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running
from tests.waiting import until

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]


class BrokenStage:
    name = "broken"

    def __init__(self) -> None:
        self.runs = 0

    def observe(self, poll: Poll) -> None:
        raise ZeroDivisionError("a bug in a stage")

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("timers broken at start")
        await asyncio.Event().wait()


class CountingStage:
    name = "counting"

    def __init__(self) -> None:
        self.seen = 0

    def observe(self, poll: Poll) -> None:
        self.seen += 1

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_a_raising_stage_costs_only_itself(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    profile = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))
    spec = SimDeviceSpec(name="m", url="tcp://127.0.0.1:0", device_id=1, profile=profile, seed=1)
    async with serve([spec]) as sim:
        (tmp_path / "site.yaml").write_text(
            "site: s\ngateway: g\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            "outbox: {path: outbox.sqlite}\n"
            "devices:\n"
            f'  - {{name: m, driver: modbus, url: "{sim.device("m").url}", '
            "profile: chint-dtsu666, interval_s: 0.1}\n"
        )
        agent = Agent(load_config(tmp_path / "site.yaml"))
        broken, counting = BrokenStage(), CountingStage()
        agent.stages[:0] = [broken]  # first: a stage before the others must not starve them
        agent.stages.append(counting)
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/s/g/m/data")
        with caplog.at_level(logging.ERROR, logger="edge_agent.runtime.agent"):
            async with running(agent):
                await until(lambda: len(sub.messages) >= 10, what="10 data messages")
                await until(lambda: broken.runs >= 2, what="the stage's timers restarted")
                polls = agent.units[0].stats.good_polls
        seqs = [orjson.loads(m.payload)["seq"] for m in sub.messages]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, in order
        assert counting.seen >= polls >= 10
        failures = agent.stage_failures["broken"]
        assert failures >= polls + 1  # every observe, and the first run
        metric = next(
            m
            for m in AgentCollector(
                agent, uplink_down_for=lambda: None, clock=lambda: 0.0
            ).collect()
            if m.name == "edge_agent_stage_failures"
        )
        counts = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_total")}
        assert counts["broken"] == failures and counts["counting"] == 0
        logged = [r for r in caplog.records if "stage broken failed" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None

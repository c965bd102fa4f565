"""Self-healing of the OPC UA driver under the real poller: restarts, cuts, expiry, silence.

Each test runs the driver in `run_line` (the agent's scheduler, with its capped jittered
backoff), breaks something on the simulated PLC or on a TCP proxy in between, and checks
the device went down once with a reason, came back by itself, and that fresh values
(a counter that moves) flow again through a new session and subscription.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver
from drivers.reading import Poll, Quality
from edge_agent.runtime.poller import Unit, run_line
from tests.fixtures.opcua import PlcThread, TcpProxy

pytestmark = pytest.mark.timeout(40)

NS = "urn:plant:plc"
COUNTER = f"nsu={NS};i=1001"


@dataclass
class Run:
    """What the poller emitted: polls and (up, reason) state changes."""

    driver: OpcUaDriver
    unit: Unit
    polls: list[Poll] = field(default_factory=list)
    states: list[tuple[bool, str | None]] = field(default_factory=list)

    def good_after(self, index: int) -> list[Poll]:
        return [p for p in self.polls[index:] if not p.issues]


def make_device(url: str, **kw: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "name": "plc-1",
            "driver": "opcua",
            "url": url,
            "interval_s": 0.1,
            "timeout_s": 0.5,
            "backoff_max_s": 0.4,
            "publishing_interval_s": 0.05,
            "keepalive_count": 2,
            "watchdog_intervals": 6,
            "points": [
                {"name": "counter_sub", "node": COUNTER, "mode": "subscribe"},
                {"name": "counter_poll", "node": COUNTER},
                {"name": "temp", "node": f"nsu={NS};s=Tank1.Temperature", "mode": "subscribe"},
            ],
            **kw,
        }
    )


@asynccontextmanager
async def polling(device: OpcUaDevice) -> AsyncIterator[Run]:
    driver = OpcUaDriver(device)
    unit = Unit(driver, device.interval_s, backoff_max_s=device.backoff_max_s)
    run = Run(driver, unit)
    task = asyncio.create_task(
        run_line(
            [unit],
            emit=run.polls.append,
            on_state=lambda _name, up, reason: run.states.append((up, reason)),
        )
    )
    try:
        yield run
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done == {task}, "the poller did not stop"


async def until(predicate: Callable[[], Any], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


def flowing(run: Run, since: int, n: int = 3) -> bool:
    """n good polls after `since`, the subscribed counter moving among them."""
    good = run.good_after(since)
    return len(good) >= n and good[-1].values[0] > good[0].values[0]


async def test_server_restart_and_outage_recover(opcua_plc: PlcThread) -> None:
    plc = opcua_plc.plc
    async with polling(make_device(opcua_plc.url)) as run:
        await until(lambda: flowing(run, 0), what="values before the restart")
        assert run.states == [(True, None)]

        await opcua_plc.call(plc.restart)  # sessions and subscriptions are forgotten
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 3, what="down and up again")
        assert run.states[1:3] == [(False, "connection lost"), (True, None)]
        await until(lambda: flowing(run, mark), what="values after the restart")
        assert run.driver.stats.sessions == 2 and run.driver.stats.subscriptions == 2

        await opcua_plc.call(plc.stop)  # the PLC stays off for a while
        await until(lambda: len(run.states) >= 4, what="down")
        failed = [p for p in run.polls if p.issues]
        assert run.states[3] == (False, "connection lost")
        # Down is published once as an all-bad poll; retries stay quiet, backing off.
        retries = run.unit.stats.failures
        await until(lambda: run.unit.stats.failures >= retries + 2, what="retries")
        assert [p for p in run.polls if p.issues] == failed
        assert run.unit.stats.skipped_backoff > 0
        # The retries are refused, not lost: said once, as the status's new reason.
        assert run.states[4:] == [(False, "connection refused")]
        await opcua_plc.call(plc.start)
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 6, what="up after the outage")
        assert run.states[5] == (True, None)
        await until(lambda: flowing(run, mark), what="values after the outage")
    bad = failed[-1]
    assert set(bad.issues.values()) == {(Quality.BAD, "connection lost")}
    assert bad.values == [None, None, None]


async def test_connection_cut_and_blackhole_recover(
    opcua_plc: PlcThread, tcp_proxy: Callable[..., Any]
) -> None:
    plc = opcua_plc.plc
    proxy: TcpProxy = await tcp_proxy(plc.host, plc.port)
    async with polling(make_device(proxy.url())) as run:
        await until(lambda: flowing(run, 0), what="values through the proxy")
        proxy.sever()  # the link drops: the client sees its socket closed
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 3, what="down and up after the cut")
        assert run.states[1:3] == [(False, "connection lost"), (True, None)]
        await until(lambda: flowing(run, mark), what="values after the cut")

        proxy.blackhole()  # a pulled cable: nothing closes, nothing answers
        await until(lambda: len(run.states) >= 4, what="down on silence")
        up, reason = run.states[3]
        assert not up and reason in ("timeout", "connection lost")
        proxy.restore()
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 5, what="up after the blackhole")
        await until(lambda: flowing(run, mark), what="values after the blackhole")
    assert proxy.connections >= 3
    assert run.driver.stats.sessions >= 3


async def test_expired_session_is_recreated(opcua_plc: PlcThread) -> None:
    async with polling(make_device(opcua_plc.url)) as run:
        await until(lambda: flowing(run, 0), what="values")
        await opcua_plc.call(opcua_plc.plc.expire_sessions)
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 3, what="down and up")
        up, reason = run.states[1]
        assert not up and reason is not None and reason.startswith("session lost (Bad")
        assert run.states[2] == (True, None)
        await until(lambda: flowing(run, mark), what="values in the new session")


async def test_silent_subscription_is_rebuilt_by_the_watchdog(opcua_plc: PlcThread) -> None:
    async with polling(make_device(opcua_plc.url)) as run:
        await until(lambda: flowing(run, 0), what="values")
        await opcua_plc.call(opcua_plc.plc.drop_subscriptions)  # the session stays
        mark = len(run.polls)
        await until(lambda: run.driver.stats.watchdog_rebuilds >= 1, what="a rebuild")
        await until(lambda: flowing(run, mark), what="values after the rebuild")
        assert run.states == [(True, None)]  # healed without the device going down
        assert run.driver.stats.sessions == 1 and run.driver.stats.subscriptions == 2


async def test_node_deleted_while_down_is_bad_after_reconnect(opcua_plc: PlcThread) -> None:
    plc = opcua_plc.plc
    async with polling(make_device(opcua_plc.url)) as run:
        await until(lambda: flowing(run, 0), what="values")
        await opcua_plc.call(plc.stop)
        await until(lambda: len(run.states) >= 2, what="down")
        await opcua_plc.call(plc.delete_node, "s=Tank1.Temperature")
        await opcua_plc.call(plc.start)
        mark = len(run.polls)
        await until(lambda: len(run.states) >= 3, what="up")

        def moving() -> bool:
            polls = [p for p in run.polls[mark:] if p.values[0] is not None]
            return len(polls) >= 3 and polls[-1].values[0] > polls[0].values[0]

        await until(moving, what="the counter moving with the temperature gone")
        last = run.polls[-1]
        assert last.issues == {2: (Quality.BAD, "BadNodeIdUnknown")}
        assert last.values[2] is None

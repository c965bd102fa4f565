"""The alarm stage's timer follows work: it wakes for deadlines, not every `tick_s`.

The stage runs as the agent runs it (`run()`, on a virtual clock): the tests count its
timer wake-ups (`ticks`) and check that every timed condition is still decided within
one `tick_s` of its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.alarms.stage import AlarmStage
from tests.alarm_support import EPOCH_NS, StageBench, settle
from tests.alarms.test_alarm_stage import BASE, BOILER, HIGH, PLANT

pytestmark = pytest.mark.looptime

EPOCH_MS = EPOCH_NS // 1_000_000
STALE = "plant/level/stale"
COMM = "plant/comm_loss"


@contextlib.asynccontextmanager
async def running(bench: StageBench) -> AsyncIterator[AlarmStage]:
    """The stage's own run() as the agent starts it, with a wall clock that follows the
    loop's (shelving ends on the wall clock)."""
    bench.agent.outbox.open()
    bench.agent.forwarder.start()
    stage = bench.stage
    loop = asyncio.get_running_loop()
    stage.wall_ms = lambda: EPOCH_MS + round(loop.time() * 1000)
    task = asyncio.create_task(stage.run())
    await asyncio.sleep(0)  # one turn of the loop, not a wait: run() restores before it awaits
    assert stage._loop is not None
    try:
        yield stage
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        bench.agent.forwarder.close()


def ts_of(bench: StageBench, alarm_id: str, event: str) -> float:
    """Loop time (s) of an alarm's transition, from its message's timestamp."""
    [ts_ms] = [m["ts_ms"] for m in bench.messages() if m["id"] == alarm_id and m["event"] == event]
    return (ts_ms - EPOCH_MS) / 1000


async def test_no_timer_wake_up_while_nothing_is_timed(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)  # limit alarms only: decided by polls
    async with running(bench) as stage:
        for _ in range(100):
            bench.poll("boiler", {"pressure": 50.0})
            await settle(1)
        await settle(3600)
        assert stage.ticks == 0
        bench.poll("boiler", {"pressure": 85.0})  # t=3700: a raise enters the flood window
        assert stage.counters.in_window == 1
        await settle(599.9)
        assert stage.ticks == 0
        await settle(0.1)  # the raise leaves the 600 s window: one look, then none
        assert (stage.ticks, stage.counters.in_window) == (1, 0)
        await settle(3600)
        assert stage.ticks == 1
        assert bench.events(HIGH) == [("raise", "active_unack")]


async def test_stale_data_raises_within_one_tick_of_its_deadline(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    async with running(bench) as stage:
        await settle(0.1)
        for _ in range(60):  # t = 0.1 .. 59.1, good readings: every deadline moves on
            bench.poll("plant", BASE)
            await settle(1)
        # A look at t=3 (the deadline restore set), then one per 3 s stale window as the
        # readings keep moving it (5.25, 8.25 .. 59.25): 20, where a fixed 0.25 s tick made 240.
        assert stage.ticks == 20
        assert bench.events(STALE) == []
        before = stage.ticks
        # The device goes silent after its reading at t=59.1: stale from t=62.1.
        await settle(3.0 + 0.25)
        assert bench.events(STALE) == [("raise", "active_unack")]
        raised = ts_of(bench, STALE, "raise")
        assert 62.1 <= raised <= 62.1 + stage.config.tick_s, raised
        assert stage.ticks - before == 1
        # Raised, no poll: nothing more to look at (the flood window ends in 600 s).
        before = stage.ticks
        await settle(500)
        assert stage.ticks == before
        bench.poll("plant", BASE)  # cleared: the deadline is back
        assert bench.events(STALE)[-1] == ("clear", "rtn_unack")
        await settle(3.25)
        assert bench.events(STALE)[-1] == ("raise", "active_unack")
        assert len(bench.events(STALE)) == 3


async def test_comm_loss_on_delay_confirmed_by_the_timer(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    async with running(bench) as stage:
        await settle(0.1)
        bench.poll("plant", BASE)
        await settle(1.3)
        bench.all_bad("plant", "timeout")  # t=1.4: on_delay_s 2, due at 3.4
        await settle(1.99)
        assert bench.events(COMM) == []
        await settle(0.26)
        assert bench.events(COMM) == [("raise", "active_unack")]
        raised = ts_of(bench, COMM, "raise")
        assert 3.4 <= raised <= 3.4 + stage.config.tick_s, raised


async def test_shelving_expires_on_time_with_the_timer(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    async with running(bench) as stage:
        await settle(10)
        bench.poll("boiler", {"pressure": 85.0})
        reply = bench.command(cmd="shelve", id=HIGH, duration_s=90, comment="sensor swap")
        assert reply["alarm"]["shelved_until_ms"] == EPOCH_MS + 100_000
        await settle(89.99)
        assert bench.events(HIGH) == [("raise", "active_unack"), ("shelve", "shelved")]
        await settle(0.01 + stage.config.tick_s)
        assert bench.events(HIGH)[-1] == ("unshelve", "active_unack")
        assert 100.0 <= ts_of(bench, HIGH, "unshelve") <= 100.0 + stage.config.tick_s
        # One look at the wall clock at most a minute (it may be stepped), then the end.
        assert stage.ticks == 2


async def test_flood_and_chatter_windows_expire_with_the_timer(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    async with running(bench) as stage:
        c = stage.counters
        for _ in range(11):  # t = 0..21: 11 raises, chattering from the third
            bench.poll("boiler", {"pressure": 85.0})
            await settle(1)
            bench.poll("boiler", {"pressure": 50.0})
            await settle(1)
        assert (c.raised, c.flood, c.chattering) == (11, True, {HIGH})
        assert stage.ticks == 0
        await settle(60 - 22 + 20 + stage.config.tick_s)  # the 11th raise (t=20) is 60 s old
        assert c.chattering == set() and c.flood is True
        await settle(600 - 60)
        assert (c.flood, c.floods, c.in_window, c.chatter_episodes) == (False, 1, 0, 1)
        # A look as each raise leaves a window that changes a counter shown: the chatter
        # window until fewer than 3 remain in it (t = 60, 62 .. 76), the flood window (600 ..
        # 620).
        assert stage.ticks == 9 + 11
        before = stage.ticks
        await settle(3600)
        assert stage.ticks == before

"""Scheduling with scripted drivers on a virtual clock (looptime): phase, overruns, backoff.

looptime makes the loop's clock virtual, so "a poll that takes 0.3 s" costs no real time
and every assertion on due times is exact, not a race against a loaded CI machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable

import pytest

from drivers.reading import DeviceUnreachable, PointSpec, Poll, Quality
from edge_agent.runtime.poller import JITTER_SAMPLES, Unit, UnitStats, run_line

POINTS = (PointSpec("v", "V"),)


class ScriptedDriver:
    """A driver whose answers follow a script; records the loop time of every read."""

    protocol = "scripted"  # no plugin: the registry's names are the real protocols

    def __init__(
        self,
        name: str,
        *,
        duration_s: float = 0.0,
        down: Callable[[int], str | None] = lambda n: None,
        durations: dict[int, float] | None = None,
    ) -> None:
        self.name = name
        self.points = POINTS
        self.duration_s = duration_s
        self.durations = durations or {}
        self.down = down
        self.starts: list[float] = []
        self.closed = False

    async def read(self) -> Poll:
        n = len(self.starts)
        self.starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.durations.get(n, self.duration_s))
        reason = self.down(n)
        if reason is not None:
            raise DeviceUnreachable(self.name, reason)
        return Poll(self.name, 0, POINTS, [float(n)])

    async def close(self) -> None:
        self.closed = True


async def _run_until(
    units: list[Unit],
    done: Callable[[], bool],
    *,
    emit: Callable[[Poll], None] | None = None,
    states: list[tuple[str, bool, str | None]] | None = None,
    frame_gap_s: float = 0.0,
) -> None:
    polls: list[Poll] = []
    condition = asyncio.Event()

    def _emit(poll: Poll) -> None:
        polls.append(poll)
        if emit:
            emit(poll)
        if done():
            condition.set()

    def _state(name: str, up: bool, reason: str | None) -> None:
        if states is not None:
            states.append((name, up, reason))

    task = asyncio.create_task(
        run_line(units, emit=_emit, on_state=_state, frame_gap_s=frame_gap_s, rng=random.Random(7))
    )
    try:
        await asyncio.wait_for(condition.wait(), timeout=1000)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.looptime
async def test_fixed_phase_does_not_drift() -> None:
    driver = ScriptedDriver("m", duration_s=0.3)
    unit = Unit(driver, interval_s=1.0)
    await _run_until([unit], lambda: len(driver.starts) >= 50)
    t0 = driver.starts[0]
    # Each poll takes 0.3 s, yet tick k starts at exactly t0 + k: no accumulated drift.
    assert [round(t - t0, 6) for t in driver.starts[:50]] == [float(k) for k in range(50)]
    assert unit.stats.overruns == 0
    assert unit.stats.polls == 50
    assert driver.closed


@pytest.mark.looptime
async def test_overrun_skips_missed_ticks_instead_of_queueing() -> None:
    driver = ScriptedDriver("m", duration_s=0.1, durations={3: 2.5})  # poll 3 runs 2.5 ticks
    unit = Unit(driver, interval_s=1.0)
    await _run_until([unit], lambda: len(driver.starts) >= 7)
    t0 = driver.starts[0]
    # Ticks 4 and 5 fall inside poll 3 (3.0 .. 5.5): skipped, not run back to back.
    assert [round(t - t0, 6) for t in driver.starts[:7]] == [0, 1, 2, 3, 6, 7, 8]
    assert unit.stats.overruns == 2


@pytest.mark.looptime
async def test_dead_unit_is_backed_off_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.runtime.poller")
    polls: list[Poll] = []
    states: list[tuple[str, bool, str | None]] = []
    # Down for reads 2..11, then answering again.
    driver = ScriptedDriver("m", down=lambda n: "timeout" if 2 <= n < 12 else None)
    unit = Unit(driver, interval_s=1.0, backoff_max_s=8.0)
    await _run_until([unit], lambda: len(driver.starts) >= 15, emit=polls.append, states=states)
    t0 = driver.starts[0]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(driver.starts)]
    # Backoff grows (capped at 8 s) and every retry lands on a tick of the original phase.
    assert all(float(round(t - t0, 6)).is_integer() for t in driver.starts)
    assert max(gaps) <= 8.0
    assert gaps[:2] == [1.0, 1.0]
    # After failure k the wait is the jittered backoff min(8, 2^(k-1)) * [0.5, 1], rounded up
    # to the next tick of the phase.
    for k, gap in enumerate(gaps[2:11], start=1):
        backoff = min(8.0, 2.0 ** (k - 1))
        assert backoff * 0.5 <= gap <= backoff + 1, (k, gap)
    # Exactly one all-bad poll and one down/up pair, whatever the number of failures.
    bad = [p for p in polls if p.issues]
    assert len(bad) == 1
    assert bad[0].issues == {0: (Quality.BAD, "timeout")}
    assert bad[0].values == [None]
    assert states == [("m", True, None), ("m", False, "timeout"), ("m", True, None)]
    assert [r.getMessage().split(":")[1].strip()[:9] for r in caplog.records] == [
        "no answer",
        "answering",
    ]
    assert unit.stats.failures == 10
    assert unit.stats.skipped_backoff > 0


@pytest.mark.looptime
async def test_a_new_cause_while_down_is_said_once_and_in_the_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A certificate refused, then (once trusted) a wrong password: the status must follow."""
    caplog.set_level(logging.WARNING, logger="edge_agent.runtime.poller")
    polls: list[Poll] = []
    states: list[tuple[str, bool, str | None]] = []
    causes = {2: "refused", 3: "refused", 4: "denied", 5: "denied", 6: "denied"}
    driver = ScriptedDriver("m", down=causes.get)
    unit = Unit(driver, interval_s=1.0, backoff_max_s=2.0)
    await _run_until([unit], lambda: len(driver.starts) >= 8, emit=polls.append, states=states)
    assert states == [
        ("m", True, None),
        ("m", False, "refused"),
        ("m", False, "denied"),
        ("m", True, None),
    ]
    assert [r.getMessage() for r in caplog.records][:2] == [
        "m: no answer (refused); retrying with backoff up to 2 s",
        "m: still no answer, now denied",
    ]
    assert len([p for p in polls if p.issues]) == 1  # one bad poll per outage, as before


@pytest.mark.looptime
async def test_dead_unit_on_a_bus_does_not_steal_the_others_rate() -> None:
    live = [ScriptedDriver(f"u{i}", duration_s=0.05) for i in range(3)]
    dead = ScriptedDriver("dead", duration_s=1.0, down=lambda n: "timeout")  # 1 s timeout
    units = [
        Unit(d, interval_s=1.0, backoff_max_s=30.0, phase_s=0.25 * i)
        for i, d in enumerate([*live, dead])
    ]
    await _run_until(units, lambda: len(live[0].starts) >= 120)
    # The dead unit costs 1 s of bus time per attempt; backoff keeps attempts rare, so the
    # live units keep almost all of their ticks.
    assert len(dead.starts) < 12
    for d in live:
        assert len(d.starts) >= 110
    live_overruns = sum(u.stats.overruns for u in units[:3])
    assert live_overruns <= 3 * len(dead.starts)


@pytest.mark.looptime
async def test_bus_runs_one_transaction_at_a_time_with_frame_gap() -> None:
    drivers = [ScriptedDriver(f"u{i}", duration_s=0.2) for i in range(3)]
    units = [Unit(d, interval_s=1.0) for d in drivers]  # all due at the same instant
    await _run_until(units, lambda: len(drivers[2].starts) >= 3, frame_gap_s=0.05)
    starts = sorted(t for d in drivers for t in d.starts)
    # Same-phase units queue on the bus: 0.2 s transaction + 0.05 s gap between them.
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)][:2] == [0.25, 0.25]


class CancelSwallowingDriver(ScriptedDriver):
    """Answers even when cancelled mid-read, as pymodbus's wait_for can on Python 3.11."""

    third = asyncio.Event()

    async def read(self) -> Poll:
        self.starts.append(asyncio.get_running_loop().time())
        if len(self.starts) == 3:
            self.third.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.1)  # the answer "arrives" together with the cancel
        return Poll(self.name, 0, POINTS, [1.0])


@pytest.mark.looptime
async def test_a_swallowed_cancel_still_stops_the_line() -> None:
    driver = CancelSwallowingDriver("m")
    task = asyncio.create_task(run_line([Unit(driver, interval_s=1.0)], emit=lambda p: None))
    await asyncio.wait_for(driver.third.wait(), timeout=100)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done == {task}
    assert task.cancelled()
    assert driver.closed
    assert len(driver.starts) == 3


class BrokenDriver(ScriptedDriver):
    """Raises something no driver should: a bug, not a device answer."""

    async def read(self) -> Poll:
        self.starts.append(asyncio.get_running_loop().time())
        raise KeyError("bug")


@pytest.mark.looptime
async def test_a_driver_bug_costs_its_device_not_the_line(caplog: pytest.LogCaptureFixture) -> None:
    broken = BrokenDriver("broken")
    fine = ScriptedDriver("fine")
    polls: list[Poll] = []
    units = [Unit(broken, interval_s=1.0, backoff_max_s=4.0), Unit(fine, interval_s=1.0)]
    await _run_until(units, lambda: len(fine.starts) >= 20, emit=polls.append)
    assert len(fine.starts) == 20
    assert len(broken.starts) >= 5
    bad = [p for p in polls if p.device == "broken"]
    assert len(bad) == 1
    assert bad[0].issues == {0: (Quality.BAD, "driver error: 'bug'")}
    # One traceback for the bug, one state-change line; nothing per failed retry.
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 2


def test_the_jitter_ring_keeps_the_last_samples_as_doubles() -> None:
    stats = UnitStats()
    for k in range(3 * JITTER_SAMPLES + 7):
        stats.record_jitter(k / 1000)
    assert len(stats.jitter_s) <= JITTER_SAMPLES
    assert len(stats.jitter_s) >= JITTER_SAMPLES // 2 >= 500  # the live view's p99 window
    assert stats.jitter_s[-1] == (3 * JITTER_SAMPLES + 6) / 1000
    assert (
        list(stats.jitter_s)
        == [k / 1000 for k in range(3 * JITTER_SAMPLES + 7)][-len(stats.jitter_s) :]
    )
    assert stats.jitter_s.itemsize == 8  # a C double each, not a float object

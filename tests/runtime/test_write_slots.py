"""Writes on a shared line take the next free transaction slot, not a poll cycle (looptime).

Three units share one bus, each polled once a second at phases 0, 1/3 and 2/3, a poll
taking 0.1 s. A write (0.1 s: the write and its read-back) queued mid-poll runs as soon as
that poll ends, and moves the next unit's poll by at most its own duration.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from drivers.reading import PointSpec, Poll
from edge_agent.commands.slots import WriteSlots
from edge_agent.runtime.poller import Unit, run_line

POINTS = (PointSpec("v", None),)
POLL_S = 0.1
WRITE_S = 0.1


class TimedDriver:
    protocol = "scripted"

    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.points = POINTS
        self.log = log

    async def read(self) -> Poll:
        self.log.append((self.name, round(asyncio.get_running_loop().time(), 6)))
        await asyncio.sleep(POLL_S)
        return Poll(self.name, 0, POINTS, [1.0])

    async def close(self) -> None:
        pass


async def _write(log: list[tuple[str, float]], name: str) -> None:
    log.append((name, round(asyncio.get_running_loop().time(), 6)))
    await asyncio.sleep(WRITE_S)


@pytest.mark.looptime
async def test_a_write_takes_the_next_free_slot_on_a_shared_line() -> None:
    log: list[tuple[str, float]] = []
    units = [Unit(TimedDriver(f"u{i}", log), interval_s=1.0, phase_s=i / 3) for i in range(3)]
    slots = WriteSlots(limit=8)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    line = asyncio.create_task(
        run_line(units, emit=lambda _p: None, rng=random.Random(1), between=slots)
    )
    try:
        # Mid-poll of u0 (0..0.1): the write waits for that transaction only.
        await asyncio.sleep(0.05)
        assert slots.put(lambda: _write(log, "w1"), lambda _r: None)
        # Idle line just before u1 is due (1/3): the write goes first, u1 follows it.
        await asyncio.sleep(0.3 - (loop.time() - t0))
        assert slots.put(lambda: _write(log, "w2"), lambda _r: None)
        await asyncio.sleep(1.05 - (loop.time() - t0))
    finally:
        line.cancel()
        with pytest.raises(asyncio.CancelledError):
            await line
    got = [(name, round(t - t0, 3)) for name, t in log]
    assert got == [
        ("u0", 0.0),
        ("w1", 0.1),  # right after u0's poll, not a cycle later
        ("w2", 0.3),  # at once on an idle line
        ("u1", 0.4),  # moved by the write's own 0.1 s (due at 0.333)
        ("u2", 0.667),  # untouched
        ("u0", 1.0),  # the schedule keeps its phase
    ]

"""A recorded history of polls replayed through the real agent, into real stores.

`replay` builds the agent of a site file, puts a `ScriptedDriver` in place of each
device's driver (the device's own points; each read returns the next recorded poll with
its recorded timestamp, so the energy stage, the data messages and the stores all see the
recorded times) and runs it against a real broker beside the given ingest workers, until
every recorded poll went through and every message the agent sent is stored.

The site file keeps the devices' real poll periods (the energy stage counts expected
readings from them); only the scheduler's ticks are made short, as a recording replays
faster than it was taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config.site import LoadedConfig
from edge_agent.ingest.service import Ingest
from edge_agent.runtime.agent import Agent
from tests.ingest_support import publish
from tests.ingest_support import running as ingesting
from tests.running_agent import running

Sample = Mapping[str, float] | None  # a point's values by name; None: the device did not answer


@dataclass
class ScriptedDriver:
    """Answers each read with the next recorded poll; then waits (no more readings), which
    holds its line: give every replayed device a line of its own (a TCP device)."""

    name: str
    points: tuple[PointSpec, ...]
    polls: Sequence[Poll]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    async def read(self) -> Poll:
        if self._next < len(self.polls):
            self._next += 1
            return self.polls[self._next - 1]
        self.done.set()
        await asyncio.Event().wait()  # the recording is over: no answer ever again
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


def recorded_polls(
    device: str, points: tuple[PointSpec, ...], samples: Sequence[tuple[int, Sample]]
) -> list[Poll]:
    """Polls of one device at recorded times (ms); a None sample is a poll that timed out
    (every point bad, as the poller reports a device that does not answer)."""
    polls = []
    for ts_ms, values in samples:
        if values is None:
            polls.append(Poll.all_bad(device, points, ts_ns=ts_ms * 1_000_000, reason="timeout"))
            continue
        row = [values.get(p.name) for p in points]
        issues = {i: (Quality.BAD, "not recorded") for i, v in enumerate(row) if v is None}
        polls.append(Poll(device, ts_ms * 1_000_000, points, list(row), issues))
    return polls


async def _until(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def replay(
    loaded: LoadedConfig,
    samples: Mapping[str, Sequence[tuple[int, Sample]]],
    ingests: Sequence[Ingest],
    *,
    extra: Sequence[tuple[str, bytes]] = (),
    tick_s: float = 0.002,
    timeout_s: float = 60.0,
) -> Agent:
    """Run the site's agent over the recorded samples (device -> [(ts_ms, values)]) with
    the ingest workers running, and `extra` messages (topic, payload) published beside;
    return the stopped agent once everything is stored."""
    agent = Agent(loaded)
    drivers: list[ScriptedDriver] = []
    for line in agent.lines:
        line.frame_gap_s = 0.0
        for unit in line.units:
            name, points = unit.driver.name, unit.driver.points
            driver = ScriptedDriver(name, points, recorded_polls(name, points, samples[name]))
            unit.driver = driver
            unit.interval_s, unit.phase_s = tick_s, 0.0
            drivers.append(driver)
    async with AsyncExitStack() as stack:
        for ingest in ingests:
            await stack.enter_async_context(ingesting(ingest))
        if extra:
            await publish(loaded.site.mqtt.url, extra)
        async with running(agent):
            await _until(
                "every recorded poll", lambda: all(d.done.is_set() for d in drivers), timeout_s
            )
            # Data and energy messages, each with its sequence number; and the extras.
            sent = agent.seq + len(extra)
            for ingest in ingests:

                def stored(i: Ingest = ingest) -> bool:
                    s = i.stats
                    return s.stored_messages + s.stored_alarms + s.deadlettered >= sent

                await _until(f"{sent} messages stored by {ingest.client_id}", stored, timeout_s)
    return agent

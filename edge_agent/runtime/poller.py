"""Poll scheduling: one task per line (a TCP device, or every unit on one RS-485 bus).

Each unit polls at fixed phase on the loop's monotonic clock: tick k is due at
origin + k * interval, so errors never accumulate into drift. A poll that runs past its
next tick counts an overrun and the missed ticks are skipped, not queued. A unit that
does not answer is reported bad once, then retried on its own ticks after a capped,
jittered exponential backoff; on a shared bus that keeps a dead unit from eating the
time of the live ones, and a TCP device has its own task so it never delays another.

A unit that answers with every point bad (a Modbus exception on every request, an OPC UA
Bad status on every node) is in fault: it answers, but delivers nothing. That is reported
and logged once on change too, and ends with the first poll that has a good point.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from drivers.contract import PolledDriver
from drivers.reading import DeviceUnreachable, Poll, Quality
from edge_agent.runtime.poll_slots import slot_start

log = logging.getLogger(__name__)

# The last start latenesses of each unit, as C doubles: 8 bytes a sample where a list of
# floats took 32, and 1,024 of them, enough for the live view's p99 over 500 polls; 4,096
# in a list were 64 MB at 500 units once the rings filled, an hour into a 1 s site.
JITTER_SAMPLES = 1024


@dataclass(slots=True)
class UnitStats:
    """Counters of one unit, read by the live view, the benchmark and tests."""

    polls: int = 0  # polls attempted
    good_polls: int = 0  # polls that got an answer (even with bad points)
    failures: int = 0  # polls with no answer
    overruns: int = 0  # ticks skipped because a poll ran into them
    skipped_backoff: int = 0  # ticks skipped while backing off a dead unit
    up: bool | None = None  # None until the first poll
    reason: str | None = None  # why it is down, or, while up, why it is in fault
    fault: str | None = None  # answering, but every point of the last answer was bad
    last_poll: Poll | None = None
    jitter_s: array[float] = field(default_factory=lambda: array("d"))  # start latenesses

    def record_jitter(self, late_s: float) -> None:
        """Keep the last JITTER_SAMPLES start latenesses."""
        if len(self.jitter_s) >= JITTER_SAMPLES:
            del self.jitter_s[: JITTER_SAMPLES // 2]
        self.jitter_s.append(late_s)


@dataclass(slots=True)
class Unit:
    """A driver with its schedule."""

    driver: PolledDriver
    interval_s: float
    backoff_max_s: float = 30.0
    phase_s: float = 0.0  # offset of tick 0 from the bus start, to spread load
    stats: UnitStats = field(default_factory=UnitStats)
    origin: float = 0.0
    next_due: float = 0.0
    retry_at: float = 0.0
    down_since: float = 0.0
    fault_since: float = 0.0
    backoff_step: int = 0


Emit = Callable[[Poll], None]
# (device, up, reason): down with why; up with None; up with why every point is bad (fault).
StateChange = Callable[[str, bool, str | None], None]


class BetweenPolls(Protocol):
    """Work that takes the line between two polls (writes: edge_agent/commands/slots.py)."""

    async def pause(self, delay_s: float) -> bool:
        """Wait up to `delay_s`; True as soon as work is waiting."""
        ...

    async def run_waiting(self) -> None:
        """Do the waiting work, one transaction at a time."""
        ...


def fault_reason(poll: Poll) -> str | None:
    """Why every point of an answered poll is bad (the most frequent reason), else None."""
    issues = poll.issues
    n = len(poll.points)
    if n == 0 or len(issues) < n:
        return None
    counts: dict[str, int] = {}
    for quality, reason in issues.values():
        if quality is not Quality.BAD:
            return None
        counts[reason] = counts.get(reason, 0) + 1
    return max(counts, key=counts.__getitem__)  # ties: the earliest point's reason


def _next_tick(unit: Unit, now: float) -> tuple[float, int]:
    """The first tick strictly after now, and how many ticks that skips past next_due."""
    k = math.floor((now - unit.origin) / unit.interval_s) + 1
    due = unit.origin + k * unit.interval_s
    skipped = max(0, round((due - unit.next_due) / unit.interval_s) - 1)
    return due, skipped


async def run_line(
    units: Sequence[Unit],
    *,
    emit: Emit,
    on_state: StateChange | None = None,
    frame_gap_s: float = 0.0,
    rng: random.Random | None = None,
    between: BetweenPolls | None = None,
    slot_s: float = 0.0,
) -> None:
    """Poll the units of one line, one transaction at a time, until cancelled.

    `between` (writes) runs before the next poll whenever it has work, so it waits for at
    most the poll in progress and delays the next by only its own transactions.
    `slot_s`: tick 0 goes on the next multiple of the slot on the loop's clock, where the
    other lines' slotted ticks go too (poll_slots.py).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    rng = rng or random.Random()
    start = slot_start(loop.time(), slot_s)
    for u in units:
        u.origin = start + u.phase_s
        u.next_due = u.origin
        u.retry_at = u.origin
    try:
        while True:
            if between is not None:
                await between.run_waiting()
            unit = min(units, key=lambda u: max(u.next_due, u.retry_at))
            due = max(unit.next_due, unit.retry_at)
            delay = due - loop.time()
            if delay > 0:
                if between is None:
                    await asyncio.sleep(delay)
                elif await between.pause(delay):
                    continue  # work arrived before the poll was due: it goes first
            began = loop.time()
            stats = unit.stats
            stats.polls += 1
            stats.record_jitter(began - due)
            try:
                poll = await unit.driver.read()
            except DeviceUnreachable as exc:
                _went_down(unit, exc.reason, began, emit, on_state, rng)
            except Exception as exc:
                # A driver bug must cost its device, not the whole gateway.
                if stats.up is not False:
                    log.exception("%s: driver error", unit.driver.name)
                _went_down(unit, f"driver error: {exc}", began, emit, on_state, rng)
            else:
                stats.good_polls += 1
                stats.last_poll = poll
                fault = fault_reason(poll)
                if stats.up is not True or (fault is None) != (stats.fault is None):
                    _came_up(unit, began, on_state, fault)
                elif fault is not None:
                    stats.fault = stats.reason = fault  # still in fault: no new log line
                emit(poll)
            if task.cancelling():
                # On Python 3.11 asyncio.wait_for (inside asyncua, say) can swallow a cancel
                # that lands as the answer arrives (CPython gh-86296); honour it here.
                raise asyncio.CancelledError
            now = loop.time()
            unit.next_due, skipped = _next_tick(unit, now)
            if unit.retry_at > now:
                # Keep the phase while backing off: resume on the first tick after retry_at.
                resume, _ = _next_tick(unit, unit.retry_at)
                stats.skipped_backoff += round((resume - unit.next_due) / unit.interval_s)
                unit.next_due = resume
            stats.overruns += skipped
            if frame_gap_s:
                await asyncio.sleep(frame_gap_s)
    finally:
        for u in units:
            await u.driver.close()


def _went_down(
    unit: Unit,
    reason: str,
    now: float,
    emit: Emit,
    on_state: StateChange | None,
    rng: random.Random,
) -> None:
    stats = unit.stats
    stats.failures += 1
    unit.backoff_step += 1
    backoff = min(unit.backoff_max_s, unit.interval_s * 2 ** (unit.backoff_step - 1))
    unit.retry_at = now + backoff * rng.uniform(0.5, 1.0)
    if stats.up is False:
        if reason != stats.reason:
            # Another cause (a certificate now trusted, a password now wrong): say so once,
            # and in the retained status, or diagnosis shows the fixed problem still.
            stats.reason = reason
            log.warning("%s: still no answer, now %s", unit.driver.name, reason)
            if on_state is not None:
                on_state(unit.driver.name, False, reason)
        return  # still down: no new bad poll
    unit.down_since = now
    stats.up, stats.reason, stats.fault = False, reason, None
    name = unit.driver.name
    log.warning(
        "%s: no answer (%s); retrying with backoff up to %g s", name, reason, unit.backoff_max_s
    )
    poll = Poll.all_bad(name, unit.driver.points, ts_ns=time.time_ns(), reason=reason)
    stats.last_poll = poll
    emit(poll)
    if on_state is not None:
        on_state(name, False, reason)


def _came_up(unit: Unit, now: float, on_state: StateChange | None, fault: str | None) -> None:
    """The unit answered after being down, unknown, in fault, or fine: whichever changed."""
    stats = unit.stats
    name = unit.driver.name
    if stats.up is False:
        log.warning("%s: answering again after %.1f s", name, now - unit.down_since)
    if fault is not None:
        log.warning("%s: every point bad (%s); device in fault", name, fault)
        unit.fault_since = now
    elif stats.fault is not None and stats.up:
        log.warning("%s: points good again after %.1f s in fault", name, now - unit.fault_since)
    stats.up, stats.reason, stats.fault = True, fault, fault
    unit.backoff_step = 0
    unit.retry_at = 0.0
    if on_state is not None:
        on_state(name, True, fault)

"""The writes waiting for one line, taken between its polls in arrival order.

A line (a TCP device, or every unit of one RS-485 bus) does one transaction at a time;
the poller (runtime/poller.py) asks its `WriteSlots` before every poll and while it waits
for the next one, so a write takes the next free slot, not a whole poll cycle, and moves
the other units' polls by its own transactions only. One queue per line keeps the requests
of each device in the order they arrived.

The poller also calls `run_waiting` after every poll: a read-back that waits for its
device's next regular poll (readback.py) is answered there.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from edge_agent.runtime.poller import Unit

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]  # one write: checks its expiry, writes, reads back, replies
Abandon = Callable[[str], None]  # the same write, answered without running (line stopped)


class AfterPoll(Protocol):
    """Work that waits for a poll of the line (a read-back served by the device's poll)."""

    def polled(self) -> bool:
        """Called after every poll of the line: True once done."""
        ...

    def abandon(self, reason: str) -> None:
        """The line stopped before it was done."""
        ...


class WriteSlots:
    """A bounded FIFO of writes for one line."""

    def __init__(self, *, limit: int, frame_gap_s: float = 0.0, units: Sequence[Unit] = ()) -> None:
        self.limit = limit
        self.frame_gap_s = frame_gap_s  # quiet time after each write, as after each poll
        self.units = units  # the line's schedule: whether it has idle time now
        self._jobs: deque[tuple[Job, Abandon]] = deque()
        self._after_poll: list[AfterPoll] = []
        self._wake: asyncio.Future[bool] | None = None  # the line's pause, while it waits
        self.closed = False

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job, abandon: Abandon) -> bool:
        """Queue one write; False when `limit` are already waiting or the line stopped."""
        if self.closed or len(self._jobs) >= self.limit:
            return False
        self._jobs.append((job, abandon))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(True)
        return True

    async def pause(self, delay_s: float) -> bool:
        """Wait up to `delay_s`; True as soon as a write is waiting."""
        if self._jobs:
            return True
        # A future and one timer: asyncio.timeout around an Event cancelled the task at
        # every due poll (a CancelledError thrown through the frames), twice the CPU.
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[bool] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(delay_s, _resolve, wake, False)
        try:
            return await wake
        finally:
            timer.cancel()
            self._wake = None

    def idle_s(self) -> float:
        """Time until the line's next poll is due (<= 0: one is already due)."""
        if not self.units:
            return math.inf
        now = asyncio.get_running_loop().time()
        return min(max(u.next_due, u.retry_at) for u in self.units) - now

    def after_poll(self, work: AfterPoll) -> None:
        """Call `work.polled()` after every poll of the line until it says done."""
        self._after_poll.append(work)

    async def run_waiting(self) -> None:
        """Answer what waited for a poll, then run the waiting writes in arrival order."""
        if self._after_poll:
            self._after_poll = [w for w in self._after_poll if not self._polled(w)]
        jobs = self._jobs
        while jobs:
            job, _ = jobs.popleft()
            try:
                await job()
            except Exception:
                # A bug in answering one write must not stop the line's polls.
                log.exception("a write failed outside the driver; the line goes on")
            if self.frame_gap_s:
                await asyncio.sleep(self.frame_gap_s)

    def close(self, reason: str) -> None:
        """The line stopped: answer what waits without running it; refuse what comes."""
        self.closed = True
        while self._jobs:
            _, abandon = self._jobs.popleft()
            abandon(reason)
        waiting, self._after_poll = self._after_poll, []
        for work in waiting:
            work.abandon(reason)

    @staticmethod
    def _polled(work: AfterPoll) -> bool:
        try:
            return work.polled()
        except Exception:
            log.exception("answering a read-back failed; the line goes on")
            return True


def _resolve(wake: asyncio.Future[bool], value: bool) -> None:
    if not wake.done():
        wake.set_result(value)

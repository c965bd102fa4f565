"""Where a write's read-back comes from: at once, or the device's next regular poll.

A shared RS-485 line does one transaction at a time, so every transaction a write adds
delays the polls after it. The write takes the next free slot (slots.py); its read-back

- runs at once, back to back, when the line has idle time for it: the next poll is due
  later than READ_BACK_MARGIN times the write's own duration plus the frame gap, so it
  moves no poll;
- else is the device's next regular poll, which reads the point anyway, when that poll is
  due within the request's expiry: the reply waits for it and carries the polled value
  (a point bad in that poll, or the device down, is `failed`: written, not read back);
- else runs at once: a device polled more rarely than its requests expire on a line with
  no idle time is the one case where a write moves the other units by two transactions.

A device alone on its line (TCP, or one unit on a serial port) reads back at once: there
is no other unit to move. Protocols that cannot split a write from its read-back
(`ReadBackLater` in drivers/contract.py) always read back at once. A second write to the
same point while the first one's read-back still waits for the poll reads the first back
at once before it writes: each reply carries the value its own write left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.contract import WriteFailed
from drivers.reading import DeviceUnreachable, Quality, Value
from edge_agent.commands.slots import WriteSlots
from edge_agent.runtime.poller import Unit

# The read-back is about as long as the write (one short request, one short answer); the
# margin keeps a slower answer from running into the next poll.
READ_BACK_MARGIN = 1.5


def read_back_now(slots: WriteSlots, unit: Unit, *, write_s: float, wait_max_s: float) -> bool:
    """Whether to read back at once (module docstring) rather than wait for the next poll."""
    if len(slots.units) < 2:
        return True
    if slots.idle_s() >= READ_BACK_MARGIN * write_s + slots.frame_gap_s:
        return True
    due_in = max(unit.next_due, unit.retry_at) - asyncio.get_running_loop().time()
    return due_in > wait_max_s


@dataclass(slots=True)
class PolledReadBack:
    """A written point, read back by its device's next poll (the line's AfterPoll work)."""

    unit: Unit
    point: str
    done: Callable[[Value], None]  # the value the poll read
    failed: Callable[[str], None]  # why there is none
    polls: int = -1  # the device's polls when written; set by `waiting`
    settled: bool = False  # answered (by a poll, at once, or abandoned)

    def waiting(self) -> PolledReadBack:
        """Start waiting from now: the next poll of the device is the read-back."""
        self.polls = self.unit.stats.polls
        return self

    def polled(self) -> bool:
        """After a poll of the line: answer once the device was polled again."""
        stats = self.unit.stats
        if self.settled:
            return True
        if stats.polls == self.polls:
            return False
        self.settled = True
        poll = stats.last_poll
        if stats.up is False or poll is None:
            self.failed(f"written, but the read-back failed: {stats.reason or 'no answer'}")
            return True
        for i, spec in enumerate(poll.points):
            if spec.name != self.point:
                continue
            issue = poll.issues.get(i)
            if issue is not None and issue[0] is Quality.BAD:
                self.failed(f"written, but the read-back failed: {issue[1]}")
            else:
                self.done(poll.values[i])
            return True
        self.failed("written, but the read-back failed: the poll did not carry the point")
        return True

    def abandon(self, reason: str) -> None:
        """The line stopped before the device's next poll."""
        if not self.settled:
            self.settled = True
            self.failed(f"written, but not read back: {reason}")

    async def read_now(self, read: Callable[[], Awaitable[Value]]) -> None:
        """Answer at once with a dedicated read (another write to the point comes next)."""
        if self.settled:
            return
        self.settled = True
        try:
            value = await read()
        except (WriteFailed, DeviceUnreachable) as exc:
            self.failed(
                exc.reason
                if exc.reason.startswith("written")
                else f"written, but the read-back failed: {exc.reason}"
            )
        else:
            self.done(value)

"""One grid on the loop's clock for the agent's periodic wake-ups.

On a gateway, a wake-up from idle costs more than the work it does at 1 s polls (on the
benchmark VM an asyncio timer firing into an idle process is charged 100-350 µs of CPU, a
whole poll's decode and encode is less). So polls start on multiples of the poll slot
(`polling.slot_s`, runtime/poller.py), and periodic housekeeping (gateway health, state
saves) waits for multiples of its own period on the same clock: a period that is a
multiple of the slot lands in a wake-up the polls make anyway.
"""

from __future__ import annotations

import asyncio
import math


def next_multiple(now: float, period: float) -> float:
    """The first multiple of `period` strictly after `now` (seconds on the loop's clock)."""
    return math.floor(now / period + 1.0) * period


async def sleep_to_multiple(period: float) -> float:
    """Sleep until the next multiple of `period` on the running loop's clock; returns it."""
    loop = asyncio.get_running_loop()
    due = next_multiple(loop.time(), period)
    await asyncio.sleep(due - loop.time())
    return due

"""Waiting on a condition in async tests: poll it on the loop, fail with what was awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], bool], *, what: str, timeout_s: float = 20.0) -> None:
    """Return once `predicate()` is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # a poll interval bounded by the deadline, not a sync

"""Refused input from the network, counted by reason and logged within a budget.

A client (or an attacker) can send thousands of bad commands or messages a second; a log
line each would turn the flood into disk use. So every refusal is counted by its reason
(the counts go to metrics), the first `burst` refusals of a window are logged in full,
and the rest of the window's refusals become one summary line when the window ends:

    t=0     INFO alarm command refused: unknown alarm 'x' (b'{"cmd": "ack", ...')
    t=0-60  (counted only)
    t=60    INFO alarm commands: 69,419 more refused in the last 60.0 s (not_json 69,000,
            unknown_alarm 419); counted in metrics, not logged one by one
    ...     the next refusal opens a new window and is logged in full again

A flood therefore costs at most `burst` + 1 lines per `interval_s`, whatever its rate.
The summary is scheduled on the running loop when one is running, and written by
`flush()` (at stop) or by the next refusal otherwise. `reason` must come from a small
fixed set: it is a metric label.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

INTERVAL_S = 60.0
SHOWN_BYTES = 100  # of a refused payload, in a log line


def shown(payload: bytes | str, limit: int = SHOWN_BYTES) -> str:
    """A bounded, single-line rendering of untrusted input for logs and replies."""
    head = payload[:limit]
    text = repr(head)
    more = len(payload) - len(head)
    return f"{text}... ({len(payload):,} in all)" if more > 0 else text


class RefusalLog:
    """Counts refusals by reason; logs `burst` per window in full and summarises the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        burst: int = 1,
        interval_s: float = INTERVAL_S,
        level: int = logging.INFO,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.logger = logger
        self.what = what  # "alarm commands", in the summary line
        self.burst = burst
        self.interval_s = interval_s
        self.level = level
        self.clock = clock or _loop_time
        self.counts: Counter[str] = Counter()  # every refusal since start, by reason
        self._window_end: float | None = None
        self._logged = 0
        self._suppressed: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def total(self) -> int:
        """Refusals so far."""
        return sum(self.counts.values())

    def refused(self, reason: str, message: str, *args: object) -> bool:
        """Count one refusal; log it (`message % args`) if the window's budget allows.

        Returns whether it was logged.
        """
        self.counts[reason] += 1
        now = self.clock()
        if self._window_end is None or now >= self._window_end:
            self.flush()
            self._window_end = now + self.interval_s
            self._logged = 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(self.level, message, *args, stacklevel=2)
            return True
        self._suppressed[reason] += 1
        if self._timer is None:
            self._schedule()
        return False

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next refusal or flush() writes the summary
        assert self._window_end is not None
        delay = max(0.0, self._window_end - self.clock())
        self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Write the summary of what the current window did not log, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        suppressed = self._suppressed
        if not suppressed:
            return
        n = sum(suppressed.values())
        assert self._window_end is not None
        elapsed = self.clock() - (self._window_end - self.interval_s)
        by_reason = ", ".join(f"{reason} {count:,}" for reason, count in sorted(suppressed.items()))
        self.logger.log(
            self.level,
            "%s: %s more refused in the last %.1f s (%s); counted in metrics, not logged one "
            "by one",
            self.what,
            f"{n:,}",
            elapsed,
            by_reason,
        )
        self._suppressed = Counter()
        self._window_end = None  # the next refusal is logged in full again


def _loop_time() -> float:
    """The running loop's clock (virtual in tests that fake it), else the monotonic one."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()

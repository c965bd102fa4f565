"""Alarm-system health counters (ISA-18.2): floods of the whole gateway, chattering alarms.

    flood       more than `flood_count` annunciated activations (raises) in `flood_window_s`
                (default: more than 10 in 10 minutes); counted as episodes, logged once
                when one starts and once when it ends
    chattering  one alarm raised `chatter_count` times or more within `chatter_window_s`
                (default: 3 in 60 s); the alarm carries "chattering": true while it lasts

Time is the monotonic clock in seconds. Both are sliding windows over raise times.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AlarmCounters:
    """What the live view, the retained active set and metrics show."""

    raised: int = 0  # annunciated activations since start
    cleared: int = 0
    acked: int = 0
    commands: int = 0
    refused: int = 0  # commands answered with an error
    store_errors: int = 0  # alarm-store writes that failed (logged once)
    floods: int = 0  # flood episodes since start
    chatter_episodes: int = 0
    in_window: int = 0  # raises in the current flood window
    flood: bool = False
    chattering: set[str] = field(default_factory=set)  # alarm ids chattering now

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for the retained active set."""
        return {
            "raised": self.raised,
            "cleared": self.cleared,
            "acked": self.acked,
            "commands": self.commands,
            "refused": self.refused,
            "store_errors": self.store_errors,
            "flood": self.flood,
            "floods": self.floods,
            "raised_in_flood_window": self.in_window,
            "chattering": sorted(self.chattering),
            "chatter_episodes": self.chatter_episodes,
        }


class RaiseWindows:
    """Sliding windows of raise times: one for the gateway, one per alarm."""

    def __init__(
        self,
        counters: AlarmCounters,
        *,
        flood_count: int,
        flood_window_s: float,
        chatter_count: int,
        chatter_window_s: float,
    ) -> None:
        self.counters = counters
        self.flood_count = flood_count
        self.flood_window_s = flood_window_s
        self.chatter_count = chatter_count
        self.chatter_window_s = chatter_window_s
        self._all: deque[float] = deque()
        self._per_alarm: dict[str, deque[float]] = {}

    def raised(self, alarm_id: str, now: float) -> None:
        """An alarm was annunciated (raise) at `now`."""
        c = self.counters
        c.raised += 1
        self._all.append(now)
        times = self._per_alarm.setdefault(alarm_id, deque())
        times.append(now)
        self.expire(now)
        if len(times) >= self.chatter_count and alarm_id not in c.chattering:
            c.chattering.add(alarm_id)
            c.chatter_episodes += 1
            log.warning(
                "alarm %s is chattering: %d activations within %.0f s",
                alarm_id,
                len(times),
                self.chatter_window_s,
            )

    def next_expiry(self) -> float | None:
        """When the next raise leaves a window that can change a counter shown: the flood
        window's oldest raise, a chattering alarm's oldest (None: nothing to expire)."""
        due = [
            times[0] + self.chatter_window_s
            for a in self.counters.chattering
            if (times := self._per_alarm[a])
        ]
        if self._all:
            due.append(self._all[0] + self.flood_window_s)
        return min(due, default=None)

    def expire(self, now: float) -> None:
        """Drop what left the windows; ends flood and chatter episodes."""
        c = self.counters
        everything = self._all
        start = now - self.flood_window_s
        while everything and everything[0] <= start:
            everything.popleft()
        c.in_window = len(everything)
        if c.in_window > self.flood_count and not c.flood:
            c.flood = True
            c.floods += 1
            log.warning("alarm flood: %d alarms within %.0f s", c.in_window, self.flood_window_s)
        elif c.flood and c.in_window <= self.flood_count:
            c.flood = False
            log.warning("alarm flood is over")
        start = now - self.chatter_window_s
        for alarm_id in list(c.chattering):
            times = self._per_alarm[alarm_id]
            while times and times[0] <= start:
                times.popleft()
            if len(times) < self.chatter_count:
                c.chattering.discard(alarm_id)
                log.info("alarm %s stopped chattering", alarm_id)
        for alarm_id, times in list(self._per_alarm.items()):
            if alarm_id in c.chattering:
                continue
            while times and times[0] <= start:
                times.popleft()
            if not times:
                del self._per_alarm[alarm_id]

"""The conditions of alarm rules, evaluated reading by reading, and their on/off delays.

A check turns one reading into the rule's raw condition (True, False, or None when the
value cannot be judged, e.g. a string on a limit rule); `Delay` turns the raw condition
into the alarm's active flag. Hysteresis (OPC UA Part 9 AlarmDeadband, Rockwell ALMA):

    high:  on at x >= limit             off at x < limit - deadband
    low:   on at x <= limit             off at x > limit + deadband
    rate:  on at change >= limit        off at change < limit - deadband
           change within the last period_s: up = x - min, down = max - x, both = the larger
    deviation: d = x - setpoint (up), setpoint - x (down), |x - setpoint| (both), as high

Between the two thresholds a check keeps what it said last, so a value sitting in the
deadband neither raises nor clears. Time is the agent's monotonic clock in seconds.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from drivers.options.alarms import AlarmRule
from drivers.reading import Value


def number(value: Value) -> float | None:
    """The value as a float when it is a number (booleans and strings are not)."""
    if type(value) is float or type(value) is int:
        return float(value)
    return None


class Delay:
    """On-delay and off-delay: a change of the raw condition counts once it held that long.

    The change is confirmed at the first evaluation at or after `since + delay`; a reading
    that cannot be judged (bad quality) breaks the run and the delay starts again.
    """

    __slots__ = ("_since", "active", "off_s", "on_s")

    def __init__(self, on_s: float, off_s: float, *, active: bool = False) -> None:
        self.on_s = on_s
        self.off_s = off_s
        self.active = active
        self._since: float | None = None

    def update(self, raw: bool, now: float) -> bool:
        """The active flag after a raw condition seen at `now`."""
        if raw == self.active:
            self._since = None
            return raw
        if self._since is None:
            self._since = now
        if now - self._since >= (self.on_s if raw else self.off_s):
            self.active = raw
            self._since = None
        return self.active

    def interrupt(self) -> None:
        """Forget a pending change (no reading could confirm it)."""
        self._since = None

    @property
    def pending(self) -> bool:
        """Whether a change waits for its delay."""
        return self._since is not None

    @property
    def due(self) -> float | None:
        """When a pending change is confirmed (the clock of `update`), None when none waits."""
        since = self._since
        if since is None:
            return None
        return since + (self.off_s if self.active else self.on_s)


class Check(Protocol):
    """A rule's raw condition from one reading."""

    on: bool

    def evaluate(self, value: Value, now: float, setpoint: Value) -> bool | None:
        """True/False, or None when the value cannot be judged by this rule."""


class _Threshold:
    """x >= limit sets, x < limit - deadband clears (the upper form; `flip` mirrors it)."""

    __slots__ = ("deadband", "limit", "on", "sign")

    def __init__(self, limit: float, deadband: float, *, upper: bool) -> None:
        self.sign = 1.0 if upper else -1.0
        self.limit = limit * self.sign
        self.deadband = deadband
        self.on = False

    def judge(self, x: float) -> bool:
        x *= self.sign
        if self.on:
            self.on = not x < self.limit - self.deadband
        else:
            self.on = x >= self.limit
        return self.on


class LimitCheck(_Threshold):
    """high_high / high / low / low_low with deadband."""

    __slots__ = ()

    def evaluate(self, value: Value, now: float, setpoint: Value) -> bool | None:
        x = number(value)
        return None if x is None else self.judge(x)


class RateCheck:
    """rate_of_change: the value moved by `limit` or more within `period_s`, ending now.

    Two monotonic deques keep the window's minimum and maximum, so an evaluation costs
    O(1) amortised however many readings the period holds. Until a whole period has been
    seen (after a start, with an alarm restored active) an active alarm is not cleared:
    the part of the period it did not see may hold the move.
    """

    __slots__ = ("direction", "first", "highs", "lows", "period_s", "threshold")

    def __init__(self, limit: float, period_s: float, deadband: float, direction: str) -> None:
        self.period_s = period_s
        self.direction = direction
        self.threshold = _Threshold(limit, deadband, upper=True)
        self.lows: deque[tuple[float, float]] = deque()  # rising values: front is the minimum
        self.highs: deque[tuple[float, float]] = deque()  # falling values: front is the maximum
        self.first: float | None = None  # time of the first reading seen

    @property
    def on(self) -> bool:
        return self.threshold.on

    @on.setter
    def on(self, value: bool) -> None:
        self.threshold.on = value

    def evaluate(self, value: Value, now: float, setpoint: Value) -> bool | None:
        x = number(value)
        if x is None:
            return None
        lows, highs = self.lows, self.highs
        while lows and lows[-1][1] >= x:
            lows.pop()
        lows.append((now, x))
        while highs and highs[-1][1] <= x:
            highs.pop()
        highs.append((now, x))
        start = now - self.period_s
        while lows[0][0] < start:
            lows.popleft()
        while highs[0][0] < start:
            highs.popleft()
        up, down = x - lows[0][1], highs[0][1] - x
        change = (
            up if self.direction == "up" else down if self.direction == "down" else max(up, down)
        )
        if self.first is None:
            self.first = now
        if self.threshold.on and now - self.first < self.period_s:
            return True
        return self.threshold.judge(change)


class StateCheck:
    """state: the value is one of the alarm values (a bit that is set, an enum code)."""

    __slots__ = ("on", "values")

    def __init__(self, values: tuple[bool | int | str, ...]) -> None:
        self.values = frozenset(values)
        self.on = False

    def evaluate(self, value: Value, now: float, setpoint: Value) -> bool | None:
        if value is None:
            return None
        self.on = value in self.values
        return self.on


class DeviationCheck:
    """deviation: the value is `limit` or more away from the set-point point."""

    __slots__ = ("direction", "threshold")

    def __init__(self, limit: float, deadband: float, direction: str) -> None:
        self.direction = direction
        self.threshold = _Threshold(limit, deadband, upper=True)

    @property
    def on(self) -> bool:
        return self.threshold.on

    @on.setter
    def on(self, value: bool) -> None:
        self.threshold.on = value

    def evaluate(self, value: Value, now: float, setpoint: Value) -> bool | None:
        x, sp = number(value), number(setpoint)
        if x is None or sp is None:
            return None
        d = x - sp
        if self.direction == "down":
            d = -d
        elif self.direction == "both":
            d = abs(d)
        return self.threshold.judge(d)


def build_check(rule: AlarmRule) -> Check | None:
    """The check of a value rule; None for stale and comm_loss (timed by the stage)."""
    kind = rule.kind
    if kind in ("high_high", "high", "low", "low_low"):
        assert rule.limit is not None
        return LimitCheck(rule.limit, rule.deadband, upper=kind.startswith("high"))
    if kind == "rate_of_change":
        assert rule.limit is not None and rule.period_s is not None
        return RateCheck(rule.limit, rule.period_s, rule.deadband, rule.direction or "both")
    if kind == "state":
        assert rule.value is not None
        values = rule.value if isinstance(rule.value, tuple) else (rule.value,)
        return StateCheck(values)
    if kind == "deviation":
        assert rule.limit is not None
        return DeviationCheck(rule.limit, rule.deadband, rule.direction or "both")
    return None

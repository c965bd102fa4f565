"""Simulated meter histories and a plain reference computation for the energy tests.

A history is what a meter's register showed at each delivered poll, built from a known
consumption: `counted[k]` is the energy a correct derivation must count up to sample k
(the true consumption, less the one segment that spans a meter replacement, which the
rules leave uncounted). The reference works on that list only, with no wrap or reset
logic, no minute grid and no accumulator state: the counter interpolated linearly at a
time between the delivered samples around it, and differences of that.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """UTC ms of a Shanghai wall-clock time."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)


@dataclass
class History:
    """Delivered samples of one counter register."""

    ts: list[int] = field(default_factory=list)  # ms, delivered polls only
    register: list[float] = field(default_factory=list)  # what the meter showed
    counted: list[float] = field(default_factory=list)  # what must be counted up to here

    def counted_at(self, t: int) -> float:
        """Counted energy interpolated at time t (inside the history)."""
        i = bisect.bisect_right(self.ts, t)
        if i == 0 or (i == len(self.ts) and t > self.ts[-1]):
            raise ValueError("outside the history")
        if self.ts[i - 1] == t:
            return self.counted[i - 1]
        t0, t1 = self.ts[i - 1], self.ts[i]
        c0, c1 = self.counted[i - 1], self.counted[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    def energy(self, a: int, b: int) -> float:
        """Reference energy in [a, b)."""
        return self.counted_at(b) - self.counted_at(a)

    def readings(self, a: int, b: int) -> int:
        """Delivered samples with a <= ts < b."""
        return bisect.bisect_left(self.ts, b) - bisect.bisect_left(self.ts, a)


def simulate(
    *,
    start_ms: int,
    end_ms: int,
    poll_s: float,
    seed: int,
    start_register: float = 1000.0,
    power_kw: Callable[[int], float] = lambda t: 50.0,
    modulus: float | None = None,
    resolution: float = 0.0,
    drop_share: float = 0.0,
    outages: tuple[tuple[int, int], ...] = (),
    replace_at: int | None = None,
    new_meter_start: float = 3.0,
) -> History:
    """Poll a meter every `poll_s` (jittered within a second), with faults.

    The register integrates `power_kw` (constant between polls), wraps at `modulus`,
    rounds down to `resolution`; polls are dropped at random (`drop_share`) and in the
    `outages`; at `replace_at` a new meter reading `new_meter_start` takes over.
    """
    rng = random.Random(seed)
    h = History()
    true_total = 0.0  # consumption since start, kWh
    replaced = False
    offset = 0.0  # register = start + true - offset (replacement moves it)
    last_t: int | None = None
    last_counted = 0.0
    last_true_delivered = 0.0
    pending_reset = False
    t = start_ms + rng.randrange(0, 1000)
    k = 0
    while t < end_ms:
        if last_t is not None:
            true_total += power_kw(last_t) * (t - last_t) / 3_600_000
        last_t = t
        if replace_at is not None and not replaced and t >= replace_at:
            replaced = True
            offset = start_register + true_total - new_meter_start
            pending_reset = True
        delivered = rng.random() >= drop_share and not any(a <= t < b for a, b in outages)
        if delivered:
            raw = start_register + true_total - offset
            if resolution:
                raw = int(raw / resolution + 1e-9) * resolution
            if modulus is not None:
                raw = raw % modulus
            if h.ts:
                if pending_reset:
                    counted = last_counted  # the segment spanning the replacement: not counted
                    pending_reset = False
                else:
                    # Quantised registers count what they show; the truth rounds the same way.
                    shown = start_register + true_total - offset
                    before = start_register + last_true_delivered - offset
                    if resolution:
                        shown = int(shown / resolution + 1e-9) * resolution
                        before = int(before / resolution + 1e-9) * resolution
                    counted = last_counted + (shown - before)
            else:
                counted = 0.0
                pending_reset = False
            h.ts.append(t)
            h.register.append(raw)
            h.counted.append(counted)
            last_counted = counted
            last_true_delivered = true_total
        k += 1
        t = start_ms + int(k * poll_s * 1000) + rng.randrange(0, 1000)
    return h

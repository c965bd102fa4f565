"""One energy counter's readings turned into energy per wall-clock minute.

    good readings (ts, register value)  ──►  segments between successive readings
        each segment: normal rise | wrap (rise + modulus) | reset/replacement (not counted)
    minute boundaries B = k x 60 s (UTC; every time zone in use is a whole number of minutes)
        U(B) = U(t0) + dU x (B - t0) / (t1 - t0)     the counter interpolated at B
    one `Minute` per boundary pair: energy U(B+1) - U(B), readings in it, flags

Everything the stage derives (interval energy, TOU splits, demand, totals) is a sum of
minutes, so it all rests on one rule for wrap, reset and missing readings:

- A drop is a wrap when the register has a modulus (from its width and resolution, or a
  rollover value) and the wrapped rise is plausible: what `max_rate` allows over the gap
  when it is known, else at most a tenth of the modulus. Anything else that goes down
  is a reset or a meter replacement: the segment counts nothing and the minutes it
  touches are flagged `reset`, never a negative or huge value.
- A rise beyond `max_rate` over the gap is a jump (e.g. a replacement meter that starts
  higher): flagged `reset` as well, not counted.
- Missed readings leave a longer segment; the counter is interpolated linearly at the
  boundaries inside it (constant power over the gap) and the minutes it spans are
  flagged `gap`.

A minute is complete once a reading at or after its end arrived; minutes before the first
reading are not produced. Readings must come in time order; a reading not later than the
previous one is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
WRAP_SHARE = 0.1  # a wrapped rise above this share of the modulus is not believed


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How to read one counter register."""

    modulus: float | None = None  # wraps at this value (engineering units); None: never
    max_rate: float | None = None  # units per hour; None: any rise is believed
    factor: float = 1.0  # engineering unit -> the kind's canonical unit (Wh -> kWh: 0.001)
    gap_ms: int = 2_500  # readings further apart than this leave a gap (2.5 polls)


@dataclass(frozen=True, slots=True)
class Minute:
    """Energy of one wall-clock minute [start_ms, start_ms + 60 s), canonical unit."""

    start_ms: int
    energy: float
    readings: int  # good readings with a timestamp inside the minute
    gap: bool = False  # interpolated across missed readings
    reset: bool = False  # touches a reset or replacement: that part is not counted
    wrap: bool = False  # the counter wrapped inside this minute


class CounterTrack:
    """Feeds on one counter's good readings; returns the minutes each reading completes."""

    __slots__ = (
        "_boundary",
        "_count",
        "_flags",
        "_skip",
        "_t0",
        "_u0",
        "_u_boundary",
        "_v0",
        "resets",
        "spec",
        "wraps",
    )

    def __init__(self, spec: CounterSpec) -> None:
        self.spec = spec
        self._t0: int | None = None  # last reading
        self._v0 = 0.0
        self._u0 = 0.0  # unwrapped, counted energy at _t0 (canonical unit)
        self._boundary = 0  # end of the minute in progress
        self._u_boundary = 0.0  # U at the start of the minute in progress
        self._count = 0
        self._flags = 0  # bit 1 gap, 2 reset, 4 wrap of the minute in progress
        self._skip = False  # the minute in progress began before the first reading
        self.wraps = 0
        self.resets = 0

    @property
    def last_ms(self) -> int | None:
        """Time of the last reading taken."""
        return self._t0

    def add(self, ts_ms: int, value: float) -> list[Minute]:
        """Take one good reading; the minutes it completes, oldest first."""
        t0 = self._t0
        if t0 is None:
            self._t0, self._v0 = ts_ms, value
            # The first whole minute starts at the next boundary (or here, when on one).
            start = -(-ts_ms // MINUTE_MS) * MINUTE_MS
            self._u_boundary = 0.0
            if start == ts_ms:
                self._boundary, self._count, self._skip = start + MINUTE_MS, 1, False
            else:  # the partial minute before `start` only yields U(start)
                self._boundary, self._count, self._skip = start, 0, True
            return []
        if ts_ms <= t0:
            return []
        spec = self.spec
        du, flags = self._segment(t0, ts_ms, value)
        if ts_ms - t0 > spec.gap_ms:
            flags |= 1
        out: list[Minute] = []
        boundary = self._boundary
        u0 = self._u0
        span = ts_ms - t0
        while boundary <= ts_ms:
            u_b = u0 + du * (boundary - t0) / span
            f = self._flags | flags
            if self._skip:
                self._skip = False
            else:
                out.append(
                    Minute(
                        boundary - MINUTE_MS,
                        u_b - self._u_boundary,
                        self._count,
                        gap=bool(f & 1),
                        reset=bool(f & 2),
                        wrap=bool(f & 4),
                    )
                )
            self._u_boundary = u_b
            self._count = 0
            self._flags = 0
            boundary += MINUTE_MS
        # The segment's flags belong to the minute holding ts_ms when the segment reaches
        # into it (always, unless the reading sits exactly on the boundary).
        if ts_ms > boundary - MINUTE_MS:
            self._flags |= flags
        self._boundary = boundary
        self._count += 1
        self._t0, self._v0, self._u0 = ts_ms, value, u0 + du
        return out

    def _segment(self, t0: int, t1: int, value: float) -> tuple[float, int]:
        """Counted rise from the last reading to `value` (canonical unit) and its flags."""
        spec = self.spec
        delta = value - self._v0
        hours = (t1 - t0) / 3_600_000
        allowed = None if spec.max_rate is None else spec.max_rate * hours * 1.5
        if delta >= 0:
            if allowed is not None and delta > allowed:
                self.resets += 1
                return 0.0, 2
            return delta * spec.factor, 0
        modulus = spec.modulus
        if modulus is not None:
            wrapped = delta + modulus
            # Without a rate limit only a small wrapped rise is believed; with one, any
            # rise the limit allows over the gap (a long outage may span a wrap).
            if wrapped <= allowed if allowed is not None else wrapped <= modulus * WRAP_SHARE:
                self.wraps += 1
                return wrapped * spec.factor, 4
        self.resets += 1
        return 0.0, 2

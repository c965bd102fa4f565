"""Poll slots: devices' phases spread over an interval in steps of `polling.slot_s`.

Each device polls at fixed phase (poller.py). Spread exactly evenly, 50 devices at 1 s
polls start 20 ms apart, and each start, answer and broker acknowledgement wakes the
gateway on its own: at 1 s polls those wake-ups, not the decoding, are most of the CPU
(on the benchmark VM a wake-up from idle is charged 100-350 µs, a poll's decode and
encode is less). Rounded down to multiples of the slot and started on the same multiples
of the loop's clock, the devices of one slot are asked in one wake-up, their answers
are committed in one transaction and go to the broker in one write, and the slots still
spread the site over the interval (10 slots a second by default).

A slot holds at most MAX_SLOT_DEVICES devices of one interval: asking a device costs the
loop ~80 µs (a send on loopback carries the receiver's TCP work too), so 50 devices in one
slot started the last 4 ms late. A larger site halves the slot (0.05, 0.025 ...) until its
devices fit; the halves keep the multiples of the full slot, so wake-ups still line up.

Only devices with a line of their own take a slot: units sharing a serial bus ask one
after another anyway, so their exact phases keep each on time. A device whose interval is
not longer than the slot keeps its exact phase too.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from drivers.config_numbers import Seconds

DEFAULT_SLOT_S = 0.1
MAX_SLOT_DEVICES = 16
MIN_SLOT_S = 0.001


class PollingConfig(BaseModel):
    """The `polling:` block of a site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 0: phases spread exactly evenly, every device waking the gateway on its own.
    slot_s: Annotated[Seconds, Field(ge=0.0, le=60.0)] = DEFAULT_SLOT_S


def slot_width(devices: int, interval_s: float, slot_s: float) -> float:
    """The slot for `devices` polled every `interval_s`: `slot_s`, halved until the
    interval's slots hold at most MAX_SLOT_DEVICES each (not below MIN_SLOT_S)."""
    width = slot_s
    while width / 2 >= MIN_SLOT_S and devices * width > MAX_SLOT_DEVICES * interval_s:
        width /= 2
    return width


def slotted_phase(phase_s: float, interval_s: float, slot_s: float) -> float:
    """The phase rounded down to a multiple of the slot (unchanged without a slot)."""
    if slot_s <= 0.0 or interval_s <= slot_s:
        return phase_s
    return math.floor(phase_s / slot_s + 1e-9) * slot_s


def slot_start(now: float, slot_s: float) -> float:
    """Where a line's tick 0 (before its phase) goes: the next multiple of the slot on the
    loop's clock, so lines started apart (a reload, say) still share slots."""
    if slot_s <= 0.0:
        return now
    return math.ceil(now / slot_s - 1e-9) * slot_s

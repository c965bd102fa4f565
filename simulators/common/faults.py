"""Fault switches of one simulated device, changeable while it runs.

none       answer normally
no_answer  drop every request silently (the client times out)
slow       answer correctly after delay_s (later answers queue behind it, in order)
exception  answer every request with exception `code` (default 04, device failure)
intermittent  answer every other request with exception `code` (the first, the third, ...):
           e.g. code 06, a device often busy
drop       TCP: close the connection on the next request; serial: stay silent
corrupt    answer with a broken frame: RTU bad CRC; TCP a byte count that disagrees
           with the data (reads) or a garbled MBAP length (other answers)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_DELAY_S = 3600.0


class FaultKind(enum.StrEnum):
    """What a device does wrong."""

    NONE = "none"
    NO_ANSWER = "no_answer"
    SLOW = "slow"
    EXCEPTION = "exception"
    DROP = "drop"
    CORRUPT = "corrupt"
    INTERMITTENT = "intermittent"


@dataclass(slots=True)
class Faults:
    """The current fault of one device; `set` validates and logs a change once."""

    device: str = ""
    kind: FaultKind = FaultKind.NONE
    delay_s: float = 1.0
    code: int = 4
    changes: int = field(default=0, compare=False)

    def set(
        self,
        kind: FaultKind | str,
        *,
        delay_s: float | None = None,
        code: int | None = None,
    ) -> None:
        """Switch to a fault; raises ValueError for an unknown kind, delay or code."""
        new_kind = FaultKind(kind)
        new_delay = self.delay_s if delay_s is None else float(delay_s)
        new_code = self.code if code is None else int(code)
        if not 0.0 <= new_delay <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be within 0..{MAX_DELAY_S:g}, got {new_delay}")
        if not 1 <= new_code <= 255:
            raise ValueError(f"exception code must be within 1..255, got {new_code}")
        before = (self.kind, self.delay_s, self.code)
        self.kind, self.delay_s, self.code = new_kind, new_delay, new_code
        if before != (new_kind, new_delay, new_code):
            self.changes += 1
            level = logging.INFO if new_kind is FaultKind.NONE else logging.WARNING
            log.log(level, "simulated device %s: fault %s", self.device, self.describe())

    def clear(self) -> None:
        """Back to normal answers."""
        self.set(FaultKind.NONE)

    def describe(self) -> str:
        """Short text such as 'slow 2s' or 'exception 02'."""
        if self.kind is FaultKind.SLOW:
            return f"slow {self.delay_s:g}s"
        if self.kind is FaultKind.EXCEPTION:
            return f"exception {self.code:02d}"
        if self.kind is FaultKind.INTERMITTENT:
            return f"intermittent exception {self.code:02d}"
        return self.kind.value

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the control API."""
        return {"fault": self.kind.value, "delay_s": self.delay_s, "code": self.code}

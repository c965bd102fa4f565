"""What a simulated device does with each request, and the counts of what became of them:
shared by every protocol's simulators and the control API."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Action(enum.IntEnum):
    """What the transport does with a request's answer."""

    SEND = 0
    SILENT = 1
    CLOSE = 2
    CORRUPT = 3


@dataclass(slots=True)
class RequestCounters:
    """Requests addressed to one device and what became of them."""

    requests: int = 0
    answered: int = 0  # frames sent, exceptions and delayed or corrupted ones included
    exceptions: int = 0
    ignored: int = 0  # left unanswered on purpose (no_answer, drop)
    writes: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return asdict(self)

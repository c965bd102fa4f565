"""Where the ingest writes: the store interface both stores implement, and its errors.

A store gets whole batches of validated data messages. It raises `StoreUnavailable` for
anything worth retrying (no connection, timeout, HTTP 5xx or 429) and `StoreRejected` for
an answer that retrying cannot change (HTTP 4xx: bad token, unknown bucket, schema
conflict). The ingest service owns the retry loop, so a batch is acknowledged to the
broker only after `write` returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.ingest.alarms import AlarmMessage
from edge_agent.ingest.audits import AuditMessage
from edge_agent.ingest.schema import DataMessage


class StoreUnavailable(Exception):
    """The store cannot take the batch now; try again later."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class StoreRejected(Exception):
    """The store refused the batch for good (HTTP 4xx): retrying will not help."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class StoreBatch:
    """Messages written together; `encoded` lets a store keep its rendering across retries."""

    messages: list[DataMessage] = field(default_factory=list)
    points: int = 0  # readings, plus one per alarm transition and per audit message
    alarms: list[AlarmMessage] = field(default_factory=list)  # transitions (ingest_alarms.py)
    audits: list[AuditMessage] = field(default_factory=list)  # write audits (ingest/audits.py)
    encoded: object = None


class PointStore(Protocol):
    """A destination for data messages."""

    @property
    def description(self) -> str:
        """Where it writes, for logs (no secrets)."""
        ...

    async def open(self) -> None:
        """Prepare clients or files; no data is written."""
        ...

    async def write(self, batch: StoreBatch) -> None:
        """Store every point of the batch; raises StoreUnavailable or StoreRejected."""
        ...

    async def close(self) -> None:
        """Release everything; idempotent."""
        ...

"""Alarm state across restarts: one SQLite file (WAL) next to the outbox.

    alarm    id -> the AlarmStatus as JSON           (active, acked, latched, shelving, ...)
    pending  seq -> a transition message, written in the same transaction as the state

A transition is handed to the outbox first (which only stages it and gives its `seq`),
then the state and the message are committed here together, then the outbox is flushed
and the pending row deleted. After a crash anywhere in between, `open()` finds the row:
if the outbox already holds `seq` (its next id is past it) the row is dropped, else the
message is sent again. So a transition is neither lost nor published twice, and a
restart never raises an alarm that was raised before it (the state says it is active).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from edge_agent.alarms.state import AlarmStatus
from edge_agent.delivery.sqlite_file import ALARMS, move_aside, open_checked

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm (id TEXT PRIMARY KEY, status BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY, suffix TEXT NOT NULL, device TEXT NOT NULL, doc BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A transition message committed with its state, maybe not yet in the outbox."""

    seq: int
    suffix: str
    device: str
    doc: bytes


class AlarmStore:
    """The SQLite file; every method runs on the agent's loop."""

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        self.path = path
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (or create) the file; a corrupt one of ours is moved aside and a new one
        started. DatabaseFileError when the file is not ours or cannot be written."""
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            aside = move_aside(self.path)
            log.error("alarm store %s is corrupt (%s); moved it to %s", self.path, exc, aside)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        return open_checked(self.path, ALARMS, synchronous=self.synchronous, schema=_SCHEMA)

    def close(self) -> None:
        """Close; idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("alarm store is not open")
        return self._db

    def load(self) -> dict[str, AlarmStatus]:
        """Every stored alarm's status by id."""
        return {
            alarm_id: AlarmStatus.from_dict(orjson.loads(status))
            for alarm_id, status in self._require().execute("SELECT id, status FROM alarm")
        }

    def pending(self) -> list[PendingMessage]:
        """Transition messages not known to be in the outbox, oldest first."""
        return [
            PendingMessage(*row)
            for row in self._require().execute(
                "SELECT seq, suffix, device, doc FROM pending ORDER BY seq"
            )
        ]

    def save(self, items: list[tuple[str, AlarmStatus, PendingMessage | None]]) -> None:
        """Commit alarms' statuses, with the messages of their transitions, in one transaction."""
        db = self._require()
        with _transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO alarm (id, status) VALUES (?, ?)",
                [(alarm_id, orjson.dumps(status.as_dict())) for alarm_id, status, _ in items],
            )
            db.executemany(
                "INSERT OR REPLACE INTO pending (seq, suffix, device, doc) VALUES (?, ?, ?, ?)",
                [(m.seq, m.suffix, m.device, m.doc) for _, _, m in items if m is not None],
            )

    def replace_pending(self, old_seq: int, message: PendingMessage) -> None:
        """A pending message was handed to the outbox again under a new seq."""
        db = self._require()
        with _transaction(db):
            db.execute("DELETE FROM pending WHERE seq = ?", (old_seq,))
            db.execute(
                "INSERT OR REPLACE INTO pending (seq, suffix, device, doc) VALUES (?, ?, ?, ?)",
                (message.seq, message.suffix, message.device, message.doc),
            )

    def done(self, up_to_seq: int) -> None:
        """The outbox holds every message up to `up_to_seq`: forget their pending rows."""
        self._require().execute("DELETE FROM pending WHERE seq <= ?", (up_to_seq,))

    def forget(self, alarm_ids: list[str]) -> None:
        """Drop alarms the config no longer has."""
        db = self._require()
        with _transaction(db):
            db.executemany("DELETE FROM alarm WHERE id = ?", [(i,) for i in alarm_ids])


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")  # a full disk fails here in WAL mode: roll back, not stay open
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise

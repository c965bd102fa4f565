"""The durable outbox: every message to the broker is a row here until the broker acks it.

    poll ─► encode (seq = next row id) ─► append ─► [flush: one transaction] ─► forwarder
                                                   rows deleted after PUBACK ◄─┘

SQLite in WAL mode, one writer (the agent's loop). A poll counts as collected once its row
is committed; the forwarder flushes at once when it is idle and within `flush_interval_s`
when busy (forwarder.py), so a SIGKILL loses only what was not yet committed (never a row
that exists, never an acknowledged one's successor).
With `synchronous: normal` a committed row survives a crash of the process; `full` makes
it survive a power cut too, at the price of an fsync per flush.

Row ids are the gateway's sequence numbers: AUTOINCREMENT never reuses an id, even after
the row is deleted, so `seq` rises by one per message across restarts. Only a new file
(after corruption) starts again at 1.

The outbox is bounded by bytes and by age. Overflow drops the oldest rows (default) or
thins old rows, keeping every Nth per device; each episode is logged once and counted.

A full disk (or any other write SQLite refuses: I/O error, a file system remounted
read-only) is an episode too: each flush tries again, and the messages of a flush that
cannot be committed are dropped and counted (`disk_full`, `dropped`), so the gap in `seq`
is exactly that count. What is stored stays and is still sent; acknowledged deletions wait
for the next flush that can write (in WAL mode a delete needs room too). One line is
logged when the episode starts, one when a flush stores again, with the count.
Once a second a passive checkpoint copies the WAL into the database, so the next writes
reuse the WAL's space instead of growing it: SQLite's own checkpoint waits for 4 MiB of
WAL, which on a nearly full disk is the disk.

A corrupt file of ours is moved aside and a new one started; a file that is not ours is
never touched (sqlite_file.py).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.config_numbers import Number, Seconds, Tick, Whole
from edge_agent.delivery.sqlite_file import OUTBOX, DatabaseFileError, move_aside, open_checked

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device TEXT NOT NULL,
    readings INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    thinned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    part BLOB NOT NULL,
    readings INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL
);
"""


class OutboxConfig(BaseModel):
    """The `outbox:` block of a site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("var/outbox.sqlite")  # relative paths start at the site file's folder
    max_bytes: Annotated[Whole, Field(ge=65536)] = 256 * 1024 * 1024
    max_age_s: Annotated[Seconds, Field(gt=0.0)] = 7 * 86400.0
    overflow: Literal["drop_oldest", "thin"] = "drop_oldest"
    thin_keep_every: Annotated[Whole, Field(ge=2, le=1000)] = 10
    synchronous: Literal["normal", "full"] = "normal"
    flush_interval_s: Annotated[Tick, Field(le=5.0)] = 0.02
    replay_max_per_s: Annotated[Number, Field(ge=0.0)] = 0.0  # 0: as fast as acks come back


@dataclass(frozen=True, slots=True)
class Row:
    """One stored message."""

    id: int
    topic: str
    payload: bytes
    device: str
    readings: int
    created_ms: int


@dataclass(slots=True)
class OutboxStats:
    """Depth and counters, for the log, the live view and the metrics endpoint."""

    messages: int = 0
    readings: int = 0
    bytes: int = 0
    oldest_created_ms: int | None = None
    appended: int = 0
    deleted: int = 0  # acknowledged and removed
    dropped: int = 0  # messages removed by the overflow policy, expiry or a full disk
    dropped_readings: int = 0
    expired: int = 0
    thinned: int = 0
    disk_full: int = 0  # messages that could not be stored
    disk_full_readings: int = 0
    disk_full_since_ms: int | None = None  # the episode going on now (None: storing works)
    corrupt_files: int = 0

    def oldest_age_s(self, now_ms: int | None = None) -> float | None:
        """Age of the oldest stored message."""
        if self.oldest_created_ms is None:
            return None
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return max(0.0, (now_ms - self.oldest_created_ms) / 1000)


@dataclass(slots=True)
class _Episode:
    """Logs a trouble once when it starts and once when it ends."""

    what: str
    active: bool = False
    count: int = 0

    def hit(self, n: int, detail: str) -> None:
        self.count += n
        if not self.active:
            self.active = True
            log.warning("outbox: %s (%s)", self.what, detail)

    def clear(self) -> None:
        if self.active:
            log.warning("outbox: %s is over; %d messages affected", self.what, self.count)
        self.active = False
        self.count = 0


@dataclass(slots=True)
class _Pending:
    rows: list[tuple[int, str, bytes, str, int, int]] = field(default_factory=list)
    holds: list[tuple[int, str, str, bytes, int, int]] = field(default_factory=list)
    releases: list[int] = field(default_factory=list)
    bytes: int = 0  # of the rows (after the annotations that name the type `bytes`)


@dataclass(frozen=True, slots=True)
class HeldPart:
    """One poll of a batch still being filled (batching.py), kept like a message."""

    id: int
    device: str
    topic: str
    part: bytes
    readings: int
    ts_ms: int


class Outbox:
    """The SQLite store behind the forwarder; every method runs on the agent's loop."""

    def __init__(self, path: Path, config: OutboxConfig) -> None:
        self.path = path
        self.config = config
        self.stats = OutboxStats()
        self._db: sqlite3.Connection | None = None
        self._next_id = 1
        self._next_hold = 1
        self._pending = _Pending()
        self._acked: list[int] = []
        self._counted: set[int] = set()  # acked ids already taken off the depth (ack sizes)
        self._oldest_id: int | None = None  # the row oldest_created_ms is of, when known
        self._overflow = _Episode("over its size limit, applying " + config.overflow)
        self._full_from = (0, 0)  # disk_full and disk_full_readings when the episode began
        self._checkpoint_at = 0.0
        self._replacing = False  # a corrupt file was closed and its replacement failed

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file; a corrupt file of ours is moved aside and replaced.
        DatabaseFileError when the file is not ours or cannot be written."""
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._db = self._connect()
        self._load_stats()
        if self.stats.messages:
            log.info(
                "outbox %s: %d messages (%d readings, %d bytes) waiting from before",
                self.path,
                self.stats.messages,
                self.stats.readings,
                self.stats.bytes,
            )

    def _connect(self) -> sqlite3.Connection:
        return open_checked(self.path, OUTBOX, synchronous=self.config.synchronous, schema=_SCHEMA)

    def _move_aside(self, exc: Exception) -> None:
        aside = move_aside(self.path)
        self.stats.corrupt_files += 1
        log.error(
            "outbox %s is corrupt (%s); moved it to %s and started a new one",
            self.path,
            exc,
            aside,
        )

    def _load_stats(self) -> None:
        db = self._require()
        messages, readings, size, oldest = db.execute(
            "SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(length(payload)), 0), "
            "min(created_ms) FROM outbox"
        ).fetchone()
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        s = self.stats
        s.messages, s.readings, s.bytes, s.oldest_created_ms = messages, readings, size, oldest
        self._oldest_id = None  # unknown: the next deletion looks it up
        self._next_id = (row[0] if row else 0) + 1
        # max: after a corrupt file, ids already handed out must not come again.
        stored = db.execute("SELECT coalesce(max(id), 0) + 1 FROM held").fetchone()[0]
        self._next_hold = max(self._next_hold, stored)

    def close(self) -> None:
        """Commit what is pending and close; idempotent."""
        if self._db is None:
            return
        self.flush()
        if self._db is not None:  # None: a corrupt file could not be replaced
            self._db.close()
        self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    # -- writing -----------------------------------------------------------------------------

    def reserve_id(self) -> int:
        """The id (and sequence number) of the next appended message."""
        return self._next_id

    def first_unflushed_id(self) -> int:
        """The lowest id not committed yet (staged, or the next one)."""
        rows = self._pending.rows
        return rows[0][0] if rows else self._next_id

    def append(
        self, msg_id: int, topic: str, payload: bytes, *, device: str, readings: int
    ) -> None:
        """Stage a message under the id `reserve_id` gave; stored at the next flush."""
        if msg_id != self._next_id:
            raise ValueError(f"append out of order: {msg_id}, expected {self._next_id}")
        self._next_id += 1
        self._pending.rows.append(
            (msg_id, topic, payload, device, readings, time.time_ns() // 1_000_000)
        )
        self._pending.bytes += len(payload)

    def hold(self, device: str, topic: str, part: bytes, *, readings: int, ts_ms: int) -> int:
        """Stage a poll that waits in a batch; stored at the next flush like a message, so
        a crash before its batch goes up does not lose it. Returns its id for `release`."""
        hold_id = self._next_hold
        self._next_hold += 1
        self._pending.holds.append((hold_id, device, topic, part, readings, ts_ms))
        return hold_id

    def release(self, hold_ids: list[int]) -> None:
        """The held polls went up in a message appended before this call: forget them in
        the same transaction that stores it."""
        self._pending.releases.extend(hold_ids)

    def held(self) -> list[HeldPart]:
        """Polls held when the agent last stopped (a crash), oldest first."""
        db = self._require()
        return [HeldPart(*r) for r in db.execute("SELECT * FROM held ORDER BY id")]

    def is_acked(self, msg_id: int) -> bool:
        """Whether the broker acknowledged the message and its deletion waits for a flush."""
        return msg_id in self._counted or msg_id in self._acked

    @property
    def staged(self) -> bool:
        """Whether messages or held polls wait for the next flush (not just deletions)."""
        pending = self._pending
        return bool(pending.rows or pending.holds or pending.releases)

    def ack(self, msg_id: int, *, readings: int | None = None, size: int | None = None) -> None:
        """The broker acknowledged the message: delete it at the next flush.

        With its readings and payload size the message leaves the depth (messages,
        readings, bytes) now, though its deletion may wait for the next insert."""
        self._acked.append(msg_id)
        if readings is not None and size is not None and msg_id not in self._counted:
            s = self.stats
            s.messages -= 1
            s.readings -= readings
            s.bytes -= size
            self._counted.add(msg_id)

    def flush(self) -> list[Row]:
        """Commit staged messages and deletions in one transaction; returns the new rows."""
        pending, self._pending = self._pending, _Pending()
        acked, self._acked = self._acked, []
        if not pending.rows and not acked and not pending.holds and not pending.releases:
            return []
        try:
            if self._replacing:
                self._reopen()
            stored = self._write(pending, acked)
        except sqlite3.OperationalError as exc:  # disk full, I/O error, read-only
            return self._not_stored(pending, acked, exc)
        except sqlite3.DatabaseError as exc:
            # The file went bad under us: start a new one and keep what we still hold.
            try:
                self._replace(exc)
                stored = self._write(pending, [])
            except (sqlite3.Error, OSError, DatabaseFileError) as again:
                return self._not_stored(pending, [], again)
        except DatabaseFileError as exc:
            return self._not_stored(pending, acked, exc)
        try:
            self._apply_limits()
            self._checkpoint()
        except sqlite3.OperationalError as exc:  # tried again after the next flush
            log.debug("outbox: limits or checkpoint not applied (%s)", exc)
        return stored

    def _checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._checkpoint_at >= CHECKPOINT_EVERY_S:
            self._checkpoint_at = now
            self._require().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _reopen(self) -> None:
        self._db = self._connect()
        self._load_stats()
        self._replacing = False

    def _replace(self, exc: Exception) -> None:
        self._counted.clear()  # the new file has none of the acked rows
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None
        self._replacing = True
        self._move_aside(exc)
        self._reopen()

    def _write(self, pending: _Pending, acked: list[int]) -> list[Row]:
        db = self._require()
        s = self.stats
        with _transaction(db):
            if acked:
                # RETURNING counts only rows that were still there (the overflow policy
                # may have dropped an in-flight one meanwhile).
                gone = db.execute(
                    f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(acked))}) "
                    "RETURNING id, readings, length(payload)",
                    acked,
                ).fetchall()
            if pending.rows:
                db.executemany(
                    "INSERT INTO outbox (id, topic, payload, device, readings, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    pending.rows,
                )
            if pending.holds:
                db.executemany("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?)", pending.holds)
            if pending.releases:
                db.executemany("DELETE FROM held WHERE id = ?", [(i,) for i in pending.releases])
        if acked:
            counted = self._counted
            for row_id, readings, size in gone:
                if row_id in counted:
                    counted.discard(row_id)  # taken off the depth at its ack
                else:
                    s.messages -= 1
                    s.readings -= readings
                    s.bytes -= size
            s.deleted += len(gone)
        if pending.rows:
            s.appended += len(pending.rows)
            s.messages += len(pending.rows)
            s.readings += sum(r[4] for r in pending.rows)
            s.bytes += pending.bytes
            if s.disk_full_since_ms is not None:
                self._storing_again()
        if acked and self._counted:
            # After the rows of this transaction are counted: the recount reads them too.
            self._uncount(acked)
        if s.messages == 0:
            s.oldest_created_ms = None
        elif pending.rows and s.messages == len(pending.rows) and not self._counted:
            # Only this transaction's rows are stored: at 1 s polls, the usual commit (the
            # previous poll's deletion and this poll's insert) needs no lookup.
            first = pending.rows[0]
            s.oldest_created_ms, self._oldest_id = first[5], first[0]
        elif s.oldest_created_ms is None or (acked and self._lost_oldest(gone)):
            s.oldest_created_ms = self._oldest()
        return [Row(*r) for r in pending.rows]

    def _uncount(self, acked: list[int]) -> None:
        """Acked rows that were no longer stored (the overflow policy or expiry dropped
        them in flight and counted them then) were taken off the depth twice: recount it
        from the file, which now holds no acked row."""
        missing = self._counted.intersection(acked)
        if not missing:
            return
        self._counted.difference_update(missing)
        s = self.stats
        s.messages, s.readings, s.bytes = (
            self._require()
            .execute(
                "SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(length(payload)), 0) "
                "FROM outbox"
            )
            .fetchone()
        )

    def _not_stored(self, pending: _Pending, acked: list[int], exc: Exception) -> list[Row]:
        """Nothing of this flush was committed: its messages are dropped and counted, its
        deletions wait for the next flush. Its held polls are still in their batches."""
        self._acked.extend(acked)
        self._pending.releases.extend(pending.releases)
        if not pending.rows:
            return []
        s = self.stats
        n, readings = len(pending.rows), sum(r[4] for r in pending.rows)
        s.disk_full += n
        s.disk_full_readings += readings
        s.dropped += n
        s.dropped_readings += readings
        if s.disk_full_since_ms is None:
            s.disk_full_since_ms = time.time_ns() // 1_000_000
            self._full_from = (s.disk_full - n, s.disk_full_readings - readings)
            log.warning(
                "outbox %s: %s, messages cannot be stored (%s); they are dropped and counted "
                "until a write succeeds",
                self.path,
                "disk full" if "full" in str(exc) else "cannot write",
                exc,
            )
        return []

    def _storing_again(self) -> None:
        s = self.stats
        assert s.disk_full_since_ms is not None
        seconds = (time.time_ns() // 1_000_000 - s.disk_full_since_ms) / 1000
        s.disk_full_since_ms = None
        log.warning(
            "outbox %s: storing again after %.1f s; %d messages (%d readings) were dropped",
            self.path,
            seconds,
            s.disk_full - self._full_from[0],
            s.disk_full_readings - self._full_from[1],
        )

    # -- limits ------------------------------------------------------------------------------

    def _apply_limits(self) -> None:
        s, cfg = self.stats, self.config
        if s.oldest_created_ms is not None:
            cutoff = time.time_ns() // 1_000_000 - int(cfg.max_age_s * 1000)
            if s.oldest_created_ms < cutoff:
                self._delete_where("created_ms < ?", (cutoff,), expired=True)
        if s.bytes <= cfg.max_bytes:
            if s.bytes < cfg.max_bytes // 2:  # hysteresis: one episode per real overflow
                self._overflow.clear()
            return
        target = int(cfg.max_bytes * 0.9)
        before = s.messages
        if cfg.overflow == "thin":
            self._thin(target)
        while s.bytes > target and s.messages:
            self._delete_oldest(max(1, s.messages // 20), reason="size limit")
        self._overflow.hit(before - s.messages, f"limit {cfg.max_bytes} bytes")

    def _thin(self, target: int) -> None:
        """Keep every Nth message per device among the oldest not yet thinned."""
        db = self._require()
        n = self.config.thin_keep_every
        upto = db.execute(
            "SELECT id FROM outbox WHERE thinned = 0 ORDER BY id "
            "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM outbox WHERE thinned = 0)"
        ).fetchone()
        if upto is None:
            return
        with _transaction(db):
            removed = self._delete_where(
                "id IN (SELECT id FROM (SELECT id, row_number() OVER "
                "(PARTITION BY device ORDER BY id) AS rn FROM outbox "
                "WHERE thinned = 0 AND id <= ?) WHERE rn % ? != 1)",
                (upto[0], n),
                in_transaction=True,
            )
            db.execute("UPDATE outbox SET thinned = 1 WHERE id <= ?", (upto[0],))
        self.stats.thinned += removed
        if self.stats.bytes > target:
            log.debug("outbox: thinning left %d bytes over target", self.stats.bytes - target)

    def _delete_oldest(self, count: int, *, reason: str) -> None:
        self._delete_where("id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (count,))
        log.debug("outbox: dropped the oldest %d messages (%s)", count, reason)

    def _delete_where(
        self,
        where: str,
        params: tuple[object, ...],
        *,
        expired: bool = False,
        in_transaction: bool = False,
    ) -> int:
        db = self._require()
        s = self.stats
        gone = db.execute(
            f"SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(length(payload)), 0) "
            f"FROM outbox WHERE {where}",
            params,
        ).fetchone()
        if not gone[0]:
            return 0
        if in_transaction:
            db.execute(f"DELETE FROM outbox WHERE {where}", params)
        else:
            with _transaction(db):
                db.execute(f"DELETE FROM outbox WHERE {where}", params)
        s.messages -= gone[0]
        s.readings -= gone[1]
        s.bytes -= gone[2]
        s.dropped += gone[0]
        s.dropped_readings += gone[1]
        if expired:
            s.expired += gone[0]
        s.oldest_created_ms = self._oldest()
        return int(gone[0])

    def _oldest(self) -> int | None:
        # Ids rise with time, so the first row by id is the oldest: an index lookup.
        row = (
            self._require()
            .execute("SELECT id, created_ms FROM outbox ORDER BY id LIMIT 1")
            .fetchone()
        )
        self._oldest_id = None if row is None else int(row[0])
        return None if row is None else int(row[1])

    def _lost_oldest(self, gone: list[tuple[int, int, int]]) -> bool:
        """Whether these deleted rows took the oldest one with them (a query per
        deletion otherwise, at 1 s polls one in four of a poll's statements)."""
        oldest = self._oldest_id
        return oldest is None or any(row_id == oldest for row_id, _, _ in gone)

    # -- reading -----------------------------------------------------------------------------

    def rows_after(self, after_id: int, *, before_id: int, limit: int) -> list[Row]:
        """Stored rows with after_id < id < before_id, oldest first."""
        db = self._require()
        return [
            Row(*r)
            for r in db.execute(
                "SELECT id, topic, payload, device, readings, created_ms FROM outbox "
                "WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                (after_id, before_id, limit),
            )
        ]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (the connection is in autocommit)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")  # where a full disk shows in WAL mode: inside the try
    except BaseException:
        if db.in_transaction:  # SQLite already rolled back after some errors (disk full)
            db.execute("ROLLBACK")
        raise

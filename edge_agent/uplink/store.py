"""The uplink's SQLite file: interval history (>= 6 months) and one queue per endpoint.

One file beside the outbox (edge_agent/delivery/sqlite_file.py: WAL, checked at open, moved aside
if corrupt). A record enters the history and the queue of every endpoint that takes its
span (interval, day, month; manual entries go to all) in one transaction, so a crash
leaves either all or nothing. Queues are ordered by an autoincrement id; a row leaves its
queue only when that endpoint acknowledged it.

Every record has a key, `{site}/{gateway}/{device}/{counter}/{start}` (days and months:
`.../{counter}/{span}/{start}`), the same whenever it is sent again (a resend whose answer
was lost; an interval published again after a crash, see energy_state.py): the platform
keeps the last record of a key.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from edge_agent.delivery.sqlite_file import UPLINK, move_aside, open_checked
from edge_agent.uplink.config import UplinkConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    key TEXT PRIMARY KEY, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    record TEXT NOT NULL, manual INTEGER NOT NULL, recorded_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS history_start ON history (start_ms);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, key TEXT NOT NULL,
    record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS queue_endpoint ON queue (endpoint, id);
CREATE TABLE IF NOT EXISTS announce (
    id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
"""
DAY_MS = 86_400_000


@dataclass(frozen=True)
class IntervalRecord:
    """One interval value of one meter (or node) and counter, as the platform gets it."""

    site: str
    gateway: str
    device: str
    counter: str
    kind: str
    start: str  # local ISO 8601, as the energy stage writes it
    end: str
    start_ms: int
    end_ms: int
    value: float | None
    unit: str | None
    quality: str
    completeness: float | None
    flags: str = ""  # space separated: gap wrap reset partial
    manual: bool = False  # 手工填报
    span: str = "interval"  # interval, day (每日上传) or month (每月上传)
    tce: float | None = None  # standard coal of a day or month total (same table versions)

    @property
    def key(self) -> str:
        # Intervals keep the key they always had; a day or month starts where its first
        # interval does, so its key names the span.
        if self.span == "interval":
            return f"{self.site}/{self.gateway}/{self.device}/{self.counter}/{self.start}"
        return f"{self.site}/{self.gateway}/{self.device}/{self.counter}/{self.span}/{self.start}"

    def fields(self) -> dict[str, Any]:
        """Field name -> value (dataclasses.asdict deep-copies: 10x slower, measured)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson writes dataclasses natively

    @classmethod
    def from_json(cls, data: str | bytes) -> IntervalRecord:
        return cls(**orjson.loads(data))


FIELD_NAMES = tuple(f.name for f in fields(IntervalRecord))
CSV_COLUMNS = ["key", *FIELD_NAMES]


class UplinkStore:
    """History and queues in one SQLite file; use from one thread (the agent's loop)."""

    def __init__(
        self,
        path: Path,
        endpoints: Sequence[str],
        *,
        spans: Mapping[str, Collection[str]] | None = None,
        synchronous: str = "full",
    ) -> None:
        self.path = path
        self.endpoints = tuple(endpoints)
        # What each endpoint is sent (default: intervals); manual entries go to every one.
        spans = spans or {}
        self.spans = {e: set(spans.get(e, ("interval",))) for e in endpoints}
        try:
            self.db = open_checked(path, UPLINK, synchronous=synchronous, schema=SCHEMA)
        except sqlite3.DatabaseError:
            move_aside(path)
            self.db = open_checked(path, UPLINK, synchronous=synchronous, schema=SCHEMA)
        # Queue depths are kept in memory: /metrics renders in a worker thread, which must
        # not use this connection, and a count(*) grows with the backlog of an outage.
        self._depth: dict[str, int] = {}
        self._data_version = -1
        self._recount()

    @classmethod
    def of(cls, config: UplinkConfig, *, base: Path) -> UplinkStore:
        """The store of an `uplink:` block (its path relative to the site file `base`)."""
        return cls(
            base / config.path,
            [e.name for e in config.endpoints],
            spans={e.name: e.spans for e in config.endpoints},
        )

    def close(self) -> None:
        self.db.close()

    def add(self, records: Iterable[IntervalRecord]) -> int:
        """Keep in the history (the latest of a key wins) and queue for every endpoint
        that takes the record's span."""
        now_ms = time.time_ns() // 1_000_000
        n = 0
        queued = dict.fromkeys(self.endpoints, 0)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                body = r.to_json().decode()
                db.execute(
                    "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?)",
                    (r.key, r.start_ms, r.end_ms, body, int(r.manual), now_ms),
                )
                to = [e for e in self.endpoints if r.manual or r.span in self.spans[e]]
                db.executemany(
                    "INSERT INTO queue (endpoint, key, record) VALUES (?, ?, ?)",
                    [(e, r.key, body) for e in to],
                )
                for e in to:
                    queued[e] += 1
                if r.manual:  # to be published on MQTT by the agent (announcements())
                    db.execute("INSERT INTO announce (record) VALUES (?)", (body,))
                n += 1
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (full disk) may have rolled back
                db.execute("ROLLBACK")
            raise
        for e, k in queued.items():
            self._depth[e] = self._depth.get(e, 0) + k
        return n

    def pending(self, endpoint: str, limit: int) -> list[tuple[int, IntervalRecord]]:
        """The oldest `limit` unacknowledged records of an endpoint, in order."""
        rows = self.db.execute(
            "SELECT id, record FROM queue WHERE endpoint = ? ORDER BY id LIMIT ?",
            (endpoint, limit),
        ).fetchall()
        # After the select: whatever another process queued into this batch is then counted,
        # so the ack of the batch cannot take the depth below zero.
        if self.version() != self._data_version:
            self._recount()
        return [(int(i), IntervalRecord.from_json(body)) for i, body in rows]

    def ack(self, endpoint: str, upto_id: int) -> None:
        """Drop an endpoint's records up to and including `upto_id` (acknowledged)."""
        cur = self.db.execute(
            "DELETE FROM queue WHERE endpoint = ? AND id <= ?", (endpoint, upto_id)
        )
        self._depth[endpoint] = self._depth.get(endpoint, 0) - cur.rowcount

    def depth(self, endpoint: str) -> int:
        """Records of an endpoint not acknowledged yet; no I/O, safe from any thread.

        Records that another process (`edge-agent uplink manual`) queued count from the
        next `pending()` on; the agent looks for them every `idle_check_s`.
        """
        return self._depth.get(endpoint, 0)

    def version(self) -> int:
        """Changes only when another connection committed to the file, not for ours."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _recount(self) -> None:
        # The version first: a commit between the two reads is then counted again next time
        # rather than missed.
        self._data_version = self.version()
        rows = self.db.execute("SELECT endpoint, count(*) FROM queue GROUP BY endpoint")
        # Endpoints no longer configured keep their (frozen) depth: their rows are still here.
        self._depth = {**dict.fromkeys(self.endpoints, 0), **{str(e): int(n) for e, n in rows}}

    def announcements(self, limit: int) -> list[tuple[int, IntervalRecord]]:
        """Manual entries not yet published on MQTT by an agent, oldest first."""
        rows = self.db.execute(
            "SELECT id, record FROM announce ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), IntervalRecord.from_json(body)) for i, body in rows]

    def announced(self, upto_id: int) -> None:
        """The entries up to `upto_id` are in the agent's outbox."""
        self.db.execute("DELETE FROM announce WHERE id <= ?", (upto_id,))

    def prune(self, days: int, now_ms: int | None = None) -> int:
        """Delete history older than `days` (queues are never pruned: resend until acked)."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        cur = self.db.execute("DELETE FROM history WHERE end_ms < ?", (now - days * DAY_MS,))
        return cur.rowcount

    def history(
        self, start_ms: int, end_ms: int, *, manual_only: bool = False
    ) -> list[IntervalRecord]:
        """Records whose interval starts in [start_ms, end_ms), by start then key
        (`manual_only`: the 手工填报 entries, without decoding the measured ones)."""
        rows = self.db.execute(
            "SELECT record FROM history WHERE start_ms >= ? AND start_ms < ? "
            + ("AND manual = 1 " if manual_only else "")
            + "ORDER BY start_ms, key",
            (start_ms, end_ms),
        ).fetchall()
        return [IntervalRecord.from_json(body) for (body,) in rows]

    def export_csv(self, out: Path, start_ms: int, end_ms: int) -> int:
        """Write the history of a period as CSV (UTF-8 with BOM, for spreadsheets)."""
        records = self.history(start_ms, end_ms)
        with out.open("w", newline="", encoding="utf-8-sig") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for r in records:
                row: dict[str, Any] = {"key": r.key, **r.fields()}
                row["manual"] = int(r.manual)
                writer.writerow(row)
        return len(records)

"""The embedded store: readings in one SQLite file (WAL), when no time-series server is set.

Later capabilities (reports, dashboards) read it with plain SQL, through the `points` view:

    series    id, site, gateway, device, point, unit ('' when none), profile
              UNIQUE (site, gateway, device, point, unit)
    reasons   id, text UNIQUE                  -- each distinct reason text once
    readings  series, ts_ms, value REAL, text TEXT, quality INTEGER, reason INTEGER
              PRIMARY KEY (series, ts_ms)      -- WITHOUT ROWID
    points    (view) site, gateway, device, point, unit, profile, ts_ms, value, text,
              quality ('good'|'uncertain'|'bad'), reason

    alarm_transitions  one row per alarm transition (ingest_alarms.py), every field of
              the message incl. message, operator, comment, reason; value REAL or
              text TEXT; PRIMARY KEY (site, gateway, alarm_id, ts_ms)  -- WITHOUT ROWID
    alarm_current (view) the latest transition of each alarm: its state now

    command_audit  one row per write audit message (ingest/audits.py), every field:
              event 'request'|'result', request id, point, value/text (asked),
              old_value/old_text, new_value/new_text (read back), who, result, code,
              reason, received_ms, executed_ms; PRIMARY KEY (site, gateway, seq, ts_ms)

Same schema decisions as the time-series store (ingest_schema): one series per point,
`value` only for good and uncertain points (numbers and booleans as 0/1), quality 0/1/2.
Unlike VictoriaMetrics it keeps string values (`text`) and the full reason text.
Writing the same series and timestamp again replaces the row: a replayed or redelivered
reading leaves one row. A reading's `ts_ms` is its message's, or the point's own when the
message gave it one (a value stamped at its source, OPC UA).

SQLite calls run on one thread of their own, so the event loop keeps receiving while a
batch is written; one transaction per batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.delivery.sqlite_file import STORE, DatabaseFileError, create_private, make_private
from edge_agent.ingest.alarms import AlarmMessage
from edge_agent.ingest.audits import AuditMessage, stored_value
from edge_agent.ingest.schema import DataMessage, Source
from edge_agent.ingest.store import StoreBatch, StoreUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT '',
    profile TEXT,
    UNIQUE (site, gateway, device, point, unit)
);
CREATE TABLE IF NOT EXISTS reasons (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS readings (
    series INTEGER NOT NULL REFERENCES series (id),
    ts_ms INTEGER NOT NULL,
    value REAL,
    text TEXT,
    quality INTEGER NOT NULL,
    reason INTEGER REFERENCES reasons (id),
    -- Time first: a batch of live readings lands at the end of the tree (a few pages per
    -- commit) instead of one page per series; queries name a period anyway.
    PRIMARY KEY (ts_ms, series)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS points AS
    SELECT s.site, s.gateway, s.device, s.point, NULLIF(s.unit, '') AS unit, s.profile,
           r.ts_ms, r.value, r.text,
           CASE r.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
           x.text AS reason
    FROM readings r JOIN series s ON s.id = r.series LEFT JOIN reasons x ON x.id = r.reason;
CREATE TABLE IF NOT EXISTS alarm_transitions (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    device TEXT NOT NULL,
    point TEXT,
    alarm TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    transition INTEGER NOT NULL,
    event TEXT NOT NULL,
    previous TEXT NOT NULL,
    state TEXT NOT NULL,
    active INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    latched INTEGER NOT NULL,
    value REAL,
    text TEXT,
    unit TEXT,
    quality TEXT NOT NULL,
    message TEXT NOT NULL,
    operator TEXT,
    comment TEXT,
    reason TEXT,
    historical INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, alarm_id, ts_ms)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS alarm_current AS
    SELECT * FROM (
        SELECT t.*, row_number() OVER (
            PARTITION BY site, gateway, alarm_id ORDER BY ts_ms DESC, seq DESC) AS latest
        FROM alarm_transitions t)
    WHERE latest = 1;
CREATE TABLE IF NOT EXISTS command_audit (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    device TEXT NOT NULL,
    event TEXT NOT NULL,
    request_id TEXT NOT NULL,
    point TEXT NOT NULL,
    value REAL,
    text TEXT,
    who TEXT,
    received_ms INTEGER NOT NULL,
    result TEXT,
    code TEXT,
    reason TEXT,
    old_value REAL,
    old_text TEXT,
    new_value REAL,
    new_text TEXT,
    executed_ms INTEGER,
    historical INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, seq, ts_ms)
) WITHOUT ROWID;
"""
_INSERT_ALARM = "INSERT OR REPLACE INTO alarm_transitions VALUES (" + ", ".join("?" * 26) + ")"
_INSERT_AUDIT = "INSERT OR REPLACE INTO command_audit VALUES (" + ", ".join("?" * 21) + ")"

_INSERT = "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?, ?)"
Row = tuple[int, int, float | int | None, str | None, int, int | None]


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One row of the `points` view."""

    site: str
    gateway: str
    device: str
    point: str
    unit: str | None
    profile: str | None
    ts_ms: int
    value: float | None
    text: str | None
    quality: str
    reason: str | None


class EmbeddedStore:
    """Writes batches into a SQLite file."""

    def __init__(
        self, path: Path, *, profiles: Mapping[tuple[str, str, str], str] | None = None
    ) -> None:
        self.path = path
        self._profiles = dict(profiles or {})
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # (site, gateway, device) -> point -> (unit, series id): one tuple per message, not
        # per point. Not the topic: every meter's derived series share the energy topic.
        self._series: dict[tuple[str, str, str], dict[str, tuple[str | None, int]]] = {}
        self._reasons: dict[str, int] = {}
        self._known: dict[tuple[str, str, str, str, str], int] = {}  # every series in the file

    @property
    def description(self) -> str:
        """The file."""
        return f"SQLite {self.path}"

    async def open(self) -> None:
        """Create the file and the schema if needed."""
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        try:
            await self._run(self._open_sync)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        except DatabaseFileError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def write(self, batch: StoreBatch) -> None:
        """One transaction for the batch."""
        if self._executor is None:
            await self.open()
        try:
            await self._run(self.write_sync, batch.messages, batch.alarms, batch.audits)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O error: retry later
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the database and its thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self.close_sync)
        finally:
            executor.shutdown(wait=False)

    async def _run(self, fn: object, *args: object) -> None:
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]

    # -- on the store's thread (or directly, in benchmarks) ---------------------------------

    def _open_sync(self) -> None:
        # Made private (0600, -wal and -shm alike) and marked as ours, like every database
        # of the agent (sqlite_file.py).
        create_private(self.path, STORE, schema=SCHEMA)
        make_private(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a crash of us
        db.executescript(SCHEMA)
        self._known = _known_series(db)  # one query now instead of one per series later
        self._db = db

    def close_sync(self) -> None:
        """Close the database (on the calling thread)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def write_sync(
        self,
        messages: list[DataMessage],
        alarms: Sequence[AlarmMessage] = (),
        audits: Sequence[AuditMessage] = (),
    ) -> int:
        """Insert every point of `messages`, every transition of `alarms` and every audit
        message of `audits` in one transaction; returns rows written."""
        if self._db is None:
            self._open_sync()
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        try:
            rows = list(self._rows(db, messages))
            db.executemany(_INSERT, rows)
            if alarms:
                db.executemany(_INSERT_ALARM, map(_alarm_row, alarms))
            if audits:
                db.executemany(_INSERT_AUDIT, map(_audit_row, audits))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            # Ids handed out inside the rolled-back transaction are gone.
            self._series.clear()
            self._reasons.clear()
            self._known = _known_series(db)
            raise
        return len(rows) + len(alarms) + len(audits)

    def _rows(self, db: sqlite3.Connection, messages: list[DataMessage]) -> Iterator[Row]:
        series = self._series
        for message in messages:
            source = message.source
            key = (source.site, source.gateway, source.device)
            known = series.get(key)
            if known is None:
                known = series[key] = {}
            ts = message.ts_ms
            point_ts = message.point_ts
            for k, (name, value, unit, quality, reason) in enumerate(message.points):
                entry = known.get(name)
                if entry is None or entry[0] != unit:
                    entry = known[name] = (unit, self._series_id(db, source, name, unit or ""))
                if point_ts is not None:
                    ts = point_ts.get(k, message.ts_ms)
                if type(value) is str:
                    yield (entry[1], ts, None, value, quality, self._reason_id(db, reason))
                elif reason is None:
                    yield (entry[1], ts, value, None, quality, None)  # type: ignore[misc]
                else:
                    yield (entry[1], ts, value, None, quality, self._reason_id(db, reason))  # type: ignore[misc]

    def _series_id(self, db: sqlite3.Connection, source: Source, point: str, unit: str) -> int:
        names = (source.site, source.gateway, source.device, point, unit)
        sid = self._known.get(names)
        if sid is not None:
            return sid
        profile = self._profiles.get((source.site, source.gateway, source.device))
        try:
            (sid,) = db.execute(
                "INSERT INTO series (site, gateway, device, point, unit, profile) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (*names, profile),
            ).fetchone()
        except sqlite3.IntegrityError:  # another writer of the file created it meanwhile
            (sid,) = db.execute(
                "SELECT id FROM series "
                "WHERE site=? AND gateway=? AND device=? AND point=? AND unit=?",
                names,
            ).fetchone()
        self._known[names] = int(sid)
        return int(sid)

    def _reason_id(self, db: sqlite3.Connection, reason: str | None) -> int | None:
        if reason is None:
            return None
        rid = self._reasons.get(reason)
        if rid is None:
            db.execute("INSERT OR IGNORE INTO reasons (text) VALUES (?)", (reason,))
            (rid,) = db.execute("SELECT id FROM reasons WHERE text=?", (reason,)).fetchone()
            self._reasons[reason] = rid
        return int(rid)


def _alarm_row(m: AlarmMessage) -> tuple[object, ...]:
    s = m.source
    value, text = (None, m.value) if type(m.value) is str else (m.value, None)
    return (
        s.site, s.gateway, m.id, m.ts_ms, s.device, m.point, m.alarm, m.kind, m.priority,
        m.seq, m.transition, m.event, m.previous, m.state, m.active, m.acked, m.latched,
        value, text, m.unit, m.quality, m.message, m.operator, m.comment, m.reason,
        m.historical,
    )  # fmt: skip


def _audit_row(m: AuditMessage) -> tuple[object, ...]:
    s = m.source
    return (
        s.site, s.gateway, m.seq, m.ts_ms, s.device, m.event, m.id, m.point,
        *stored_value(m.value), m.by, m.received_ms, m.result, m.code, m.reason,
        *stored_value(m.old_value), *stored_value(m.new_value), m.executed_ms, m.historical,
    )  # fmt: skip


def _known_series(db: sqlite3.Connection) -> dict[tuple[str, str, str, str, str], int]:
    return {
        (site, gateway, device, point, unit): sid
        for sid, site, gateway, device, point, unit in db.execute(
            "SELECT id, site, gateway, device, point, unit FROM series"
        )
    }


def read_points(
    path: Path,
    *,
    site: str | None = None,
    device: str | None = None,
    point: str | None = None,
) -> list[StoredPoint]:
    """Rows of the `points` view, ordered by series and time (for reports and tests)."""
    where, args = [], []
    for column, wanted in (("site", site), ("device", device), ("point", point)):
        if wanted is not None:
            where.append(f"{column} = ?")
            args.append(wanted)
    sql = "SELECT * FROM points" + (f" WHERE {' AND '.join(where)}" if where else "")
    sql += " ORDER BY site, gateway, device, point, ts_ms"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [StoredPoint(*row) for row in db.execute(sql, args)]
    finally:
        db.close()


def read_audits(path: Path, *, site: str | None = None) -> list[dict[str, object]]:
    """Rows of `command_audit` by site, gateway and (ts_ms, seq), as dicts by column name."""
    sql = "SELECT * FROM command_audit" + (" WHERE site = ?" if site is not None else "")
    sql += " ORDER BY site, gateway, ts_ms, seq"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute(sql, [site] if site is not None else [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]
    finally:
        db.close()


def count_readings(path: Path) -> int:
    """How many readings the file holds."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (count,) = db.execute("SELECT count(*) FROM readings").fetchone()
        return int(count)
    finally:
        db.close()


def read_alarms(
    path: Path, *, site: str | None = None, current: bool = False
) -> list[dict[str, object]]:
    """Rows of `alarm_transitions` (or of the `alarm_current` view), by site, gateway and
    (ts_ms, seq), as dicts by column name (for reports and tests)."""
    table = "alarm_current" if current else "alarm_transitions"
    sql = f"SELECT * FROM {table}" + (" WHERE site = ?" if site is not None else "")
    sql += " ORDER BY site, gateway, ts_ms, seq"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute(sql, [site] if site is not None else [])
        names = [d[0] for d in cursor.description]
        return [{k: v for k, v in zip(names, row, strict=True) if k != "latest"} for row in cursor]
    finally:
        db.close()

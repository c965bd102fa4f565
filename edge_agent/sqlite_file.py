"""The agent's local SQLite files (outbox, alarm state): opened checked, replaced if corrupt."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def open_checked(path: Path, *, synchronous: str, schema: str) -> sqlite3.Connection:
    """Open in WAL mode, check integrity, create the schema; DatabaseError if corrupt.

    The connection is in autocommit mode: callers write in explicit transactions.
    """
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(schema)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def move_aside(path: Path) -> Path:
    """Rename a corrupt file (with its -wal and -shm) to `<name>.corrupt-<time>`; the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(Path(f"{aside}{suffix}"))
    return aside

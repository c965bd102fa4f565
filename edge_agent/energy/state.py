"""The energy stage's running state on disk, so a restart continues intervals and totals.

Without it a restarted agent starts every counter afresh: the interval in progress comes
out again from the restart on only (flagged `partial`; the part before the restart is
never counted, and the platform keeps that smaller value under the interval's key), the
day's and month's totals start from zero, and the month's maximum demand is forgotten.

What is kept, per counter (device/point): its last reading, the interval and the day and
month totals in progress, the demand window and peaks; per hierarchy series and kind: its
totals in progress; and the hierarchy's intervals waiting for late terms. Saved every
`energy.state_save_s` and when the agent stops, in one SQLite file beside the outbox
(`outbox.energy.sqlite`), read once when the agent starts.

A row is used only if its fingerprint (what the numbers depend on: counter spec, poll
period, kind, time zone, interval, demand window, tariff) still matches the config and
STATE_VERSION is the same; anything else starts that counter afresh, logged once. After
a crash the state is up to `state_save_s` old: the first reading after the restart spans
the gap from the saved reading and is interpolated like missed polls (flagged `gap`); an
interval completed between the save and the crash is published again, same key.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_agent.delivery.sqlite_file import ENERGY, move_aside, open_checked

log = logging.getLogger(__name__)

STATE_VERSION = 1
# One row: the whole state pickled at once is several times faster to write than a row
# per counter (pickle's memo shares the class and key references).
SCHEMA = """
CREATE TABLE IF NOT EXISTS energy_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    saved_ms INTEGER NOT NULL, state BLOB NOT NULL);
"""


def attributes(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of a slotted object (what its running state is)."""
    return {n: getattr(obj, n) for n in names}


def assign(obj: object, values: Mapping[str, Any]) -> None:
    """Set attributes saved by `attributes`."""
    for name, value in values.items():
        setattr(obj, name, value)


class EnergyStateFile:
    """key -> (fingerprint, state), pickled. The file is the agent's own (0600, like every
    database of the agent: sqlite_file.py); DatabaseFileError when the path holds a file
    that is not, or cannot be written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = open_checked(path, ENERGY, synchronous="normal", schema=SCHEMA)
        except sqlite3.DatabaseError:
            aside = move_aside(path)
            log.warning("energy state %s was corrupt, moved to %s; starting afresh", path, aside)
            self.db = open_checked(path, ENERGY, synchronous="normal", schema=SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def save(self, rows: Mapping[str, tuple[str, Any]]) -> None:
        """Replace the state with `rows` (key -> (fingerprint, state))."""
        self.write(self.dump(rows))

    @staticmethod
    def dump(rows: Mapping[str, tuple[str, Any]]) -> bytes:
        """The state as one blob: taken on the event loop, so it is one consistent moment."""
        return pickle.dumps(dict(rows), pickle.HIGHEST_PROTOCOL)

    def write(self, blob: bytes) -> None:
        """Store a dumped state; safe from a worker thread (one write at a time)."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO energy_state VALUES (1, ?, ?, ?)",
                (STATE_VERSION, now_ms, blob),
            )

    def load(
        self, fingerprint: Callable[[str], str | None]
    ) -> tuple[int, dict[str, Any], list[str]]:
        """(saved_ms, states of the keys whose fingerprint matches, keys not used and why);
        `fingerprint` gives a key's current fingerprint, None when the key is unknown."""
        row = self.db.execute("SELECT version, saved_ms, state FROM energy_state").fetchone()
        if row is None:
            return 0, {}, []
        version, saved_ms, blob = row
        if version != STATE_VERSION:
            return saved_ms, {}, [f"all (saved by state version {version})"]
        try:
            rows: dict[str, tuple[str, Any]] = pickle.loads(blob)
        except Exception as exc:  # a state that cannot be read is not worth a stop
            return saved_ms, {}, [f"all (unreadable: {type(exc).__name__})"]
        found: dict[str, Any] = {}
        dropped: list[str] = []
        for key, (fp, state) in rows.items():
            wanted = fingerprint(key)
            if wanted is None:
                dropped.append(f"{key} (no longer in the config)")
            elif fp != wanted:
                dropped.append(f"{key} (its configuration changed)")
            else:
                found[key] = state
        return saved_ms, found, dropped

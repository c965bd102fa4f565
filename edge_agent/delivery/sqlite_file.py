"""The agent's own SQLite files: marked as ours, created private, opened checked.

Ownership. Every kind of file the agent keeps (outbox, alarm store, energy state, uplink
store, embedded store) carries its own `PRAGMA application_id` ("EA" and two letters), set
when the file is created. A file at a configured path is the agent's when its header
carries the id of the kind expected there, or, for files made before the ids existed
(id 0), when it holds that kind's tables; such a file gets its id at its next open.
Anything else there (a YAML file, another program's database, another kind of ours, an
empty file) is refused with `DatabaseFileError`: never renamed, moved or written.

Creation. A new file is built under a temporary name in the same folder (mkstemp: mode
0600) with its id and schema, then linked into place, which fails if the path exists: no
half-made file under the real name, nothing overwritten. SQLite gives -wal and -shm the
main file's mode, so all three stay private; an older file of ours is made 0600 at open.

Trouble. A location that cannot be written (read-only file system, permissions) is a
`DatabaseFileError` with the reason, not corruption. Only a file of ours that SQLite finds
corrupt is moved aside (`move_aside`) by the store that opened it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_MAGIC = b"SQLite format 3\0"
_PRIVATE = 0o600


class DatabaseFileError(Exception):
    """A file the agent must not or cannot use; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class DatabaseKind:
    """One kind of file the agent keeps."""

    name: str  # as messages say it: "outbox", "alarm store"
    application_id: int
    tables: frozenset[str]  # a file of this kind made before application ids has these


def _tag(text: str) -> int:
    return int.from_bytes(text.encode("ascii"), "big")


OUTBOX = DatabaseKind("outbox", _tag("EAOB"), frozenset({"outbox"}))
ALARMS = DatabaseKind("alarm store", _tag("EAAL"), frozenset({"alarm", "pending"}))
ENERGY = DatabaseKind("energy state", _tag("EAEN"), frozenset({"energy_state"}))
UPLINK = DatabaseKind("uplink store", _tag("EAUP"), frozenset({"history", "queue"}))
STORE = DatabaseKind("embedded store", _tag("EAIN"), frozenset({"series", "readings"}))
KINDS = (OUTBOX, ALARMS, ENERGY, UPLINK, STORE)


def file_problem(path: Path, kind: DatabaseKind) -> str | None:
    """Why the file at `path` is not a `kind` of the agent's; None when it is one, when
    nothing is there yet, or when it cannot be told without opening it for writing."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be looked at: {_reason(exc)}"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as exc:
        return f"cannot be read: {_reason(exc)}"
    if not header and not _has_wal(path):
        return "is an empty file, not a database of the agent"
    if header and (len(header) < 100 or not header.startswith(_MAGIC)):
        return "is not a SQLite database: not a file of the agent"
    found = int.from_bytes(header[68:72], "big") if header else 0
    if found == kind.application_id:
        return None
    for other in KINDS:
        if found == other.application_id:
            return f"is the agent's {other.name}, not its {kind.name}"
    if found:
        return f"is another program's SQLite database (application_id {found:#010x})"
    tables = _tables(path)  # made before application ids, or another program's
    if tables is None or kind.tables <= tables:
        return None
    return f"is a SQLite database without the {kind.name}'s tables: not a file of the agent"


def location_problem(path: Path) -> str | None:
    """Why the agent could not create or write a database at `path` (its -wal and -shm
    beside it); None when it can, as far as can be told without writing."""
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return f"cannot be written: {_denied(path)}"
        folder = path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"cannot be written: its folder {folder} is {_denied(folder)}"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is {_denied(ancestor)}"
    return None


def _denied(path: Path) -> str:
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "on a read-only file system" if read_only else "not writable (permission denied)"


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _has_wal(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.is_file() and wal.stat().st_size > 0


def _tables(path: Path) -> set[str] | None:
    """The tables of a database read without writing; None when it cannot be read so."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.OperationalError:
        return None  # locked, or a WAL file whose -shm cannot be made here
    except sqlite3.DatabaseError:
        return set()  # unreadable: cannot be recognised as ours
    finally:
        db.close()
    return {str(r[0]) for r in rows}


def create_private(path: Path, kind: DatabaseKind, *, schema: str) -> None:
    """Create the database at `path` (and its folder) private, marked as `kind` and in WAL
    mode, unless a file is already there; DatabaseFileError when the folder refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
        os.close(fd)
    except OSError as exc:
        raise DatabaseFileError(f"{kind.name} {path} cannot be created: {_reason(exc)}") from exc
    try:
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute(f"PRAGMA application_id = {kind.application_id}")
            db.executescript(schema)
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            os.link(temp, path)
    except (sqlite3.Error, OSError) as exc:
        raise DatabaseFileError(f"{kind.name} {path} cannot be created: {exc}") from exc
    finally:
        for leftover in (temp, f"{temp}-wal", f"{temp}-shm", f"{temp}-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def make_private(path: Path) -> None:
    """Take group and other permissions off a file of ours (and its -wal and -shm), as
    older versions created them 0644; a file we cannot chmod is left as it is."""
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            if part.stat().st_mode & 0o077:
                part.chmod(_PRIVATE)


def open_checked(
    path: Path, kind: DatabaseKind, *, synchronous: str, schema: str
) -> sqlite3.Connection:
    """Open (creating if needed) a file of `kind` in WAL mode, check its integrity and
    create its schema. DatabaseFileError when the file is not ours or the location cannot
    be written; sqlite3.DatabaseError only when it is ours and corrupt.

    The connection is in autocommit mode: callers write in explicit transactions.
    """
    problem = file_problem(path, kind) or location_problem(path)
    if problem is not None:
        raise DatabaseFileError(f"{kind.name} {path} {problem}")
    create_private(path, kind, schema=schema)
    make_private(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise DatabaseFileError(f"{kind.name} {path} cannot be opened: {exc}") from exc
    claimed = _header_id(path) == kind.application_id
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if not claimed:
            _claim(db, path, kind)  # a file made before application ids
            claimed = True
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(schema)
    except DatabaseFileError:
        db.close()
        raise
    except sqlite3.OperationalError as exc:  # read-only, cannot open, I/O: not corruption
        db.close()
        raise DatabaseFileError(f"{kind.name} {path} cannot be written: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        db.close()
        if claimed:
            raise  # ours and corrupt: the caller moves it aside
        raise DatabaseFileError(
            f"{kind.name} {path} cannot be recognised as the agent's ({exc}): not moved"
        ) from exc
    return db


def _header_id(path: Path) -> int:
    with path.open("rb") as f:
        header = f.read(100)
    return int.from_bytes(header[68:72], "big") if len(header) == 100 else 0


def _claim(db: sqlite3.Connection, path: Path, kind: DatabaseKind) -> None:
    """Mark an older file of ours with its id; DatabaseFileError if it is not ours."""
    found = db.execute("PRAGMA application_id").fetchone()[0]
    if found != kind.application_id:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if found or not kind.tables <= {str(r[0]) for r in rows}:
            problem = file_problem(path, kind) or "is not a file of the agent"
            raise DatabaseFileError(f"{kind.name} {path} {problem}")
        db.execute(f"PRAGMA application_id = {kind.application_id}")


def move_aside(path: Path) -> Path:
    """Rename a corrupt file of ours (with its -wal and -shm) to `<name>.corrupt-<time>`;
    the new name. Only for a file `open_checked` recognised as ours."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(Path(f"{aside}{suffix}"))
    return aside

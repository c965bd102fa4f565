"""A database of the agent's that SQLite finds corrupt: its header (and id) intact, the
rest of its pages garbage. The only kind of file the agent may move aside."""

from __future__ import annotations

from pathlib import Path


def damage(path: Path) -> bytes:
    """Overwrite everything after the 100-byte header of a closed database; its header."""
    data = path.read_bytes()
    assert len(data) > 100 and not Path(f"{path}-wal").exists(), "close the database first"
    path.write_bytes(data[:100] + b"\xa5" * (len(data) - 100))
    return data[:100]

"""Real small filesystems for tests of full and read-only disks: a tmpfs mounted for the test.

Mounting needs root (or CAP_SYS_ADMIN); where it is not permitted the test is skipped with
the reason `mount` gave. Every mount is undone at the end of its `with` block.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(where: Path, *, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (created) for the body of the block."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small filesystem needs `mount -t tmpfs`, which needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def remount_read_only(where: Path) -> None:
    """Make a mounted tmpfs read-only (for root too)."""
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def fill_up(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem has no block left; the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler

"""The counters of one edge node's Sparkplug sessions: bdSeq and seq.

bdSeq ties an NBIRTH to its NDEATH: it goes into the will of a CONNECT and into the NBIRTH
that follows, and goes up by one (255 -> 0) for the next CONNECT
(tck-id-topics-nbirth-bdseq-increment, tck-id-payloads-ndeath-bdseq). It is kept in a small
file beside the outbox, so a restarted agent does not reuse the bdSeq whose NDEATH the
broker may still publish for the process before it (a host would then take that late
death for the new session's).

seq numbers every message of the node but NDEATH, across NBIRTH, DBIRTH, NDATA, DDATA and
DDEATH: 0 for NBIRTH, then +1 per message, 255 -> 0 (tck-id-payloads-sequence-num-*).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Session:
    """bdSeq (persisted) and seq of one edge node."""

    def __init__(self, bd_seq_path: Path) -> None:
        self._path = bd_seq_path
        self.bd_seq = (self._stored() + 1) % 256  # a new file starts at 0
        self._save()
        self._seq = 0

    def _stored(self) -> int:
        try:
            value = int(self._path.read_text().strip())
        except FileNotFoundError:
            return -1
        except ValueError:
            log.warning("sparkplug: %s does not hold a bdSeq; starting again at 0", self._path)
            return -1
        return value % 256

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            tmp.write_text(f"{self.bd_seq}\n")
            os.replace(tmp, self._path)
        except OSError as exc:  # a read-only disk costs only the protection across restarts
            log.warning("sparkplug: cannot keep bdSeq in %s: %s", self._path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def next_connect(self) -> int:
        """The bdSeq of the next CONNECT, after a connection ended."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self._save()
        return self.bd_seq

    def birth_seq(self) -> int:
        """The seq of an NBIRTH: 0, and the messages after it count from 1."""
        self._seq = 1
        return 0

    def next_seq(self) -> int:
        """The seq of the next message after the NBIRTH."""
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

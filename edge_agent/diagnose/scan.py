"""`edge-agent scan`: which unit ids answer on a serial bus or behind a TCP gateway.

    $ edge-agent scan rtu:///dev/ttyUSB0?baudrate=9600 --ids 1-32
    scan [##############----------------]  15/32  id 15  found 2       (stderr, redrawn)
    id   answer
    1    registers 0000
    7    exception 02 (illegal data address)

Each id gets one read of one register (holding 0 unless told otherwise). Any answer, an
exception included, means a unit is there; silence until the timeout means none is. A
Modbus TCP gateway answers for absent units itself, with exception 0A or 0B: those count
as absent. Ids are tried one at a time: a bus carries one transaction at a time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from drivers.modbus.codec import Table
from drivers.modbus.connection import BadAnswer
from drivers.modbus.driver import exception_reason
from drivers.reading import DeviceUnreachable
from edge_agent.diagnose.read import open_line

GATEWAY_NO_UNIT = (10, 11)  # gateway path unavailable, gateway target failed to respond
BAR_WIDTH = 30
REDRAW_EVERY_S = 0.1


def parse_ids(text: str) -> list[int]:
    """'1-247', '1,3,10-12': the unit ids to try, in order; ValueError outside 0..247."""
    ids: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        lo = int(first)
        hi = int(last) if sep else lo
        if not 0 <= lo <= hi <= 247:
            raise ValueError(f"bad id range {part.strip()!r} (ids are 0..247, low-high)")
        ids.extend(i for i in range(lo, hi + 1) if i not in ids)
    return ids


@dataclass(frozen=True, slots=True)
class Hit:
    """A unit id that answered, and what it answered."""

    device_id: int
    answer: str


class ProgressBar:
    """A one-line bar on a stream (stderr), redrawn in place at most ten times a second."""

    def __init__(self, total: int, *, out: TextIO | None = None, label: str = "scan") -> None:
        self.total = total
        self.out = out or sys.stderr
        self.label = label
        self._drawn_at = 0.0

    def update(self, done: int, note: str = "") -> None:
        """Show `done` of total; the last update always draws."""
        now = time.monotonic()
        if done < self.total and now - self._drawn_at < REDRAW_EVERY_S:
            return
        self._drawn_at = now
        filled = BAR_WIDTH * done // max(1, self.total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        width = len(str(self.total))
        self.out.write(f"\r{self.label} [{bar}] {done:>{width}}/{self.total}  {note:<24}")
        self.out.flush()

    def finish(self) -> None:
        """End the bar's line."""
        self.out.write("\n")
        self.out.flush()


async def scan_ids(
    url: str,
    ids: Sequence[int],
    *,
    table: Table = Table.HOLDING,
    address: int = 0,
    timeout_s: float = 0.3,
    progress: Callable[[int, int, list[Hit]], None] | None = None,
) -> list[Hit]:
    """Try each id once; the ones that answered, in id order."""
    connection = open_line(url, timeout_s=timeout_s)
    hits: list[Hit] = []
    try:
        for done, device_id in enumerate(ids, start=1):
            try:
                await connection.connect()  # a TCP line is closed after a timeout
                answer = await connection.read(table, address, 1, device_id=device_id)
            except DeviceUnreachable as exc:
                if exc.reason.startswith("cannot open line") or exc.reason == "connection refused":
                    raise  # nothing to scan: the line itself is not there
                answer = None
            except BadAnswer as exc:
                hits.append(Hit(device_id, exc.reason))  # a wrong answer: a unit is there
                answer = None
            if isinstance(answer, int):
                if answer not in GATEWAY_NO_UNIT:
                    hits.append(Hit(device_id, exception_reason(answer)))
            elif isinstance(answer, bytes):
                hits.append(Hit(device_id, "registers " + answer[:2].hex().upper()))
            elif answer is not None:
                hits.append(Hit(device_id, f"bits {int(bool(answer[0]))}"))
            if progress is not None:
                progress(done, device_id, hits)
    finally:
        connection.close()
    return hits

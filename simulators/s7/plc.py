"""A small simulated S7 CPU: the DBs and areas a site's points name, with values that move.

Every configured point gets a signal by its type, from a clock and a seed: REAL and LREAL
a slow sine around a level, DINT/DWORD a counter that grows, INT/WORD a ramp, BYTE a
sawtooth, BOOL a square wave, STRING its point's name, DATE_AND_TIME the time. Each DB is
as long as its last configured byte (so `DB1.DBW100` where DB1 ends at 12 is out of
range, as on a real CPU); M, I and Q are 256 bytes or more. In STOP the values stay
where they were, as a stopped program writes nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field

from drivers.reading import Value
from drivers.s7.address import Address, Area, DataType, S7Type
from drivers.s7.config import S7Device, S7Point
from drivers.s7.protocol import CPU_RUN, CPU_STOP, ITEM_OK, Item
from drivers.s7.values import encode

MIN_AREA = 256
SCAN_S = 0.01  # values move once per scan cycle, not on every read of a busy client


def _signal(point: S7Point, data_type: DataType, seed: int, t: float) -> Value:
    kind = data_type.kind
    phase = (seed % 997) / 997 * 2 * math.pi
    if kind in (S7Type.REAL, S7Type.LREAL):
        level = 20 + seed % 80
        return level + 5 * math.sin(t / 30 + phase)
    if kind in (S7Type.DINT, S7Type.DWORD):
        return (seed % 10_000 + int(t)) % 2**31
    if kind in (S7Type.INT, S7Type.WORD):
        return (seed + int(t * 10)) % 30_000
    if kind is S7Type.BYTE:
        return int(t) % 256
    if kind is S7Type.BOOL:
        return int(t / 10 + seed) % 2 == 0
    if kind is S7Type.STRING:
        return point.name[: data_type.length]
    # DATE_AND_TIME carries no zone: the CPU's clock, here UTC.
    at = dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="milliseconds")


@dataclass(slots=True)
class SimPlc:
    """One CPU: its memory, mode and the points it serves."""

    name: str
    points: tuple[S7Point, ...]
    seed: int
    cpu_state: int = CPU_RUN
    memory: dict[tuple[int, int], bytearray] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)  # DBs removed by the missing_db fault
    values: dict[str, Value] = field(default_factory=dict)
    # Each point's parsed address and type, and its signal's seed (parsed once).
    layout: list[tuple[S7Point, Address, DataType, int]] = field(default_factory=list)
    scanned: float = 0.0  # time of the last refresh
    held: set[str] = field(default_factory=set)  # points written: they keep what was written

    @classmethod
    def for_device(cls, device: S7Device, seed: int) -> SimPlc:
        """A CPU with the blocks the device's points name, values at the current time."""
        plc = cls(device.name, device.points, seed)
        ends: dict[tuple[int, int], int] = {}
        for i, p in enumerate(device.points):
            a, data_type = p.location, p.data_type
            plc.layout.append((p, a, data_type, seed + i * 7919))
            key = (int(a.area), a.db)
            ends[key] = max(ends.get(key, 0), a.byte + data_type.size)
        for area in (Area.M, Area.I, Area.Q):
            ends.setdefault((int(area), 0), MIN_AREA)
        for key, end in ends.items():
            plc.memory[key] = bytearray(end if key[0] == Area.DB else max(end, MIN_AREA))
        plc.refresh()
        return plc

    def refresh(self) -> None:
        """Move every value to now, once per scan cycle, unless the CPU is in STOP."""
        t = time.time()
        if self.cpu_state == CPU_STOP or t - self.scanned < SCAN_S:
            return
        self.scanned = t
        memory, values = self.memory, self.values
        for p, a, data_type, seed in self.layout:
            if p.name in self.held:
                continue
            value = _signal(p, data_type, seed, t)
            encode(data_type, a.bit, value, memory[(a.area, a.db)], a.byte)
            values[p.name] = value

    def read(self, item: Item) -> tuple[int, bytes]:
        """One item of a read-var: return code and bytes, as a CPU answers it."""
        if item.area == Area.DB and item.db in self.missing:
            return 0x0A, b""
        block = self.memory.get((item.area, item.db))
        if block is None:
            return 0x0A, b""  # object does not exist
        if item.start + item.size > len(block):
            return 0x05, b""  # address out of range
        return ITEM_OK, bytes(block[item.start : item.start + item.size])

    def write(self, item: Item, data: bytes, bit: int | None) -> int:
        """One item of a write-var, as a CPU takes it: its return code. A point written
        keeps its value from then on (a set-point the process does not overwrite)."""
        if self.cpu_state == CPU_STOP and item.area != Area.DB:
            return 0x03  # outputs and markers are not written in STOP here
        if item.area == Area.DB and item.db in self.missing:
            return 0x0A
        block = self.memory.get((item.area, item.db))
        if block is None:
            return 0x0A
        end = item.start + (1 if bit is not None else len(data))
        if end > len(block):
            return 0x05
        if bit is not None:
            mask = 1 << bit
            block[item.start] = (
                block[item.start] | mask if data[:1] != b"\0" else block[item.start] & ~mask
            )
        else:
            block[item.start : end] = data
        for p, a, _, _ in self.layout:
            if (a.area, a.db, a.byte) == (item.area, item.db, item.start) and a.bit == bit:
                self.held.add(p.name)
        return ITEM_OK

    @property
    def dbs(self) -> dict[int, int]:
        """DB number -> length in bytes, of the DBs that exist."""
        return {
            db: len(m)
            for (area, db), m in self.memory.items()
            if area == Area.DB and db not in self.missing
        }

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
import struct
import time
from dataclasses import dataclass, field

from drivers.reading import Value
from drivers.s7.address import Area, S7Type
from drivers.s7.config import S7Device, S7Point
from drivers.s7.protocol import CPU_RUN, CPU_STOP, ITEM_OK, Item

MIN_AREA = 256
_PACK = {
    S7Type.BYTE: struct.Struct(">B"),
    S7Type.WORD: struct.Struct(">H"),
    S7Type.INT: struct.Struct(">h"),
    S7Type.DWORD: struct.Struct(">I"),
    S7Type.DINT: struct.Struct(">i"),
    S7Type.REAL: struct.Struct(">f"),
    S7Type.LREAL: struct.Struct(">d"),
}


def _bcd(n: int) -> int:
    return (n // 10) << 4 | n % 10


def _signal(point: S7Point, seed: int, t: float) -> Value:
    kind = point.data_type.kind
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
        return point.name[: point.data_type.length]
    # DATE_AND_TIME carries no zone: the CPU's clock, here UTC.
    at = dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="milliseconds")


def encode(point: S7Point, value: Value, memory: bytearray, start: int) -> None:
    """Write a value into memory as the CPU stores it."""
    data_type, address = point.data_type, point.location
    kind = data_type.kind
    if kind is S7Type.BOOL:
        mask = 1 << (address.bit or 0)
        memory[start] = memory[start] | mask if value else memory[start] & ~mask
    elif kind is S7Type.STRING:
        text = str(value).encode("latin-1")[: data_type.length]
        memory[start : start + 2 + len(text)] = bytes([data_type.length, len(text)]) + text
    elif kind is S7Type.DATE_AND_TIME:
        at = dt.datetime.fromisoformat(str(value))
        ms = at.microsecond // 1000
        digits = [at.year % 100, at.month, at.day, at.hour, at.minute, at.second, ms // 10]
        raw = bytes(_bcd(d) for d in digits) + bytes([(ms % 10) << 4 | (at.isoweekday() % 7 + 1)])
        memory[start : start + 8] = raw
    else:
        assert isinstance(value, int | float)
        packer = _PACK[kind]
        packer.pack_into(memory, start, int(value) if kind not in _FLOATS else float(value))


_FLOATS = (S7Type.REAL, S7Type.LREAL)


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

    @classmethod
    def for_device(cls, device: S7Device, seed: int) -> SimPlc:
        """A CPU with the blocks the device's points name, values at the current time."""
        plc = cls(device.name, device.points, seed)
        ends: dict[tuple[int, int], int] = {}
        for p in device.points:
            a = p.location
            key = (int(a.area), a.db)
            ends[key] = max(ends.get(key, 0), a.byte + p.data_type.size)
        for area in (Area.M, Area.I, Area.Q):
            ends.setdefault((int(area), 0), MIN_AREA)
        for key, end in ends.items():
            plc.memory[key] = bytearray(end if key[0] == Area.DB else max(end, MIN_AREA))
        plc.refresh()
        return plc

    def refresh(self, t: float | None = None) -> None:
        """Move every value to time t (now) unless the CPU is in STOP."""
        if self.cpu_state == CPU_STOP:
            return
        t = time.time() if t is None else t
        for i, p in enumerate(self.points):
            value = _signal(p, self.seed + i * 7919, t)
            a = p.location
            encode(p, value, self.memory[(int(a.area), a.db)], a.byte)
            self.values[p.name] = value

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

    @property
    def dbs(self) -> dict[int, int]:
        """DB number -> length in bytes, of the DBs that exist."""
        return {
            db: len(m)
            for (area, db), m in self.memory.items()
            if area == Area.DB and db not in self.missing
        }

"""Values into S7 memory, as the CPU stores them (big-endian; BOOL one bit of a byte,
STRING[n] with its two length bytes, DATE_AND_TIME in BCD): the driver's writes and the
simulator's memory use the same encoder."""

from __future__ import annotations

import datetime as dt
import math
import struct

from drivers.contract import WriteRefused
from drivers.reading import Value
from drivers.s7.address import DataType, S7Type
from drivers.s7.config import S7Point

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


def encode(
    data_type: DataType, bit: int | None, value: Value, memory: bytearray, start: int
) -> None:
    """Write a value into memory as the CPU stores it."""
    kind = data_type.kind
    if kind is S7Type.BOOL:
        mask = 1 << (bit or 0)
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


_LIMITS = {
    S7Type.BYTE: (0, 0xFF),
    S7Type.WORD: (0, 0xFFFF),
    S7Type.DWORD: (0, 0xFFFFFFFF),
    S7Type.INT: (-(2**15), 2**15 - 1),
    S7Type.DINT: (-(2**31), 2**31 - 1),
}


def encode_write(point: S7Point, value: Value) -> tuple[bytes, int | None]:
    """The bytes a write of `value` (engineering units) puts into the point's memory, and
    its bit for a BOOL; WriteRefused when the value cannot be stored exactly."""
    data_type = point.data_type
    kind = data_type.kind
    if kind is S7Type.BOOL:
        if not isinstance(value, bool):
            raise WriteRefused("wrong_type", f"{point.name} takes true or false")
        return (b"\x01" if value else b"\x00"), point.location.bit or 0
    if kind in (S7Type.STRING, S7Type.DATE_AND_TIME):
        if not isinstance(value, str):
            raise WriteRefused("wrong_type", f"{point.name} takes text")
        if kind is S7Type.STRING and len(value.encode("latin-1", "replace")) > data_type.length:
            raise WriteRefused("out_of_range", f"longer than {data_type.length} characters")
    elif not isinstance(value, int | float) or isinstance(value, bool):
        raise WriteRefused("wrong_type", f"{point.name} takes a number")
    elif kind not in _FLOATS:
        raw = value / point.scale
        if not math.isfinite(raw) or abs(raw - round(raw)) > 1e-9 * max(1.0, abs(raw)):
            raise WriteRefused(
                "out_of_range", f"{value:g} is not a whole number of {point.scale:g}"
            )
        low, high = _LIMITS[kind]
        if not low <= round(raw) <= high:
            raise WriteRefused("out_of_range", f"{value:g} does not fit {data_type.text()}")
        value = round(raw)
    else:
        value = value / point.scale
    memory = bytearray(data_type.size)
    try:
        encode(data_type, None, value, memory, 0)
    except (ValueError, struct.error) as exc:
        raise WriteRefused("wrong_type", f"{point.name}: {exc}") from None
    return bytes(memory), None

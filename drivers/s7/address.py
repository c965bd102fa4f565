"""S7 addresses as STEP 7 and TIA Portal show them, and the data types read there.

One notation, the STEP 7 absolute address with English mnemonics (TIA Portal's, without
its `%`), because it is what the engineer's program listing and cross-references show:

    DB1.DBX10.0   bit 0 of byte 10 of data block 1
    DB1.DBB2      byte 2           DB1.DBW4   bytes 4-5      DB1.DBD6   bytes 6-9
    M10.0 MB10 MW20 MD30           merkers (flags)
    I0.1 IB0 IW64 ID0              process image of the inputs
    Q4.0 QB4 QW0 QD8               process image of the outputs

The width letter must fit the type: X a BOOL, B a BYTE (or the first byte of a LREAL,
STRING[n] or DATE_AND_TIME, which have no letter of their own), W a WORD or INT, D a
DWORD, DINT or REAL. Without a type an address reads BOOL (X and bits), BYTE, WORD or DWORD.
Other notations get an error naming the one to write: German mnemonics (E, A), the `%`
prefix, Node-RED/Telegraf's `DB1,REAL0` and `DB1.W4`. Timers and counters are not read.
Values are big-endian, exactly as the CPU stores them.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from drivers.reading import Value


class Area(enum.IntEnum):
    """S7 area codes of a read-var item."""

    I = 0x81  # noqa: E741 - the area's own name
    Q = 0x82
    M = 0x83
    DB = 0x84


class S7Type(enum.StrEnum):
    """The S7 data types a point can have."""

    BOOL = "BOOL"
    BYTE = "BYTE"
    WORD = "WORD"
    DWORD = "DWORD"
    INT = "INT"
    DINT = "DINT"
    REAL = "REAL"
    LREAL = "LREAL"
    STRING = "STRING"
    DATE_AND_TIME = "DATE_AND_TIME"


_SIZES = {
    S7Type.BOOL: 1,
    S7Type.BYTE: 1,
    S7Type.WORD: 2,
    S7Type.INT: 2,
    S7Type.DWORD: 4,
    S7Type.DINT: 4,
    S7Type.REAL: 4,
    S7Type.LREAL: 8,
    S7Type.DATE_AND_TIME: 8,
}
_STRUCTS = {
    S7Type.BYTE: struct.Struct(">B"),
    S7Type.WORD: struct.Struct(">H"),
    S7Type.INT: struct.Struct(">h"),
    S7Type.DWORD: struct.Struct(">I"),
    S7Type.DINT: struct.Struct(">i"),
    S7Type.REAL: struct.Struct(">f"),
    S7Type.LREAL: struct.Struct(">d"),
}
# Which types each width letter can address.
_WIDTH_TYPES = {
    "X": (S7Type.BOOL,),
    "B": (S7Type.BYTE, S7Type.LREAL, S7Type.STRING, S7Type.DATE_AND_TIME),
    "W": (S7Type.WORD, S7Type.INT),
    "D": (S7Type.DWORD, S7Type.DINT, S7Type.REAL),
}
_DEFAULT_TYPES = {"X": S7Type.BOOL, "B": S7Type.BYTE, "W": S7Type.WORD, "D": S7Type.DWORD}
MAX_STRING = 254
MAX_BYTE = 65535  # offsets of a read-var item: 16 bits of byte address (plus 3 of bit)

_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_AREA = re.compile(r"^([IQM])([BWD]?)(\d+)(?:\.(\d+))?$")
_TYPE = re.compile(r"^([A-Z_]+)(?:\[(\d+)\])?$")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a point's bytes are: area, DB number (0 outside DBs), first byte, bit."""

    area: Area
    db: int
    byte: int
    bit: int | None  # only for BOOL
    width: str  # X, B, W or D as written

    @property
    def block(self) -> tuple[Area, int]:
        """Points of one block can be read together."""
        return (self.area, self.db)

    def text(self) -> str:
        """The address as written in the canonical notation."""
        bit = "" if self.bit is None else f".{self.bit}"
        if self.area is Area.DB:
            return f"DB{self.db}.DB{self.width}{self.byte}{bit}"
        width = "" if self.width == "X" else self.width
        return f"{self.area.name}{width}{self.byte}{bit}"


@dataclass(frozen=True, slots=True)
class DataType:
    """A point's type and the bytes it takes."""

    kind: S7Type
    length: int = 0  # STRING[n]: n characters

    @property
    def size(self) -> int:
        """Bytes read for one value (a STRING has 2 header bytes: maximum and actual)."""
        if self.kind is S7Type.STRING:
            return self.length + 2
        return _SIZES[self.kind]

    def text(self) -> str:
        """As written in a config: STRING[20], REAL."""
        return f"STRING[{self.length}]" if self.kind is S7Type.STRING else self.kind.value


def _other_notation(text: str) -> str | None:
    """Why `text` is a notation of another tool, and what to write instead."""
    if text.startswith("%"):
        return f"write {text[1:]!r} without the '%' of TIA Portal's display"
    m = re.match(r"^DB(\d+),([A-Z]+)(\d+)(?:\.(\d+))?$", text)
    if m:
        db, kind, byte, bit = m.groups()
        width = {"X": "X", "BYTE": "B", "B": "B", "INT": "W", "WORD": "W", "W": "W"}.get(kind, "D")
        if kind in ("X", "BOOL") or bit is not None:
            width = "X"
        suggestion = f"DB{db}.DB{width}{byte}" + (f".{bit}" if bit is not None else "")
        return f"use the STEP 7 notation {suggestion!r} with type: (not {text!r} of Node-RED)"
    m = re.match(r"^DB(\d+)\.([XBWD])(\d+)(?:\.(\d+))?$", text)
    if m:
        db, width, byte, bit = m.groups()
        suggestion = f"DB{db}.DB{width}{byte}" + (f".{bit}" if bit is not None else "")
        return f"use the STEP 7 notation {suggestion!r}"
    m = re.match(r"^([EA])([BWD]?)(\d+(?:\.\d+)?)$", text)
    if m:
        english = {"E": "I", "A": "Q"}[m.group(1)]
        return f"German mnemonics are not read: write {english}{m.group(2)}{m.group(3)!s}"
    if re.match(r"^(?:T|C|Z)\d+$", text):
        return "timers and counters are not read; copy them into a DB or merker word"
    if re.match(r"^P[IQE][BWD]?\d+", text):
        return "peripheral (PI/PQ) addresses are not read; use the process image (I, Q)"
    return None


def parse_address(text: str) -> Address:
    """Parse an address; ValueError with what to write instead."""
    written = text
    text = text.strip().upper()
    m = _DB.match(text)
    if m:
        db, width, byte, bit = m.groups()
        area, db_number = Area.DB, int(db)
        if db_number < 1 or db_number > 65535:
            raise ValueError(f"{written!r}: DB numbers are 1-65535")
    else:
        m = _AREA.match(text)
        if not m:
            why = _other_notation(text)
            raise ValueError(
                f"{written!r} is not an S7 address: "
                + (why or "write DB1.DBX0.0, DB1.DBB2, DB1.DBW4, DB1.DBD6, M10.0, MW20, I0.1")
            )
        letter, width, byte, bit = m.groups()
        area, db_number = Area[letter], 0
        if not width:
            if bit is None:
                raise ValueError(
                    f"{written!r}: a bit needs its number ({letter}{byte}.0), a byte B "
                    f"({letter}B{byte}), a word W ({letter}W{byte}), a double word D"
                )
            width = "X"
    if width == "X" and bit is None:
        raise ValueError(f"{written!r}: a bit address needs its bit, e.g. DB1.DBX{byte}.0")
    if width != "X" and bit is not None:
        raise ValueError(f"{written!r}: only bit (X) addresses take a bit number")
    if bit is not None and int(bit) > 7:
        raise ValueError(f"{written!r}: bits are 0-7")
    if int(byte) > MAX_BYTE:
        raise ValueError(f"{written!r}: byte offsets are 0-{MAX_BYTE}")
    return Address(area, db_number, int(byte), None if bit is None else int(bit), width)


def parse_type(text: str) -> DataType:
    """Parse a type name (REAL, STRING[20]); ValueError naming the known ones."""
    m = _TYPE.match(text.strip().upper())
    known = ", ".join(t.value for t in S7Type if t is not S7Type.STRING) + ", STRING[n]"
    if not m:
        raise ValueError(f"unknown S7 type {text!r} (known: {known})")
    name, length = m.groups()
    if name == "DT":
        name = "DATE_AND_TIME"
    try:
        kind = S7Type(name)
    except ValueError:
        raise ValueError(f"unknown S7 type {text!r} (known: {known})") from None
    if kind is S7Type.STRING:
        if length is None:
            raise ValueError("STRING needs its declared length, e.g. STRING[20]")
        if not 1 <= int(length) <= MAX_STRING:
            raise ValueError(f"STRING[{length}]: the length is 1-{MAX_STRING}")
        return DataType(kind, int(length))
    if length is not None:
        raise ValueError(f"{text!r}: only STRING takes a length")
    return DataType(kind)


def default_type(address: Address) -> DataType:
    """The type an address reads when the point gives none."""
    return DataType(_DEFAULT_TYPES[address.width])


def check_fits(address: Address, data_type: DataType) -> None:
    """ValueError when the width letter cannot hold the type (DBW with REAL)."""
    allowed = _WIDTH_TYPES[address.width]
    if data_type.kind not in allowed:
        names = ", ".join(t.value if t is not S7Type.STRING else "STRING[n]" for t in allowed)
        raise ValueError(
            f"{address.text()} holds {names}, not {data_type.text()}"
            + _better_address(address, data_type)
        )


def _better_address(address: Address, data_type: DataType) -> str:
    for width, kinds in _WIDTH_TYPES.items():
        if data_type.kind in kinds and width != "X":
            fixed = Address(address.area, address.db, address.byte, None, width)
            return f" (write {fixed.text()})"
    return ""


def _bcd(b: int) -> int:
    return (b >> 4) * 10 + (b & 0x0F)


Reader = Callable[[bytes, int], Value]


def reader(data_type: DataType, bit: int | None) -> Reader:
    """A function reading the value at an offset of an answer's bytes (compiled once per
    point: the poll's hot path calls it without slicing or dispatch for the common types)."""
    found = _STRUCTS.get(data_type.kind)
    if found is not None:
        unpack = found.unpack_from

        def number(data: bytes, offset: int) -> Value:
            value: Value = unpack(data, offset)[0]
            return value

        return number
    if data_type.kind is S7Type.BOOL:
        mask = 1 << (bit or 0)
        return lambda data, offset: bool(data[offset] & mask)
    size = data_type.size
    return lambda data, offset: decode(data_type, data[offset : offset + size], bit)


def decode(data_type: DataType, raw: bytes | bytearray | memoryview, bit: int | None) -> Value:
    """A value from its bytes (big-endian, as S7 stores it); ValueError if they cannot be."""
    kind = data_type.kind
    if kind is S7Type.BOOL:
        return bool(raw[0] >> (bit or 0) & 1)
    found = _STRUCTS.get(kind)
    if found is not None:
        value: Value = found.unpack_from(raw)[0]
        return value
    if kind is S7Type.STRING:
        actual = raw[1]
        if actual > raw[0] or actual > data_type.length:
            raise ValueError(f"STRING holds {actual} characters, more than declared")
        return bytes(raw[2 : 2 + actual]).decode("latin-1")
    # DATE_AND_TIME: BCD year (90-99 -> 19xx), month, day, hour, minute, second, ms.
    for b in raw[:7]:
        if b >> 4 > 9 or b & 0x0F > 9:
            raise ValueError("DATE_AND_TIME is not BCD")
    year = _bcd(raw[0])
    year += 1900 if year >= 90 else 2000
    ms = _bcd(raw[6]) * 10 + (raw[7] >> 4)
    return (
        f"{year:04d}-{_bcd(raw[1]):02d}-{_bcd(raw[2]):02d}T"
        f"{_bcd(raw[3]):02d}:{_bcd(raw[4]):02d}:{_bcd(raw[5]):02d}.{ms:03d}"
    )

"""Modbus register codec: point types, byte/word orders, and whole-block decoding.

Orders name the bytes of a value from most to least significant as they appear on the
wire, two bytes per register:

    float32 230.5 = 0x43 0x66 0x80 0x00  (A B C D)
    ABCD  reg0=0x4366 reg1=0x8000   big-endian, high word first (Modbus default)
    CDAB  reg0=0x8000 reg1=0x4366   word swap, "low word first"
    BADC  reg0=0x6643 reg1=0x0080   byte swap inside each register
    DCBA  reg0=0x0080 reg1=0x6643   fully little-endian

A 64-bit value extends the same rule to four registers (CDAB = GH EF CD AB).

The trick that makes block decoding cheap: lay the registers out once as bytes, big-endian
per register (image "BE") and, only when needed, little-endian per register (image "LE").
Then every order is a plain struct read of one image:

    ABCD = BE image read '>'     DCBA = BE image read '<'
    BADC = LE image read '>'     CDAB = LE image read '<'

so all points of one order in a request decode with one `struct.unpack_from` call.
16-bit types fall out right too (CDAB == ABCD, DCBA == BADC for one register).
"""

from __future__ import annotations

import array
import enum
import math
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers.reading import Value


class Table(enum.StrEnum):
    """The four Modbus data tables, named for what they hold."""

    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def function_code(self) -> int:
        """The read function code for this table."""
        return _FUNCTION_CODES[self]

    @property
    def is_bits(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE)


_FUNCTION_CODES = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


class PointType(enum.StrEnum):
    """How a point's registers (or bit) are interpreted."""

    BOOL = "bool"  # a coil or discrete input
    BIT = "bit"  # bit N of a holding or input register
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BCD16 = "bcd16"
    BCD32 = "bcd32"


class Order(enum.StrEnum):
    """Byte and word order, most significant byte named A."""

    ABCD = "ABCD"
    BADC = "BADC"
    CDAB = "CDAB"
    DCBA = "DCBA"


_STRUCT_CODE = {
    PointType.BIT: "H",
    PointType.INT16: "h",
    PointType.UINT16: "H",
    PointType.INT32: "i",
    PointType.UINT32: "I",
    PointType.INT64: "q",
    PointType.UINT64: "Q",
    PointType.FLOAT32: "f",
    PointType.FLOAT64: "d",
    PointType.BCD16: "H",
    PointType.BCD32: "I",
}

_WIDTH = {
    PointType.BOOL: 1,
    PointType.BIT: 1,
    PointType.INT16: 1,
    PointType.UINT16: 1,
    PointType.INT32: 2,
    PointType.UINT32: 2,
    PointType.INT64: 4,
    PointType.UINT64: 4,
    PointType.FLOAT32: 2,
    PointType.FLOAT64: 4,
    PointType.BCD16: 1,
    PointType.BCD32: 2,
}

FLOAT_TYPES = frozenset({PointType.FLOAT32, PointType.FLOAT64})
INTEGER_TYPES = frozenset(
    {
        PointType.INT16,
        PointType.UINT16,
        PointType.INT32,
        PointType.UINT32,
        PointType.INT64,
        PointType.UINT64,
        PointType.BCD16,
        PointType.BCD32,
    }
)


class DecodeError(ValueError):
    """Registers that cannot be a value of the point's type (bad BCD digit, bad text)."""


def register_count(point_type: PointType, length: int | None = None) -> int:
    """How many registers (or bits, for BOOL) a point of this type occupies."""
    if point_type is PointType.STRING:
        if length is None or length < 1:
            raise ValueError("a string point needs a length of at least 1 register")
        return length
    return _WIDTH[point_type]


def value_range(point_type: PointType) -> tuple[int, int] | None:
    """The raw integer range of an integer type, for validating encodes."""
    ranges = {
        PointType.INT16: (-(2**15), 2**15 - 1),
        PointType.UINT16: (0, 2**16 - 1),
        PointType.INT32: (-(2**31), 2**31 - 1),
        PointType.UINT32: (0, 2**32 - 1),
        PointType.INT64: (-(2**63), 2**63 - 1),
        PointType.UINT64: (0, 2**64 - 1),
        PointType.BCD16: (0, 9999),
        PointType.BCD32: (0, 99_999_999),
    }
    return ranges.get(point_type)


def _image_and_endian(point_type: PointType, order: Order) -> tuple[bool, str]:
    """(uses the little-endian-per-register image, struct endianness) for an order."""
    if point_type is PointType.STRING:
        # Text has no word order: only the byte order inside each register counts.
        return (order in (Order.BADC, Order.DCBA), ">")
    return {
        Order.ABCD: (False, ">"),
        Order.DCBA: (False, "<"),
        Order.BADC: (True, ">"),
        Order.CDAB: (True, "<"),
    }[order]


def _swapped_bit(bit: int) -> int:
    """Where bit N of a register lands when its two bytes are swapped."""
    return bit ^ 8


def bcd_to_int(raw: int, digits: int) -> int:
    """Packed BCD to int; raises DecodeError on a nibble above 9."""
    value = 0
    for shift in range(4 * (digits - 1), -1, -4):
        nibble = (raw >> shift) & 0xF
        if nibble > 9:
            raise DecodeError(f"invalid BCD digit in 0x{raw:0{digits}X}")
        value = value * 10 + nibble
    return value


def int_to_bcd(value: int, digits: int) -> int:
    """Int to packed BCD; raises ValueError when it does not fit."""
    if not 0 <= value < 10**digits:
        raise ValueError(f"{value} does not fit {digits} BCD digits")
    raw = 0
    for shift, ch in enumerate(reversed(str(value).zfill(digits))):
        raw |= int(ch) << (4 * shift)
    return raw


def decode_text(raw: bytes) -> str:
    """Register text: NUL-terminated or NUL/space padded ASCII or UTF-8."""
    try:
        return raw.split(b"\0", 1)[0].decode("utf-8").rstrip(" ")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid text") from exc


def encode(
    value: Value,
    point_type: PointType,
    order: Order = Order.ABCD,
    *,
    length: int | None = None,
    bit: int = 0,
) -> list[int]:
    """Encode an engineering-free raw value to registers (BOOL: to [0] or [1]).

    For BIT the result is one register with only that bit set or clear; callers that
    share a register between bits OR them together.
    """
    if point_type is PointType.BOOL:
        return [1 if value else 0]
    count = register_count(point_type, length)
    little_image, endian = _image_and_endian(point_type, order)
    if point_type is PointType.STRING:
        text = str(value).encode("utf-8")
        if len(text) > 2 * count:
            raise ValueError(f"text of {len(text)} bytes does not fit {count} registers")
        data = text.ljust(2 * count, b"\0")
    else:
        raw: int | float
        if point_type is PointType.BIT:
            if not 0 <= bit <= 15:
                raise ValueError(f"bit {bit} is outside 0..15")
            raw = (1 << bit) if value else 0
            # struct applies the byte order below, so bit N stays bit N of the value
        elif point_type is PointType.BCD16:
            raw = int_to_bcd(_as_int(value), 4)
        elif point_type is PointType.BCD32:
            raw = int_to_bcd(_as_int(value), 8)
        elif point_type in FLOAT_TYPES:
            raw = float(value)  # type: ignore[arg-type]
        else:
            raw = _as_int(value)
            bounds = value_range(point_type)
            assert bounds is not None
            if not bounds[0] <= raw <= bounds[1]:
                raise ValueError(f"{raw} is outside the range of {point_type}")
        data = struct.pack(endian + _STRUCT_CODE[point_type], raw)
    return list(struct.unpack(("<" if little_image else ">") + f"{count}H", data))


def _as_int(value: Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{value!r} is not an integer")
    return value


def decode(
    registers: Sequence[int],
    point_type: PointType,
    order: Order = Order.ABCD,
    *,
    length: int | None = None,
    bit: int = 0,
) -> Value:
    """Decode one point from its registers (BOOL: from one bit as 0/1)."""
    if point_type is PointType.BOOL:
        return bool(registers[0])
    field_ = Field(0, point_type, order, length=length, bit=bit)
    decoder = BlockDecoder([field_])
    values, errors = decoder.decode(registers)
    if errors:
        raise DecodeError(errors[0][1])
    return values[0]


@dataclass(frozen=True, slots=True)
class Field:
    """A point's place in a register block: offset from the block start, type, order."""

    offset: int
    point_type: PointType
    order: Order = Order.ABCD
    length: int | None = None
    bit: int = 0

    @property
    def count(self) -> int:
        """Registers the field occupies."""
        return register_count(self.point_type, self.length)


_WORD = struct.Struct(">H")
_Post = Callable[[Value], Value]


def _post_for(field_: Field) -> _Post | None:
    t = field_.point_type
    if t is PointType.BCD16:
        return lambda raw: bcd_to_int(raw, 4)  # type: ignore[arg-type]
    if t is PointType.BCD32:
        return lambda raw: bcd_to_int(raw, 8)  # type: ignore[arg-type]
    if t is PointType.STRING:
        return lambda raw: decode_text(raw)  # type: ignore[arg-type]
    return None


class BlockDecoder:
    """Decodes every field of one register block with one struct call per order group.

    `fields_in_output_order` says in which order `decode` returns values: grouped by
    (image, endianness), by offset inside a group, then BIT fields (several bits may share
    one register, so they are read from the registers directly). Callers align their point
    lists to it.
    """

    def __init__(self, fields: Sequence[Field]) -> None:
        if any(f.point_type is PointType.BOOL for f in fields):
            raise ValueError("BOOL points live in bit tables, not in register blocks")
        groups: dict[tuple[bool, str], list[Field]] = {}
        bits: list[Field] = []
        for f in sorted(fields, key=lambda f: (f.offset, f.bit)):
            if f.point_type is PointType.BIT:
                bits.append(f)
            else:
                groups.setdefault(_image_and_endian(f.point_type, f.order), []).append(f)
        self.needs_little_image = any(little for little, _ in groups)
        self.span = max((f.offset + f.count for f in fields), default=0)
        self._unpackers: list[tuple[bool, struct.Struct]] = []
        ordered: list[Field] = []
        for key in sorted(groups):
            little, endian = key
            fmt = [endian]
            pos = 0
            for f in groups[key]:
                if f.offset < pos:
                    raise ValueError(f"fields overlap at register offset {f.offset}")
                if f.offset > pos:
                    fmt.append(f"{2 * (f.offset - pos)}x")
                if f.point_type is PointType.STRING:
                    fmt.append(f"{2 * f.count}s")
                else:
                    fmt.append(_STRUCT_CODE[f.point_type])
                pos = f.offset + f.count
                ordered.append(f)
            self._unpackers.append((little, struct.Struct("".join(fmt))))
        self._bits = [
            (f.offset, 1 << (_swapped_bit(f.bit) if f.order in (Order.BADC, Order.DCBA) else f.bit))
            for f in bits
        ]
        ordered.extend(bits)
        self.fields_in_output_order: tuple[Field, ...] = tuple(ordered)
        self._post = [(i, p) for i, f in enumerate(ordered) if (p := _post_for(f)) is not None]
        self._float_indexes = [i for i, f in enumerate(ordered) if f.point_type in FLOAT_TYPES]
        self._floats_of: Callable[[list[Value]], Sequence[float]] | None = None
        if len(self._float_indexes) > 1:
            self._floats_of = operator.itemgetter(*self._float_indexes)
        self._be_fmt = struct.Struct(f">{self.span}H")

    def decode(self, registers: Sequence[int]) -> tuple[list[Value], list[tuple[int, str]]]:
        """Values in output order, and (index, reason) for fields that could not decode."""
        if len(registers) < self.span:
            raise DecodeError(f"short answer: {len(registers)} of {self.span} registers")
        return self.decode_bytes(self._be_fmt.pack(*registers[: self.span]))

    def decode_bytes(self, big: bytes) -> tuple[list[Value], list[tuple[int, str]]]:
        """As `decode`, from the registers as they came on the wire (big-endian bytes)."""
        if len(big) < 2 * self.span:
            raise DecodeError(f"short answer: {len(big) // 2} of {self.span} registers")
        little = b""
        if self.needs_little_image:
            swapped = array.array("H", big[: 2 * self.span])
            swapped.byteswap()
            little = swapped.tobytes()
        values: list[Value] = []
        for use_little, unpacker in self._unpackers:
            values.extend(unpacker.unpack_from(little if use_little else big))
        for offset, mask in self._bits:
            values.append(bool(_WORD.unpack_from(big, 2 * offset)[0] & mask))
        if not self._post and not self._float_indexes:
            return values, []
        errors: list[tuple[int, str]] = []
        for i, post in self._post:
            try:
                values[i] = post(values[i])
            except DecodeError as exc:
                values[i] = None
                errors.append((i, str(exc)))
        # One C-level sum instead of a test per value: it is finite only if every value
        # is (an infinity or NaN carries through; a finite overflow just takes the loop).
        floats_of = self._floats_of
        if floats_of is not None and not errors and math.isfinite(sum(floats_of(values))):
            return values, errors
        for i in self._float_indexes:
            if not math.isfinite(values[i]):  # type: ignore[arg-type]
                errors.append((i, f"not finite: {values[i]}"))
                values[i] = None
        return values, errors

"""DL/T 645-2007 value formats: the standard's format strings, decoded and encoded.

A format is one or more comma-separated fields, in the order the meter sends them; every
field goes on the wire lowest byte first, two BCD digits per byte:

    XXXXXX.XX     number, 8 BCD digits, 2 of them decimals        4 bytes   12345.67
    -XX.XXXX      number whose top bit is the sign (0 +, 1 -)      3 bytes   -1.2345
    XXXX          whole number                                     2 bytes   15
    NNNNNNNNNNNN  digits kept as text (addresses, meter numbers)   6 bytes   "000000123456"
    HHHH          raw bits as an unsigned integer (status words)   2 bytes   0x0014 -> 20
    YYMMDDhhmm    date/time units, one BCD byte each               5 bytes   "2024-05-01T13:45"
    XX.XXXX,YYMMDDhhmm   two fields (maximum demand and when)      8 bytes

Date/time units: YY MM DD WW (weekday, 0 = Sunday) hh mm ss, in any order the meter uses.
A value with year, month and day reads "20YY-MM-DD", one with hours and minutes "hh:mm"
(":ss" when given), both joined by "T"; the weekday is checked but not part of the text,
and a field of nothing but the weekday reads as its number. A time field of all zeros
with a month or day (a maximum demand never recorded, say) is "not set", not a date.

Worked example, "-XX.XXXX" for -1.2345 kW: digits 01 23 45, sign bit on the top byte
-> 81 23 45, lowest byte first -> 45 23 81, plus 33H each on the wire -> 78 56 B4.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from drivers.reading import Value

_NUMBER = re.compile(r"(-?)(X+)(?:\.(X+))?")
_UNITS = ("YY", "MM", "DD", "WW", "hh", "mm", "ss")
_UNIT_RANGES = {
    "YY": (0, 99),
    "MM": (1, 12),
    "DD": (1, 31),
    "WW": (0, 6),
    "hh": (0, 23),
    "mm": (0, 59),
    "ss": (0, 59),
}


class FieldKind(enum.StrEnum):
    """What a field's bytes mean."""

    NUMBER = "number"
    DIGITS = "digits"
    HEX = "hex"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class FieldFormat:
    """One field of a format: its kind, size and, for numbers, decimals and sign."""

    text: str
    kind: FieldKind
    size: int  # bytes on the wire
    decimals: int = 0
    signed: bool = False
    units: tuple[str, ...] = ()  # TIME: the units, most significant first

    @property
    def digits(self) -> int:
        """BCD digits of the field."""
        return 2 * self.size

    @property
    def limit(self) -> int:
        """One more than the largest raw magnitude (a signed field gives up its top bit)."""
        full: int = 10**self.digits
        return full // 10 * 8 if self.signed else full


@dataclass(frozen=True, slots=True)
class DataFormat:
    """A parsed format string: its fields in wire order and their total size."""

    text: str
    fields: tuple[FieldFormat, ...]

    @property
    def size(self) -> int:
        """Bytes of the whole value on the wire."""
        return sum(f.size for f in self.fields)


def parse_format(text: str) -> DataFormat:
    """Parse a format string such as "XXXXXX.XX" or "XX.XXXX,YYMMDDhhmm"; ValueError if bad."""
    if not text or text != text.strip():
        raise ValueError(f"empty or padded format {text!r}")
    return DataFormat(text, tuple(_parse_field(part) for part in text.split(",")))


def _parse_field(text: str) -> FieldFormat:
    m = _NUMBER.fullmatch(text)
    if m:
        whole, decimals = m.group(2), m.group(3) or ""
        digits = len(whole) + len(decimals)
        if digits % 2:
            raise ValueError(f"{text!r} has {digits} digits; BCD fields have an even number")
        return FieldFormat(text, FieldKind.NUMBER, digits // 2, len(decimals), bool(m.group(1)))
    for letter, kind in (("N", FieldKind.DIGITS), ("H", FieldKind.HEX)):
        if text and set(text) == {letter}:
            if len(text) % 2:
                raise ValueError(f"{text!r} has an odd number of digits")
            return FieldFormat(text, kind, len(text) // 2)
    units = tuple(text[i : i + 2] for i in range(0, len(text), 2))
    if len(text) % 2 == 0 and units and all(u in _UNITS for u in units):
        if len(set(units)) != len(units):
            raise ValueError(f"{text!r} repeats a date/time unit")
        return FieldFormat(text, FieldKind.TIME, len(units), units=units)
    raise ValueError(
        f"unknown format field {text!r} (use e.g. XXXXXX.XX, -XX.XXXX, NNNNNNNNNNNN, HHHH, "
        "or date/time units YY MM DD WW hh mm ss such as YYMMDDhhmm)"
    )


class DecodeError(ValueError):
    """A field's bytes do not hold a value of its format; the message is the quality reason."""


def _bcd(raw: bytes, field: FieldFormat, *, sign_bit: bool = False) -> tuple[int, bool]:
    """The number in BCD bytes sent lowest first, and whether the sign bit was set."""
    msb_first = bytearray(reversed(raw))
    negative = sign_bit and bool(msb_first[0] & 0x80)
    if negative:
        msb_first[0] &= 0x7F
    text = msb_first.hex()
    if not text.isdigit():
        raise DecodeError(f"invalid BCD digit in {raw.hex(' ').upper()} ({field.text})")
    return int(text), negative


def decode_field(field: FieldFormat, raw: bytes) -> Value:
    """One field's value from its wire bytes (already less 33H); DecodeError if invalid."""
    if len(raw) != field.size:
        raise DecodeError(f"short answer: {len(raw)} of {field.size} bytes ({field.text})")
    kind = field.kind
    if kind is FieldKind.NUMBER:
        magnitude, negative = _bcd(raw, field, sign_bit=field.signed)
        number = -magnitude if negative else magnitude
        return number / 10**field.decimals if field.decimals else number
    if kind is FieldKind.HEX:
        return int.from_bytes(raw, "little")
    if kind is FieldKind.DIGITS:
        _bcd(raw, field)
        return bytes(reversed(raw)).hex()
    return _decode_time(field, raw)


def _decode_time(field: FieldFormat, raw: bytes) -> Value:
    if not any(raw) and ("MM" in field.units or "DD" in field.units):
        raise DecodeError(f"not set (all zero, {field.text})")
    values: dict[str, int] = {}
    for unit, byte in zip(field.units, reversed(raw), strict=True):
        if byte >> 4 > 9 or byte & 0x0F > 9:
            raise DecodeError(f"invalid BCD digit in {raw.hex(' ').upper()} ({field.text})")
        value = (byte >> 4) * 10 + (byte & 0x0F)
        lo, hi = _UNIT_RANGES[unit]
        if not lo <= value <= hi:
            raise DecodeError(f"{unit} {value:02d} out of range ({field.text})")
        values[unit] = value
    if tuple(values) == ("WW",):
        return values["WW"]
    date = [
        f"{values[u] + 2000 if u == 'YY' else values[u]:02d}"
        for u in ("YY", "MM", "DD")
        if u in values
    ]
    clock = [f"{values[u]:02d}" for u in ("hh", "mm", "ss") if u in values]
    return "T".join(part for part in ("-".join(date), ":".join(clock)) if part)


def decode(fmt: DataFormat, raw: bytes) -> list[Value | DecodeError]:
    """Every field's value (or the error that field has) from the value bytes of an answer."""
    out: list[Value | DecodeError] = []
    pos = 0
    for field in fmt.fields:
        chunk = raw[pos : pos + field.size]
        pos += field.size
        try:
            out.append(decode_field(field, chunk))
        except DecodeError as exc:
            out.append(exc)
    return out


def encode_field(field: FieldFormat, value: Value | dt.datetime) -> bytes:
    """The wire bytes (before +33H) of one field's value; ValueError when it does not fit."""
    kind = field.kind
    if kind is FieldKind.NUMBER:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{field.text} needs a number, got {value!r}")
        raw = round(value * 10**field.decimals)
        negative = raw < 0
        if negative and not field.signed:
            raise ValueError(f"{field.text} cannot hold the negative value {value!r}")
        if abs(raw) >= field.limit:
            raise ValueError(f"{value!r} does not fit {field.text}")
        msb_first = bytearray.fromhex(f"{abs(raw):0{field.digits}d}")
        if negative:
            msb_first[0] |= 0x80
        return bytes(reversed(msb_first))
    if kind is FieldKind.HEX:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{field.text} needs an unsigned integer, got {value!r}")
        return value.to_bytes(field.size, "little")
    if kind is FieldKind.DIGITS:
        if not isinstance(value, str) or len(value) != field.digits or not value.isdigit():
            raise ValueError(f"{field.text} needs {field.digits} digits, got {value!r}")
        return bytes(reversed(bytes.fromhex(value)))
    return _encode_time(field, value)


def _encode_time(field: FieldFormat, value: Value | dt.datetime) -> bytes:
    if isinstance(value, dt.datetime):
        parts = {
            "YY": value.year % 100,
            "MM": value.month,
            "DD": value.day,
            "WW": value.isoweekday() % 7,  # 0 = Sunday
            "hh": value.hour,
            "mm": value.minute,
            "ss": value.second,
        }
    elif field.units == ("WW",) and isinstance(value, int) and not isinstance(value, bool):
        parts = {"WW": value}
    elif isinstance(value, str):
        parts = _time_parts(field, value)
    else:
        raise ValueError(f"{field.text} needs a datetime or its text, got {value!r}")
    out = bytearray()
    for unit in field.units:
        n = parts[unit]
        lo, hi = _UNIT_RANGES[unit]
        if not lo <= n <= hi:
            raise ValueError(f"{unit} {n} out of range for {field.text}")
        out.append((n // 10) << 4 | n % 10)
    return bytes(reversed(out))


def _time_parts(field: FieldFormat, text: str) -> dict[str, int]:
    """Units from the text `decode_field` gives ("2024-05-01T13:45"); the weekday from the date."""
    date_text, _, clock_text = text.partition("T") if "-" in text else ("", "", text)
    date_units: list[str] = [u for u in ("YY", "MM", "DD") if u in field.units]
    clock_units: list[str] = [u for u in ("hh", "mm", "ss") if u in field.units]
    date_parts = date_text.split("-") if date_text else []
    clock_parts = clock_text.split(":") if clock_text else []
    if len(date_parts) != len(date_units) or len(clock_parts) != len(clock_units):
        raise ValueError(f"{text!r} does not match {field.text}")
    parts: dict[str, int] = {u: int(p) for u, p in zip(date_units, date_parts, strict=True)}
    parts.update({u: int(p) for u, p in zip(clock_units, clock_parts, strict=True)})
    if "YY" in parts:
        parts["YY"] -= 2000
    if "WW" in field.units:
        if not {"YY", "MM", "DD"} <= parts.keys():
            raise ValueError(f"{field.text}: a weekday needs the full date")
        day = dt.date(2000 + parts["YY"], parts["MM"], parts["DD"])
        parts["WW"] = day.isoweekday() % 7
    return parts


def encode(fmt: DataFormat, values: list[Value | dt.datetime]) -> bytes:
    """The wire bytes (before +33H) of a whole value, one entry per field."""
    if len(values) != len(fmt.fields):
        raise ValueError(f"{fmt.text} has {len(fmt.fields)} fields, got {len(values)} values")
    return b"".join(encode_field(f, v) for f, v in zip(fmt.fields, values, strict=True))

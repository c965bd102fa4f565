"""OPC UA StatusCode to reading quality, and OPC UA values to reading values.

A StatusCode is 32 bits (OPC 10000-4 §7.39): the top two give the severity, the next 14
the code, the low 16 are info bits (limit flags, overflow) that do not change the code:

    00 Good        -> Quality.GOOD
    01 Uncertain   -> Quality.UNCERTAIN, reason = the status name ("UncertainLastUsableValue")
    10/11 Bad      -> Quality.BAD, value None, reason = the status name ("BadNodeIdUnknown")

A Bad value is never replaced by text: the value is None and the name goes in the reason.
An Uncertain value keeps its value. The names come from the caller (the driver owns
asyncua's table), so this module stays free of asyncua.
"""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Callable

from drivers.reading import Quality, Value

SEVERITY_SHIFT = 30
CODE_MASK = 0xFFFF0000

Issue = tuple[Quality, str]


def quality_of(code: int, name_of: Callable[[int], str]) -> Issue | None:
    """None for a Good status, else (quality, status name)."""
    severity = (code >> SEVERITY_SHIFT) & 0b11
    if severity == 0:
        return None
    name = name_of(code & CODE_MASK)
    return (Quality.UNCERTAIN, name) if severity == 1 else (Quality.BAD, name)


def plain_value(raw: object) -> tuple[Value, str | None]:
    """A value as the reading model carries it, or (None, why it cannot be carried)."""
    if raw is None:
        return None, "no value"
    if isinstance(raw, bool):
        return raw, None
    if isinstance(raw, enum.Enum):
        raw = raw.value
    if isinstance(raw, int):
        return raw, None
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None, f"not finite: {raw}"
        return raw, None
    if isinstance(raw, str):
        return raw, None
    if isinstance(raw, datetime.datetime):
        return raw.isoformat(), None
    text = getattr(raw, "Text", None)  # LocalizedText
    if isinstance(text, str):
        return text, None
    if isinstance(raw, bytes | bytearray):
        return raw.hex(), None
    return None, f"unsupported value type {type(raw).__name__}"


def scaled(value: Value, scale: float, offset: float, decimals: int | None) -> Value:
    """value x scale + offset, rounded to `decimals`; booleans and text pass unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if scale != 1.0 or offset != 0.0:
        value = value * scale + offset
    if decimals is not None:
        value = round(value, decimals)
    return value

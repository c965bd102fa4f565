"""Checked fields of a decoded JSON message (alarm transitions, command audits): each
reader returns the field or raises Rejected("bad_field", ...) naming it and what came."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from edge_agent.ingest.schema import MIN_TS_MS, Rejected


def shown(value: object) -> str:
    """A value as a message quotes it: JSON where it can be, at most 40 characters."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(doc: dict[str, object], key: str, *, low: int = 0, high: int | None = None) -> int:
    value = doc.get(key)
    if type(value) is not int or value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise Rejected("bad_field", f"{key} must be an integer {bounds}, got {shown(value)}")
    return value


def timestamp(doc: dict[str, object], key: str, *, now_ms: int, max_future_ms: int) -> int:
    """An integer of milliseconds since 1970, from 2000 on and not too far ahead."""
    value = integer(doc, key)
    if value < MIN_TS_MS:
        raise Rejected("bad_timestamp", f"{key} {value} is before 2000-01-01")
    if value > now_ms + max_future_ms:
        ahead = (value - now_ms) / 1000
        raise Rejected("bad_timestamp", f"{key} {value} is {ahead:.0f} s in the future")
    return value


def boolean(doc: dict[str, object], key: str) -> bool:
    value = doc.get(key)
    if type(value) is not bool:
        raise Rejected("bad_field", f"{key} must be true or false, got {shown(value)}")
    return value


def one_of(doc: dict[str, object], key: str, choices: Iterable[str]) -> str:
    value = doc.get(key)
    if type(value) is not str or value not in choices:
        raise Rejected("bad_field", f"{key} {shown(value)} is not one of {', '.join(choices)}")
    return value

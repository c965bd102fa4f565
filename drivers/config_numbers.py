"""Number types of the config models: numbers are numbers, never booleans.

pydantic in its default (lax) mode reads `true` as 1 and `false` as 0, so `interval_s:
true` polled every second and `device_id: false` addressed unit 0. Every int and float of
a config model takes one of these types instead, which refuse a boolean with its own
error (`bool_not_number`, worded for the site file by edge_agent/config/messages.py).
Text is still read as a number, because `${ENV}` values are text (`device_id: ${UNIT}`);
inf and nan are refused, as no setting means them.

The lower bounds keep a typo from becoming a busy loop (`interval_s: 1e-9` polled a device
1,070 times a second): they apply where a value paces a loop or a wait. Each is checked
after the field's own bounds, so `interval_s: 0` still reads "must be more than 0".
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

BOOL_NOT_NUMBER = "bool_not_number"  # the error type of a boolean given for a number

MIN_INTERVAL_S = 0.01  # a poll (or publishing) interval: at most 100 polls a second
MIN_TIMEOUT_S = 0.05  # a device or server answer: a LAN round trip takes a few ms
MIN_BACKOFF_S = 0.1  # the cap of a reconnect backoff: at most 10 attempts a second
MIN_TICK_S = 0.01  # a housekeeping timer (a flush, a batch's age, the alarm tick)


def _refuse_bool(expected: str) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, bool):
            raise PydanticCustomError(
                BOOL_NOT_NUMBER, "expected {expected}, got a boolean", {"expected": expected}
            )
        return value

    return BeforeValidator(check)


def at_least(minimum: float) -> AfterValidator:
    """A lower bound beyond the field's own, reported as pydantic reports `ge`."""

    def check(value: float) -> float:
        if value < minimum:
            raise PydanticCustomError(
                "greater_than_equal",
                "Input should be greater than or equal to {ge}",
                {"ge": minimum},
            )
        return value

    return AfterValidator(check)


Number = Annotated[float, _refuse_bool("a number"), Field(allow_inf_nan=False)]
Seconds = Annotated[float, _refuse_bool("a number of seconds"), Field(allow_inf_nan=False)]
Whole = Annotated[int, _refuse_bool("a whole number")]

# Bounds of float fields are written as floats: behind the boolean check pydantic reports
# them as written, and the messages have always said "more than 0.0".
PollInterval = Annotated[Seconds, Field(gt=0.0, le=86400.0), at_least(MIN_INTERVAL_S)]
"""How often a device is polled (or an OPC UA subscription publishes)."""
Timeout = Annotated[Seconds, Field(gt=0.0), at_least(MIN_TIMEOUT_S)]
"""How long an answer is awaited (each field adds its upper bound)."""
BackoffCap = Annotated[Seconds, Field(gt=0.0, le=3600.0), at_least(MIN_BACKOFF_S)]
"""The longest wait between reconnect attempts."""
Tick = Annotated[Seconds, Field(gt=0.0), at_least(MIN_TICK_S)]
"""A housekeeping period (each field adds its upper bound)."""

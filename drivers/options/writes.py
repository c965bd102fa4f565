"""`write:` on a point: the point may be written over the command topic, within limits.

    write: {}                            # writable, any value of the point's type
    write: {min: 0, max: 50}             # numbers: the engineering value's bounds
    write: {values: [0, 1, 2]}           # an enumeration: only these values
    write: {address: 200}                # the set-point lives elsewhere than the read-back

A point without `write:` is never written, whatever a command says; and nothing is written
at all unless the site file's top-level `writes: {enabled: true}` says so. The protocol
decides which points can carry `write:` (a Modbus input register cannot) and which type a
value must have; these options only bound it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.config_numbers import Number, Whole

AllowedValue = bool | int | float | str


class WriteOptions(BaseModel):
    """What may be written to one point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: Number | None = None
    max: Number | None = None
    values: Annotated[tuple[AllowedValue, ...], Field(min_length=1, max_length=256)] | None = None
    # Where the set-point is written when it is not the read-back address (same table).
    address: Annotated[Whole, Field(ge=0, le=65535)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WriteOptions:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        if self.values is not None and (self.min is not None or self.max is not None):
            raise ValueError("give either values (an enumeration) or min/max, not both")
        return self

    def refusal(self, value: object) -> str | None:
        """Why `value` is outside these limits, or None when it is within them."""
        if self.values is not None:
            if not any(_same(value, allowed) for allowed in self.values):
                shown = ", ".join(_text(v) for v in self.values[:10])
                more = ", ..." if len(self.values) > 10 else ""
                return f"{_text(value)} is not one of {shown}{more}"
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                return f"below min {self.min:g}"
            if self.max is not None and value > self.max:
                return f"above max {self.max:g}"
        return None


def _same(value: object, allowed: AllowedValue) -> bool:
    # true is not 1 here: an enumeration of numbers takes numbers.
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    return value == allowed


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value[:40])
    return str(value)

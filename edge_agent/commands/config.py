"""The site file's top-level `writes:` block: whether, and how fast, points may be written.

    writes: {enabled: true}                   # absent or false: every write is rejected
    writes: {enabled: true, expires_s: 5, max_expires_s: 60, per_point_per_min: 30}

Which points are writable, and within which limits, is said on the points (`write:`,
drivers/options/writes.py); this block is the gateway's switch and its bounds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.config_numbers import Seconds, Whole


class WritesConfig(BaseModel):
    """The gateway's switch for writes, and the bounds of every command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # A request not executed within this long after it arrived is rejected as expired: a
    # set-point meant for now must not land after an outage or a reconnect.
    expires_s: Annotated[Seconds, Field(gt=0.0, le=3600.0)] = 5.0
    max_expires_s: Annotated[Seconds, Field(gt=0.0, le=3600.0)] = 60.0  # a request's own
    per_point_per_min: Annotated[Whole, Field(ge=1, le=6000)] = 30  # accepted writes, any client
    queue_max: Annotated[Whole, Field(ge=1, le=1000)] = 32  # waiting writes per line

    @model_validator(mode="after")
    def _bounded(self) -> WritesConfig:
        if self.expires_s > self.max_expires_s:
            raise ValueError(
                f"expires_s {self.expires_s:g} is above max_expires_s {self.max_expires_s:g}"
            )
        return self

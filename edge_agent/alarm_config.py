"""The site config's top-level `alarms:` block: alarm-system thresholds of the gateway."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class AlarmsConfig(BaseModel):
    """Flood and chatter thresholds, shelving limit, timer resolution.

    The defaults are the commonly cited ISA-18.2 figures (reference/safety.md §5.2, marked
    unverified there, hence configurable).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flood_count: Annotated[int, Field(ge=1)] = 10  # a flood is MORE than this many raises
    flood_window_s: Annotated[float, Field(gt=0)] = 600.0
    chatter_count: Annotated[int, Field(ge=2)] = 3  # chattering: this many raises or more
    chatter_window_s: Annotated[float, Field(gt=0)] = 60.0
    shelve_max_s: Annotated[float, Field(gt=0)] = 8 * 3600.0
    # How often stale data, comm-loss delays and shelving expiry are looked at.
    tick_s: Annotated[float, Field(gt=0, le=5)] = 0.25

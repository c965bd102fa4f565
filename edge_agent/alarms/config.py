"""The site config's top-level `alarms:` block: alarm-system thresholds of the gateway."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from drivers.config_numbers import Seconds, Tick, Whole


class AlarmsConfig(BaseModel):
    """Flood and chatter thresholds, shelving limit, timer resolution.

    The defaults are the commonly cited ISA-18.2 figures (reference/safety.md §5.2, marked
    unverified there, hence configurable).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flood_count: Annotated[Whole, Field(ge=1)] = 10  # a flood is MORE than this many raises
    flood_window_s: Annotated[Seconds, Field(gt=0.0)] = 600.0
    chatter_count: Annotated[Whole, Field(ge=2)] = 3  # chattering: this many raises or more
    chatter_window_s: Annotated[Seconds, Field(gt=0.0)] = 60.0
    shelve_max_s: Annotated[Seconds, Field(gt=0.0)] = 8 * 3600.0
    # How often stale data, comm-loss delays and shelving expiry are looked at.
    tick_s: Annotated[Tick, Field(le=5.0)] = 0.25

"""`energy:` on a point: declares it an energy counter for the energy stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class EnergyOptions(BaseModel):
    """A counter of consumed (or produced) energy or medium."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["electricity", "reactive", "water", "natural_gas", "steam", "compressed_air"]
    direction: Literal["import", "export"] | None = None

"""`energy:` on a point: declares it an energy counter (or demand register) for the energy stage.

    energy: {kind: electricity, direction: import}                 # the usual case
    energy: {kind: water}                                          # m3 counter
    energy: {kind: electricity, direction: import, width_bits: 16, resolution: 1}
    energy: {kind: electricity, direction: import, rollover: 99999999.99}   # display wrap
    energy: {kind: electricity, direction: import, role: demand}   # the meter's demand register

Counter wrap: a register of `width_bits` bits counting in steps of `resolution` wraps at
2**width_bits x resolution. Both default from the point (its type's width, its scale), so
a `uint32` point with `scale: 0.01` wraps at 42 949 672.96 without saying so; a float
register has no width and never wraps (a drop is a reset). `rollover` overrides both, for
meters that wrap at a decimal display value.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.config_numbers import Number

EnergyKind = Literal["electricity", "reactive", "water", "natural_gas", "steam", "compressed_air"]


class EnergyOptions(BaseModel):
    """A counter of consumed (or produced) energy or medium, or a meter's demand register."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EnergyKind
    direction: Literal["import", "export"] | None = None
    # counter: cumulative register; demand / demand_max: the meter's own (maximum) demand
    # register, published beside the demand the stage computes from the import counter.
    role: Literal["counter", "demand", "demand_max"] = "counter"
    width_bits: Literal[16, 32, 48, 64] | None = None  # default: the point type's width
    resolution: Annotated[Number, Field(gt=0.0)] | None = None  # default: the point's scale
    rollover: Annotated[Number, Field(gt=0.0)] | None = None  # wraps at this value instead
    # Largest plausible rate in the counter's unit per hour (e.g. kWh/h = kW): a rise beyond
    # it, or a "wrap" that would need more, is flagged as a reset instead of counted.
    max_rate: Annotated[Number, Field(gt=0.0)] | None = None
    unit: Annotated[str, Field(max_length=16)] | None = None  # default: the point's unit

    @model_validator(mode="after")
    def _consistent(self) -> EnergyOptions:
        if self.role != "counter" and self.kind != "electricity":
            raise ValueError(f"role {self.role} applies to electricity, not {self.kind}")
        if self.direction is not None and self.kind not in ("electricity", "reactive"):
            raise ValueError(f"direction applies to electricity and reactive, not {self.kind}")
        if self.role != "counter" and (
            self.width_bits is not None or self.rollover is not None or self.max_rate is not None
        ):
            raise ValueError("width_bits, rollover and max_rate apply to counters only")
        return self

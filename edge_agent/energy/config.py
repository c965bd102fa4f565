"""The `energy:` block of a site config: clock, intervals, tariff, coefficients, hierarchy.

    energy:
      timezone: Asia/Shanghai          # intervals, days and months follow this wall clock
      interval_min: 15                 # 实时指标 every 15 min (30 or 60 where allowed)
      tariff: example-tou              # a calendar by name (edge-agent catalog), or a path
      standard_coal: gbt2589-2020-equivalent
      grid_emission: mee-nbs-2023-national
      contract_demand_kw: 800          # drawn in the report against the demand curve
      contract_demand_meter: main-incomer   # the meter it is billed on (default: the one
                                       # top-level meter of the hierarchy, if only one)
      hierarchy:                       # site -> area -> line, each measured by meters
        - {name: workshop-1, level: area, meters: [main-incomer]}
        - {name: line-1, level: line, parent: workshop-1, meters: [line-1-feeder]}
      virtual_meters:
        - {name: workshop-1-losses, formula: "main-incomer - line-1-feeder - line-2-feeder"}

A meter reference is a device name (all its consumption counters: direction import or
none) or `device.point` for one counter; virtual meters may be referenced like devices.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.config_numbers import Number, Seconds, Whole

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_TERM = re.compile(r"\s*([+-])?\s*([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def formula_terms(formula: str) -> list[tuple[int, str]]:
    """`a - b + c` -> [(1, 'a'), (-1, 'b'), (1, 'c')]; ValueError when it is not that shape."""
    terms: list[tuple[int, str]] = []
    pos = 0
    while pos < len(formula):
        match = _TERM.match(formula, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"formula {formula!r}: expected 'meter + meter - meter ...'")
        sign, name = match.groups()
        if sign is None and terms:
            raise ValueError(f"formula {formula!r}: missing + or - before {name!r}")
        terms.append((-1 if sign == "-" else 1, name))
        pos = match.end()
    if not terms:
        raise ValueError("formula is empty")
    return terms


class HierarchyNode(_Model):
    """A site part (area = workshop, line) measured by meters, or the sum of its children."""

    name: Annotated[str, Field(pattern=_NAME, max_length=64)]
    level: Literal["area", "line"]
    parent: str | None = None  # None: directly under the site
    meters: tuple[str, ...] = ()  # empty: the sum of the child nodes


class VirtualMeter(_Model):
    """A meter computed from others, e.g. a workshop minus its lines = unmetered losses."""

    name: Annotated[str, Field(pattern=_NAME, max_length=64)]
    formula: str

    @field_validator("formula")
    @classmethod
    def _parses(cls, formula: str) -> str:
        formula_terms(formula)
        return formula


class EnergyConfig(_Model):
    """Site-wide settings of the energy stage (every key has a default)."""

    timezone: str = "Asia/Shanghai"
    interval_min: Literal[5, 10, 15, 30, 60] = 15
    demand_window_min: Annotated[Whole, Field(ge=1, le=60)] = 15  # 需量周期; slides every minute
    tariff: str | None = None
    standard_coal: str = "gbt2589-2020-equivalent"
    grid_emission: str = "mee-nbs-2023-national"
    contract_demand_kw: Annotated[Number, Field(gt=0.0)] | None = None
    contract_demand_meter: Annotated[str, Field(pattern=_NAME, max_length=64)] | None = None
    hierarchy: tuple[HierarchyNode, ...] = ()
    virtual_meters: tuple[VirtualMeter, ...] = ()
    # How often the running state is saved (energy_state.py): at most this much of it is
    # lost by a crash; a clean stop saves it anyway.
    state_save_s: Annotated[Seconds, Field(ge=5.0, le=3600.0)] = 60.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (e.g. Asia/Shanghai)") from None
        return name

    @model_validator(mode="after")
    def _tree(self) -> EnergyConfig:
        names = [n.name for n in self.hierarchy]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"hierarchy names used twice: {sorted(dup)}")
        known = set(names)
        for node in self.hierarchy:
            if node.parent is not None and node.parent not in known:
                raise ValueError(f"hierarchy {node.name}: unknown parent {node.parent!r}")
        for node in self.hierarchy:  # no cycles: every chain of parents ends at the site
            seen, at = {node.name}, node.parent
            while at is not None:
                if at in seen:
                    raise ValueError(f"hierarchy {node.name}: parents form a loop")
                seen.add(at)
                at = next(n.parent for n in self.hierarchy if n.name == at)
        virtual = [v.name for v in self.virtual_meters]
        if len(set(virtual)) != len(virtual):
            raise ValueError("virtual meter names used twice")
        return self

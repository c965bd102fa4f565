"""Versioned coefficient tables: standard coal (GB/T 2589) and grid CO2 factors, as data.

The tables live in the catalog's energy/standard-coal.yaml and energy/grid-emission.yaml
(each row with its source; a plant's own files of those names add or correct versions, see
edge_agent/catalog); a site picks one version of each (`energy.standard_coal`,
`energy.grid_emission`) and every tce and CO2 total records the versions it used, so a
report can be recomputed when a table is corrected. Also here: the canonical unit of each
energy kind and the conversions from the units meters use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.catalog import Kind, folders
from edge_agent.config.document import read_data

# kind -> canonical unit, and the factor from each accepted unit to it.
CANONICAL: dict[str, str] = {
    "electricity": "kWh",
    "reactive": "kvarh",
    "water": "m3",
    "natural_gas": "m3",
    "steam": "t",
    "compressed_air": "m3",
}
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "electricity": {"kWh": 1.0, "Wh": 0.001, "MWh": 1000.0},
    "reactive": {"kvarh": 1.0, "kVArh": 1.0, "varh": 0.001, "VArh": 0.001, "Mvarh": 1000.0},
    "water": {"m3": 1.0, "m³": 1.0, "t": 1.0, "L": 0.001},
    "natural_gas": {"m3": 1.0, "m³": 1.0, "Nm3": 1.0, "L": 0.001},
    "steam": {"t": 1.0, "kg": 0.001},
    "compressed_air": {"m3": 1.0, "m³": 1.0, "Nm3": 1.0, "L": 0.001},
}
DEMAND_FACTORS: dict[str, float] = {"kW": 1.0, "W": 0.001, "MW": 1000.0}


def unit_factor(kind: str, unit: str | None) -> float:
    """Factor from `unit` to the kind's canonical unit; None means the canonical unit."""
    if unit is None:
        return 1.0
    factors = UNIT_FACTORS[kind]
    if unit not in factors:
        known = ", ".join(factors)
        raise ValueError(f"unit {unit!r} is not a unit of {kind} (use {known})")
    return factors[unit]


def demand_factor(unit: str | None) -> float:
    """Factor from a demand register's unit to kW."""
    if unit is None:
        return 1.0
    if unit not in DEMAND_FACTORS:
        raise ValueError(f"unit {unit!r} is not a power unit (use kW, W, MW)")
    return DEMAND_FACTORS[unit]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoalFactor(_Model):
    """kgce per unit of one energy kind."""

    unit: str
    kgce: float


class CoalTable(_Model):
    """One version of the standard-coal table."""

    version: str
    standard: str
    basis: str
    source: str
    factors: dict[str, CoalFactor]


class EmissionFactor(_Model):
    """One version of a grid emission factor."""

    version: str
    data_year: int
    region: str
    kg_co2_per_kwh: float
    source: str


class _CoalFile(_Model):
    tables: tuple[CoalTable, ...]


class _EmissionFile(_Model):
    tables: tuple[EmissionFactor, ...]


@dataclass(frozen=True, slots=True)
class Coefficients:
    """The tables a site uses."""

    coal: CoalTable
    emission: EmissionFactor

    def tce(self, kind: str, amount: float) -> float | None:
        """Tonnes of standard coal for `amount` canonical units (None: kind not in table)."""
        factor = self.coal.factors.get(kind)
        if factor is None:
            return None
        if factor.unit != CANONICAL[kind]:
            amount *= unit_factor(kind, CANONICAL[kind]) / unit_factor(kind, factor.unit)
        return amount * factor.kgce / 1000.0

    def co2_t(self, kind: str, direction: str | None, amount: float) -> float | None:
        """Tonnes of CO2 of purchased electricity (other kinds: None, no factor held)."""
        if kind != "electricity" or direction == "export":
            return None
        return amount * self.emission.kg_co2_per_kwh / 1000.0

    @property
    def versions(self) -> dict[str, str]:
        """What every total records."""
        return {"standard_coal": self.coal.version, "grid_emission": self.emission.version}


def _read(path: Path) -> object:
    return read_data(path)


def load_coefficients(
    standard_coal: str,
    grid_emission: str,
    *,
    site_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Coefficients:
    """The named versions, first found in the catalog's layers; ValueError lists the known."""
    coal: dict[str, CoalTable] = {}
    emission: dict[str, EmissionFactor] = {}
    for folder in folders(Kind.COEFFICIENTS, site_dir, environ=environ):
        coal_path = folder.path / "standard-coal.yaml"
        emission_path = folder.path / "grid-emission.yaml"
        try:
            if coal_path.is_file():
                for t in _CoalFile.model_validate(_read(coal_path)).tables:
                    coal.setdefault(t.version, t)
            if emission_path.is_file():
                for e in _EmissionFile.model_validate(_read(emission_path)).tables:
                    emission.setdefault(e.version, e)
        except ValidationError as exc:
            bad = coal_path if "_CoalFile" in exc.title else emission_path
            raise ValueError(f"{bad}: {exc}") from exc
    if standard_coal not in coal:
        raise ValueError(
            f"standard_coal {standard_coal!r} is not in standard-coal.yaml "
            f"(known: {', '.join(coal)})"
        )
    if grid_emission not in emission:
        raise ValueError(
            f"grid_emission {grid_emission!r} is not in grid-emission.yaml "
            f"(known: {', '.join(emission)})"
        )
    return Coefficients(coal[standard_coal], emission[grid_emission])

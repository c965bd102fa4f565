"""Config-time checks of the `energy:` block against the site's devices (for `edge-agent check`).

What the block's model cannot see alone: units of the `energy:` points, the tariff
calendar file, the coefficient versions, and the hierarchy's meter references. Each
problem becomes a config issue at the key it concerns, so a typo fails `check`, not the
agent at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.config.document import Document
from edge_agent.config.errors import ConfigIssue
from edge_agent.energy.coefficients import load_coefficients
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.demand import demand_meters
from edge_agent.energy.hierarchy import Hierarchy
from edge_agent.energy.points import energy_points
from edge_agent.energy.tariffs import find_calendar, load_calendar


def energy_issues(
    doc: Document, config: EnergyConfig, devices: Sequence[Any], *, site: str, base: Path
) -> list[ConfigIssue]:
    """Every problem of the energy settings of a site whose devices loaded."""
    issues: list[ConfigIssue] = []
    try:
        points = energy_points(devices)
    except ValueError as exc:
        name = str(exc).split()[1] if str(exc).startswith("device ") else ""
        raw = doc.at(("devices",))
        count = len(raw) if isinstance(raw, list) else 0
        found = [i for i in range(count) if doc.at(("devices", i, "name")) == name]
        where: tuple[str | int, ...] = ("devices", found[0]) if found else ()
        issues.append(doc.issue(where, str(exc)))
        return issues
    if config.tariff is not None:
        try:
            load_calendar(find_calendar(config.tariff, base=base))
        except ValueError as exc:
            issues.append(doc.issue(("energy", "tariff"), str(exc)))
    try:
        load_coefficients(config.standard_coal, config.grid_emission, site_dir=base)
    except ValueError as exc:
        key = "standard_coal" if "standard_coal" in str(exc) else "grid_emission"
        issues.append(doc.issue(("energy", key), str(exc)))
    meter = config.contract_demand_meter
    if meter is not None:
        counters = [p.info for p in points]
        if config.contract_demand_kw is None:
            issues.append(
                doc.issue(("energy", "contract_demand_meter"), "needs contract_demand_kw")
            )
        elif meter not in demand_meters(counters):
            issues.append(
                doc.issue(
                    ("energy", "contract_demand_meter"),
                    f"{meter!r} is not a device with an electricity import counter",
                )
            )
    if config.hierarchy or config.virtual_meters:
        try:
            Hierarchy(config, site, [p.info for p in points if p.options.role == "counter"])
        except ValueError as exc:
            key = "virtual_meters" if str(exc).startswith("virtual") else "hierarchy"
            issues.append(doc.issue(("energy", key), str(exc)))
    return issues

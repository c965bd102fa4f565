"""The energy stage driven by simulated histories, for the energy tests.

`run` feeds a stage the polls of some histories in time order through an outlet that
keeps the messages; `meter` makes a counter point the way the agent does from `energy:`
options; `ref_*` are the reference computations over a history (energy_reference.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.modbus.codec import PointType
from drivers.modbus.plugin import WRAP_COUNTS
from drivers.options.energy import EnergyOptions
from drivers.reading import PointSpec, Poll
from edge_agent.energy.coefficients import CANONICAL
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.stage import CounterPoint, EnergyStage, counter_spec
from edge_agent.energy.tariffs import TariffCalendar, find_calendar, load_calendar
from tests.energy_reference import SHANGHAI, History

MIN = 60_000
EXAMPLE = load_calendar(find_calendar("example-tou", base=Path(".")))
IMPORT = EnergyOptions(kind="electricity", direction="import")


class Collect:
    """An outlet that keeps what the stage sends (pure logic: no broker needed)."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        assert suffix == "energy"
        assert readings == len(doc["points"])
        self.docs.append(dict(doc))
        return len(self.docs)

    def of(self, kind: str, device: str | None = None) -> list[dict[str, Any]]:
        return [
            d for d in self.docs if d["type"] == kind and (device is None or d["device"] == device)
        ]


def meter(
    device: str,
    *,
    point: str = "energy_import",
    options: EnergyOptions = IMPORT,
    point_type: PointType = PointType.UINT16,
    scale: float = 0.01,
    unit: str = "kWh",
    poll_s: float = 30.0,
) -> CounterPoint:
    spec = counter_spec(
        options, wrap_counts=WRAP_COUNTS[point_type], scale=scale, unit=unit, poll_interval_s=poll_s
    )
    return CounterPoint(device, point, options, spec, poll_s, CANONICAL[options.kind])


def run(
    histories: Mapping[str, History],
    points: Sequence[CounterPoint],
    *,
    config: EnergyConfig | None = None,
    calendar: TariffCalendar | None = EXAMPLE,
) -> Collect:
    """Feed every device's samples to a stage in time order."""
    out = Collect()
    stage = EnergyStage(
        points, config=config or EnergyConfig(), outlet=out, site="plant", calendar=calendar
    )
    events = sorted(
        (t, name, value)
        for name, h in histories.items()
        for t, value in zip(h.ts, h.register, strict=True)
    )
    for t, name, value in events:
        specs = (PointSpec("energy_import", "kWh"), PointSpec("voltage", "V"))
        stage.observe(Poll(name, t * 1_000_000, specs, [value, 230.0]))
    return out


def first_boundary(h: History) -> int:
    return -(-h.ts[0] // MIN) * MIN


def ref_interval(h: History, start: int, end: int, poll_s: float) -> tuple[float, float]:
    """Reference (energy, completeness) of [start, end), observed from the first minute on."""
    a = max(start, first_boundary(h))
    expected = (end - start) / 1000 / poll_s
    return h.energy(a, end), min(1.0, h.readings(a, end) / expected)


def example_period(t_ms: int) -> str:
    """The example calendar, written out by hand."""
    local = dt.datetime.fromtimestamp(t_ms / 1000, SHANGHAI)
    h = local.hour
    if h >= 23 or h < 8:
        return "valley"
    if h < 9 or 12 <= h < 17:
        return "flat"
    if local.month in (1, 7, 8, 9, 12) and 20 <= h < 22:
        return "sharp"
    return "peak"


def ref_split(h: History, start: int, end: int, period_of: Any) -> dict[str, float]:
    out = dict.fromkeys(("sharp", "peak", "flat", "valley"), 0.0)
    m = max(start, first_boundary(h))
    while m < end:
        out[period_of(m)] += h.energy(m, m + MIN)
        m += MIN
    return out


def value(doc: dict[str, Any], name: str) -> Any:
    return doc["points"][name]["value"]

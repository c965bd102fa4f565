"""What a protocol's simulators offer `edge-agent simulate`: served devices and their controls.

Each protocol's simulator package exposes one `SimulatorPlugin`, named by the driver plugin's
`simulator` import string (drivers/contract.py), so adding a protocol adds no line here:

    site devices (device, profile, profile_name)
        ─► plugin.specs(...)        what to simulate, seeded from each device's name
        ─► plugin.serve(specs)      listeners up; `Served`: per-device fault controls and
                                    the "serving ..." lines `simulate` prints
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simulators.common.control import Control

__all__ = ["Served", "SimulatedDevice", "SimulatorPlugin", "TariffClock"]

TariffClock = Callable[[dt.datetime], int]  # tariff 1..4 (尖峰平谷) at a clock time


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """A site's device as its simulator gets it."""

    device: Any  # the protocol's device model
    profile: Any  # its profile model, or None
    profile_name: str


@dataclass(slots=True)
class Served:
    """Running simulators of one protocol."""

    controls: dict[str, Control] = field(default_factory=dict)  # device name -> its faults
    lines: dict[str, list[str]] = field(default_factory=dict)  # device name -> what it serves


class SimulatorPlugin(Protocol):
    """One protocol's simulators."""

    def specs(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        site_dir: Path,
        tariff_at: TariffClock | None,
    ) -> list[Any]:
        """What to simulate for these devices (repeatable: seeded from their names)."""
        ...

    def serve(self, specs: Sequence[Any]) -> AbstractAsyncContextManager[Served]:
        """Start serving; everything stops on leaving the block."""
        ...

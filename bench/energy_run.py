"""Cost of the energy stage on the hot path: `observe()` per poll (`python -m bench.energy_run`).

A meter poll of 30 points, 3 of them energy counters (import kWh, export kWh, reactive
kvarh), polled every second for simulated days: most polls only advance the counters, one
in 60 completes a minute (demand), one in 900 an interval (TOU split, messages), one in
86 400 a day. Compared with a poll of a device that has no energy points (the cost every
other device pays) and with the same poll through a stage with a hierarchy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from drivers.modbus.codec import PointType
from drivers.modbus.plugin import WRAP_COUNTS
from drivers.options.energy import EnergyOptions
from drivers.reading import PointSpec, Poll
from edge_agent.energy.config import EnergyConfig, HierarchyNode, VirtualMeter
from edge_agent.energy.points import CounterPoint
from edge_agent.energy.stage import EnergyStage, counter_spec
from edge_agent.energy.state import EnergyStateFile


class _Count:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, suffix: str, doc: object, *, device: str = "", readings: int = 1) -> int:
        self.sent += 1
        return self.sent


def _points(device: str) -> list[CounterPoint]:
    out = []
    for name, kind, direction in (
        ("energy_import", "electricity", "import"),
        ("energy_export", "electricity", "export"),
        ("reactive_energy_import", "reactive", "import"),
    ):
        options = EnergyOptions(kind=kind, direction=direction)  # type: ignore[arg-type]
        spec = counter_spec(
            options,
            wrap_counts=WRAP_COUNTS[PointType.UINT32],
            scale=0.01,
            unit=None,
            poll_interval_s=1.0,
        )
        out.append(CounterPoint(device, name, options, spec, 1.0, "kWh"))
    return out


def measure(polls: int, *, hierarchy: bool) -> tuple[float, float, int]:
    """(µs per energy poll, µs per poll of a device without energy points, messages)."""
    config = EnergyConfig(tariff=None)
    if hierarchy:
        config = EnergyConfig(
            hierarchy=(HierarchyNode(name="hall", level="area", meters=("m1",)),),
            virtual_meters=(VirtualMeter(name="rest", formula="m1 - m2"),),
        )
    out = _Count()
    stage = EnergyStage([*_points("m1"), *_points("m2")], config=config, outlet=out, site="s")
    names = ["energy_import", "energy_export", "reactive_energy_import"] + [
        f"p{i}" for i in range(27)
    ]
    specs = tuple(PointSpec(n) for n in names)
    t0 = 1_793_462_400_000
    values = [0.0] * 30
    batch = []
    for k in range(polls):
        values = [1000.0 + 0.02 * k, 5.0 + 0.001 * k, 300.0 + 0.006 * k] + [230.0] * 27
        batch.append(
            Poll("m1" if k % 2 == 0 else "m2", (t0 + (k // 2) * 1000) * 1_000_000, specs, values)
        )
    start = time.perf_counter()
    for poll in batch:
        stage.observe(poll)
    energy_us = (time.perf_counter() - start) / polls * 1e6
    other = [Poll("plc", p.ts_ns, specs, p.values) for p in batch[:100_000]]
    start = time.perf_counter()
    for poll in other:
        stage.observe(poll)
    other_us = (time.perf_counter() - start) / len(other) * 1e6
    return energy_us, other_us, out.sent


def measure_state(meters: int) -> tuple[float, float, float, int]:
    """Saving the running state of `meters` meters (3 counters each, a day of polls in):
    (ms on the event loop to take it, ms to write it, ms to restore it, bytes)."""
    points = [p for i in range(meters) for p in _points(f"m{i}")]
    specs = tuple(
        PointSpec(n) for n in ("energy_import", "energy_export", "reactive_energy_import")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.energy.sqlite"
        state = EnergyStateFile(path)
        stage = EnergyStage(points, config=EnergyConfig(), outlet=_Count(), site="s", state=state)
        t0 = 1_793_462_400_000
        for k in range(0, 86_400, 450):  # a day at 450 s: totals, demand peaks, an interval open
            for i in range(meters):
                values = [1000.0 + 0.02 * k, 5.0 + 0.001 * k, 300.0 + 0.006 * k]
                stage.observe(Poll(f"m{i}", (t0 + k * 1000) * 1_000_000, specs, values))
        runs = 5
        start = time.perf_counter()
        for _ in range(runs):
            blob = state.dump(stage._state_rows())
        dump_ms = (time.perf_counter() - start) / runs * 1000
        start = time.perf_counter()
        for _ in range(runs):
            state.write(blob)
        write_ms = (time.perf_counter() - start) / runs * 1000
        state.close()
        again = EnergyStage(
            points, config=EnergyConfig(), outlet=_Count(), site="s", state=EnergyStateFile(path)
        )
        start = time.perf_counter()
        again.restore_state()
        restore_ms = (time.perf_counter() - start) * 1000
        assert again.state is not None
        again.state.close()
        return dump_ms, write_ms, restore_ms, len(blob)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=400_000, help="polls per run")
    args = parser.parse_args()
    print(
        "| stage | µs per meter poll (3 counters) | µs per poll, device without energy | messages |"
    )
    print("|---|---:|---:|---:|")
    for hierarchy in (False, True):
        energy_us, other_us, sent = measure(args.polls, hierarchy=hierarchy)
        label = "meters + hierarchy and virtual meter" if hierarchy else "meters only"
        print(f"| {label} | {energy_us:.2f} | {other_us:.3f} | {sent} |")
    print()
    print(
        "| state across restarts | meters (x3 counters) | ms on the loop | ms written (thread) "
        "| ms restore at start | kB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for meters in (50, 500):
        dump_ms, write_ms, restore_ms, size = measure_state(meters)
        print(
            f"| save every state_save_s | {meters} | {dump_ms:.1f} | {write_ms:.1f} "
            f"| {restore_ms:.1f} | {size / 1000:.0f} |"
        )


if __name__ == "__main__":
    main()

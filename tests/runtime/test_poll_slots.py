"""Poll slots: devices with a line of their own start on shared multiples of the slot, so
the devices of one slot are asked in one wake-up; units of a shared bus keep exact phases."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from drivers.reading import PointSpec, Poll
from edge_agent.config.errors import ConfigError
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import build_lines
from edge_agent.runtime.poll_slots import MAX_SLOT_DEVICES, slot_start, slot_width, slotted_phase
from edge_agent.runtime.poller import Unit, run_line

POINTS = (PointSpec("v", None),)


def test_a_phase_is_rounded_down_to_its_slot() -> None:
    assert [round(slotted_phase(k / 7, 1.0, 0.1), 9) for k in range(7)] == [
        0.0,
        0.1,
        0.2,
        0.4,
        0.5,
        0.7,
        0.8,
    ]
    assert slotted_phase(0.3, 1.0, 0.1) == pytest.approx(0.3)  # already on a slot: kept
    assert slotted_phase(0.37, 1.0, 0.0) == 0.37  # no slots
    assert slotted_phase(0.037, 0.05, 0.1) == 0.037  # interval within one slot: exact


def test_a_large_site_halves_the_slot_until_its_devices_fit() -> None:
    assert MAX_SLOT_DEVICES == 16
    assert slot_width(50, 1.0, 0.1) == 0.1  # 5 a slot
    assert slot_width(160, 1.0, 0.1) == 0.1  # 16 a slot
    assert slot_width(161, 1.0, 0.1) == 0.05
    assert slot_width(500, 1.0, 0.1) == 0.025  # 12.5 a slot, where 0.1 held 50
    assert slot_width(500, 60.0, 0.1) == 0.1  # a minute spreads them thin anyway
    assert slot_width(10**6, 1.0, 0.1) == pytest.approx(0.1 / 64)  # not below 1 ms


def test_tick_zero_goes_on_the_next_multiple_of_the_slot() -> None:
    assert slot_start(12.34, 0.1) == pytest.approx(12.4)
    assert slot_start(12.4, 0.1) == pytest.approx(12.4)
    assert slot_start(12.34, 0.0) == 12.34


SITE = """\
site: plant
gateway: gw
devices:
{devices}
"""
TCP = """\
  - name: m{i}
    driver: modbus
    url: tcp://127.0.0.1:{port}
    interval_s: 1.0
    points:
      - {{name: v, address: 0, type: uint16}}
"""
RTU = """\
  - name: r{i}
    driver: modbus
    url: rtu:///dev/ttyUSB0?baudrate=9600
    device_id: {unit}
    interval_s: 1.0
    points:
      - {{name: v, address: 0, type: uint16}}
"""


def _site(tmp_path: Path, *, slot: str | None) -> Path:
    devices = [TCP.format(i=i, port=5020 + i) for i in range(4)]
    devices += [RTU.format(i=i, unit=i + 1) for i in range(3)]
    text = SITE.format(devices="".join(devices))
    if slot is not None:
        text += f"polling:\n  slot_s: {slot}\n"
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_own_lines_take_slots_and_a_shared_bus_keeps_exact_phases(tmp_path: Path) -> None:
    loaded = load_config(_site(tmp_path, slot=None))
    assert loaded.site.polling.slot_s == 0.1  # on by default
    lines = build_lines(loaded.devices, slot_s=loaded.site.polling.slot_s)
    phases = {u.driver.name: round(u.phase_s, 6) for line in lines for u in line.units}
    slots = {line.units[0].driver.name: line.slot_s for line in lines if len(line.units) == 1}
    # Seven devices spread over 1 s: 0, 1/7, 2/7 ... TCP devices round down to 0.1 s.
    assert phases == {
        "m0": 0.0,
        "m1": 0.1,
        "m2": 0.2,
        "m3": 0.4,
        "r0": round(4 / 7, 6),
        "r1": round(5 / 7, 6),
        "r2": round(6 / 7, 6),
    }
    assert slots == {"m0": 0.1, "m1": 0.1, "m2": 0.1, "m3": 0.1}
    assert [line.slot_s for line in lines if len(line.units) > 1] == [0.0]


def test_slot_zero_spreads_every_device_exactly(tmp_path: Path) -> None:
    loaded = load_config(_site(tmp_path, slot="0"))
    lines = build_lines(loaded.devices, slot_s=loaded.site.polling.slot_s)
    phases = [round(u.phase_s, 6) for line in lines for u in line.units]
    assert phases == [round(k / 7, 6) for k in range(7)]


def test_a_bad_slot_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_site(tmp_path, slot="-1"))
    assert str(caught.value).endswith(
        "site.yaml:51 polling.slot_s: slot_s must be at least 0.0; got -1"
    )


class StampedDriver:
    protocol = "scripted"

    def __init__(self, name: str) -> None:
        self.name = name
        self.points = POINTS
        self.starts: list[float] = []

    async def read(self) -> Poll:
        self.starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)  # an answer takes time (the virtual clock's, no real wait)
        return Poll(self.name, 0, POINTS, [1.0])

    async def close(self) -> None:
        pass


@pytest.mark.looptime
async def test_lines_started_apart_poll_a_shared_slot_at_the_same_instant() -> None:
    a, b = StampedDriver("a"), StampedDriver("b")
    done = asyncio.Event()

    def emit(_poll: Poll) -> None:
        if len(a.starts) >= 5 and len(b.starts) >= 5:
            done.set()

    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.013)  # off the grid
    first = asyncio.create_task(
        run_line([Unit(a, 1.0, phase_s=0.2)], emit=emit, slot_s=0.1, rng=random.Random(1))
    )
    await asyncio.sleep(0.061)  # the second line starts later, in another slot
    second = asyncio.create_task(
        run_line([Unit(b, 1.0, phase_s=0.1)], emit=emit, slot_s=0.1, rng=random.Random(2))
    )
    try:
        await asyncio.wait_for(done.wait(), 100)
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    assert loop.time() > 4
    # a: next slot after 0.013 is 0.1, + phase 0.2; b: next slot after 0.074 is 0.1, + 0.1.
    assert [round(t, 6) for t in a.starts[:3]] == [0.3, 1.3, 2.3]
    assert [round(t, 6) for t in b.starts[:3]] == [0.2, 1.2, 2.2]

"""`edge-agent write` against the Modbus simulator: the console script in a subprocess."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.modbus.codec import PointType, Table
from drivers.modbus.config import ModbusPoint, ModbusProfile
from simulators.modbus.site import SimDeviceSpec, SimSite, serve

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="temp_sp", address=102, type=PointType.INT16, scale=0.1),
        ModbusPoint(name="pump_run", table=Table.COIL, address=5),
    ),
)


@asynccontextmanager
async def _plc() -> AsyncIterator[SimSite]:
    spec = SimDeviceSpec(name="plc", url="tcp://127.0.0.1:0", profile=PROFILE)
    async with serve([spec]) as sim:
        sim.device("plc").freeze()
        sim.device("plc").image.store({"flow_setpoint": 1.0, "temp_sp": 20.0, "pump_run": False})
        yield sim


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent", "write", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    return await asyncio.to_thread(run)


async def test_write_sends_the_frame_and_shows_the_value_read_back() -> None:
    async with _plc() as sim:
        plc = sim.device("plc")
        url = plc.url
        done = await _cli(url, "100", "42.5", "--type", "float32", "--yes")
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == (
            f"{url} id 1, FC16 holding 100 (0x0064), 2 registers: 422A 0000\nread back: 42.5\n"
        )
        assert plc.served_values()["flow_setpoint"] == 42.5

        done = await _cli(url, "102", "-12.5", "--type", "int16", "--scale", "0.1", "--yes")
        assert done.stdout.splitlines() == [
            f"{url} id 1, FC06 holding 102 (0x0066), 1 register: FF83",
            "read back: -12.5",
        ]
        done = await _cli(url, "5", "on", "--type", "bool", "--yes")
        assert done.stdout.splitlines() == [
            f"{url} id 1, FC05 coil 5 (0x0005), 1 coil: ON",
            "read back: True",
        ]
        assert plc.served_values()["pump_run"] is True
        assert plc.counters.writes == 3


async def test_write_asks_first_and_refuses_what_it_cannot_write_exactly() -> None:
    async with _plc() as sim:
        plc = sim.device("plc")
        url = plc.url
        asked = await _cli(url, "100", "42.5", "--type", "float32")
        assert asked.returncode == 1
        assert "not written: no terminal to confirm on; add --yes" in asked.stderr
        cases = [
            (("100", "70000"), 2, "70000 is outside the range of uint16"),
            (("102", "20.05", "--type", "int16", "--scale", "0.1"), 2, "steps of 0.1"),
            (("3", "1", "--table", "input"), 2, "input registers are read-only"),
            (("5", "maybe", "--type", "bool"), 2, "a coil takes true or false"),
            (("100", "1", "--order", "3412"), 2, "write CDAB"),
            (("200", "1"), 1, "exception 02 (illegal data address)"),
        ]
        for args, code, message in cases:
            done = await _cli(url, *args, "--yes")
            assert done.returncode == code, (args, done.stderr)
            assert message in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
        assert plc.counters.writes == 0
        assert plc.served_values()["flow_setpoint"] == 1.0

"""Our DL/T 645 stack beside another vendor's: PyPI's `dlt645` (Apache-2.0, server and client).

Our driver and our meter simulator were written together, so a mistake both share (an
address or DI byte order, a BCD offset) passes every test that pairs them. Here the driver
reads a meter served by the `dlt645` library, over TCP (as through a transparent
converter, `rtu+tcp://`) and over RTU on a pty pair at 8E1, and the library's client reads
our simulated meter. The library takes an address string in wire order (A0 first), the
nameplate prints A5 first: that difference is the library's convention, and
tests/foreign/dlt645/meter_server.py writes the nameplate address reversed for it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt645
import pytest

from drivers.dlt645.config import Dlt645Device
from drivers.dlt645.driver import Dlt645Driver
from drivers.reading import Quality
from simulators.dlt645.site import Dlt645MeterSpec, serve
from tests.fixtures.server_process import free_port

pytestmark = pytest.mark.timeout(60)

SERVER = Path(__file__).resolve().parents[1] / "foreign" / "dlt645" / "meter_server.py"
NAMEPLATE = "123456781012"

# DI, field -> what meter_server.py serves, as our driver must decode it.
EXPECTED: dict[tuple[str, int], object] = {
    ("00010000", 0): 12345.67,
    ("00020000", 0): 50.5,
    ("00010100", 0): 1234.56,
    ("02010100", 0): 230.1,
    ("02010200", 0): 229.8,
    ("02020100", 0): 5.123,
    ("02030000", 0): 1.2345,
    ("02800002", 0): 50.01,
    ("01010000", 0): 78.0,
    ("01010000", 1): "2026-11-30T12:15",
}


class ForeignMeter:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # until it serves or dies; the test timeout bounds it
        assert line == "listening\n", (line, self.proc.stderr and self.proc.stderr.read())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


@pytest.fixture
def foreign_tcp_meter() -> Iterator[str]:
    port = free_port()
    meter = ForeignMeter("tcp", str(port))
    yield f"rtu+tcp://127.0.0.1:{port}"
    meter.stop()


def _driver(url: str) -> Dlt645Driver:
    points = [{"name": f"d{di}_{field}", "di": di, "field": field} for di, field in EXPECTED]
    device = Dlt645Device.model_validate(
        {
            "name": "m645",
            "driver": "dlt645",
            "url": url,
            "address": NAMEPLATE,
            "points": points,
            "timeout_s": 1.0,
        }
    )
    return Dlt645Driver(device)


async def _expect_served(driver: Dlt645Driver) -> None:
    for _ in range(3):
        poll = await driver.read()
        assert poll.issues == {}
        assert dict(zip(EXPECTED, poll.values, strict=True)) == EXPECTED


async def test_our_driver_reads_a_dlt645_library_meter_over_tcp(foreign_tcp_meter: str) -> None:
    await _expect_served(_driver(foreign_tcp_meter))


async def test_our_driver_reads_a_dlt645_library_meter_on_a_serial_line_at_8e1(
    serial_pair: tuple[str, str],
) -> None:
    meter_tty, driver_tty = serial_pair
    meter = ForeignMeter("rtu", meter_tty, "9600", "E")
    try:
        await _expect_served(_driver(f"rtu://{driver_tty}?baudrate=9600&parity=E"))
    finally:
        meter.stop()


async def test_a_meter_of_another_address_is_not_read_as_ours(foreign_tcp_meter: str) -> None:
    """The address is compared, not just echoed: 000000000001 is another meter."""
    driver = _driver(foreign_tcp_meter)
    device = driver.device.model_copy(update={"address": "000000000001"})
    poll = await Dlt645Driver(device).read()
    assert {quality for quality, _ in poll.issues.values()} == {Quality.BAD}
    assert len(poll.issues) == len(EXPECTED)


def _wire_order(address: str) -> str:
    return "".join(reversed([address[i : i + 2] for i in range(0, 12, 2)]))


async def test_the_dlt645_library_client_reads_our_simulated_meter() -> None:
    address = "000000123456"
    spec = Dlt645MeterSpec(name="m3", url="rtu+tcp://127.0.0.1:0", address=address, seed=3)
    async with serve([spec]) as sim:
        meter = sim.meter("m3")
        meter.freeze()
        host, port = meter.url.removeprefix("rtu+tcp://").rsplit(":", 1)

        def read() -> dict[int, Any]:
            dlt645.disable_logging()
            client = dlt645.MeterClientService.new_tcp_client(host, int(port), 3.0)
            client.set_address(_wire_order(address))
            try:
                assert client.connect()
                got = {di: client.read_00(di) for di in (0x00010000, 0x00020000)}
                got |= {di: client.read_02(di) for di in (0x02010100, 0x02020100, 0x02800002)}
                return {di: None if item is None else item.value for di, item in got.items()}
            finally:
                client.close()

        got = await asyncio.to_thread(read)
        expected = {di: meter.served(di) for di in got}
    assert got == pytest.approx(expected)
    assert all(value is not None for value in got.values())

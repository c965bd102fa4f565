"""DL/T 645 driver against the simulated meters: a pty pair (socat) and serial-over-TCP.

The pty line runs the meters' usual 8E1 (a pty keeps no parity bits; drivers/pyserial_urls
opens it anyway). Baud rates are set high so the driver's airtime allowance stays small (a
pty ignores the rate).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from drivers.dlt645.config import Dlt645Device, parse_endpoint
from drivers.dlt645.driver import Dlt645Driver
from drivers.dlt645.frame import address_bytes, read_request
from drivers.dlt645.identifiers import lookup
from drivers.dlt645.line import Dlt645Line
from drivers.reading import DeviceUnreachable, Poll, Quality
from edge_agent.runtime.poller import Unit, run_line
from simulators.dlt645.site import Dlt645MeterSpec, Dlt645SimSite, serve

LINE = "?baudrate=115200&parity=E"
ADDRESSES = {"m1": "000000000001", "m2": "000000000002", "m3": "000000123456"}

# Every identifier the simulated meters serve, and each field of it.
SERVED = [
    "00000000",
    "00010000",
    "00010100",
    "00010200",
    "00010300",
    "00010400",
    "0001FF00",
    "00020000",
    "00030000",
    "00040000",
    "00050000",
    "00080000",
    "00150000",
    "00290000",
    "003D0000",
    "00160000",
    "01010000",
    "02010100",
    "02010300",
    "0201FF00",
    "02020200",
    "0202FF00",
    "02030000",
    "02030100",
    "0203FF00",
    "02040000",
    "02050000",
    "02060000",
    "0206FF00",
    "02070100",
    "02800001",
    "02800002",
    "02800004",
    "04000101",
    "04000102",
    "04000103",
    "04000401",
    "04000402",
]


def _points(dis: list[str]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for di in dis:
        known = lookup(int(di, 16))
        assert known is not None
        for field in range(len(known.format.fields)):
            points.append({"name": f"d{di}_{field}", "di": di, "field": field})
    return points


def _device(name: str, url: str, *, points: list[dict[str, Any]], **extra: Any) -> Dlt645Device:
    return Dlt645Device.model_validate(
        {
            "name": name,
            "driver": "dlt645",
            "url": url,
            "address": ADDRESSES.get(name, "000000000099"),
            "points": points,
            **extra,
        }
    )


def _expect_served(poll: Poll, sim: Dlt645SimSite, name: str) -> int:
    """Every good point equals what the meter serves; returns how many were compared."""
    meter = sim.meter(name)
    checked = 0
    for reading in poll.readings():
        di, field = reading.point[1:].split("_")
        assert reading.quality is Quality.GOOD, (reading.point, reading.reason)
        assert reading.value == meter.served(int(di, 16), int(field)), reading.point
        checked += 1
    return checked


async def test_shared_pty_line_reads_exactly_what_three_meters_serve(
    serial_pair: tuple[str, str],
) -> None:
    server_end, client_end = serial_pair
    specs = [
        Dlt645MeterSpec(name=n, url=f"rtu://{server_end}{LINE}", address=a, seed=i)
        for i, (n, a) in enumerate(ADDRESSES.items())
    ]
    # m2 answers at most 10 data bytes per frame (DI + 6 value bytes, then DI + 5 + SEQ in
    # each subsequent frame), so its longer values come in several frames:
    # 0001FF00 20 bytes = 6 + 5 + 5 + 4: 3 more, 01010000 8: 1, 0202FF00 9: 1,
    # 0203FF00 12: 2, 0206FF00 8: 1 -> 8 subsequent-frame requests in all.
    specs[1] = Dlt645MeterSpec(
        name="m2", url=specs[1].url, address=ADDRESSES["m2"], seed=1, max_data=10
    )
    async with serve(specs) as sim:
        for meter in sim.meters.values():
            meter.freeze()
        url = f"rtu://{client_end}{LINE}"
        line = Dlt645Line(parse_endpoint(url), name="bus")
        drivers = [
            Dlt645Driver(_device(n, url, points=_points(SERVED)), line=line) for n in ADDRESSES
        ]
        for driver in drivers:
            poll = await driver.read()
            assert _expect_served(poll, sim, driver.name) == 53  # 38 DIs, 15 more fields
        # Each DI is one request, plus m2's subsequent frames.
        assert sim.meter("m1").counters.requests == len(SERVED)
        assert sim.meter("m3").counters.requests == len(SERVED)
        assert sim.meter("m2").counters.requests == len(SERVED) + 8
        assert sim.meter("m1").counters.exceptions == 0
        # Values are physics, in the meters' units: P total = sum of phases, E counts up.
        m1 = sim.meter("m1")
        total, *phases = (m1.served(0x0203FF00, k) for k in range(4))
        assert total == pytest.approx(sum(phases), abs=0.0003)  # type: ignore[arg-type]
        assert 200 < m1.served(0x02010100) < 260  # type: ignore[operator]
        assert m1.served(0x04000401) == "000000000001"
        line.close()


async def test_error_answer_bad_checksum_and_silence(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    specs = [Dlt645MeterSpec(name="m1", url=f"rtu://{server_end}{LINE}", address=ADDRESSES["m1"])]
    async with serve(specs) as sim:
        url = f"rtu://{client_end}{LINE}"
        points = [
            {"name": "import_kwh", "di": "00010000"},
            {"name": "tariff_9", "di": "00010900"},
            {"name": "voltage_a", "di": "02010100"},
        ]
        driver = Dlt645Driver(_device("m1", url, points=points, timeout_s=0.2))
        meter = sim.meter("m1")

        # A DI the meter lacks: only its point is bad, with the meter's reason.
        poll = await driver.read()
        assert poll.issues == {1: (Quality.BAD, "error 02 (no requested data)")}
        assert poll.values[0] == meter.served(0x00010000)

        # An error answer to everything is still an answer: the meter is up, points are bad.
        meter.faults.set("exception", code=0x04)
        poll = await driver.read()
        assert set(poll.issues.values()) == {
            (Quality.BAD, "error 04 (password error or unauthorized)")
        }

        # Only garbled answers: the meter counts as unreachable (and gets backed off).
        meter.faults.set("corrupt")
        with pytest.raises(DeviceUnreachable) as info:
            await driver.read()
        assert info.value.reason == "bad checksum"

        # Silence costs one timeout, not one per point.
        meter.faults.set("no_answer")
        loop = asyncio.get_running_loop()
        before, t0 = meter.counters.requests, loop.time()
        with pytest.raises(DeviceUnreachable) as info:
            await driver.read()
        assert info.value.reason == "timeout"
        assert meter.counters.requests == before + 1
        assert 0.2 <= loop.time() - t0 < 1.0

        # Back to normal: the line is still in step after the garbage and the silence.
        meter.faults.clear()
        poll = await driver.read()
        assert poll.values[2] == meter.served(0x02010100) and 2 not in poll.issues
        await driver.close()


async def test_serial_over_tcp_address_query_and_reconnect() -> None:
    spec = Dlt645MeterSpec(name="m3", url="rtu+tcp://127.0.0.1:0", address=ADDRESSES["m3"])
    async with serve([spec]) as sim:
        url = sim.meter("m3").url
        assert url.startswith("rtu+tcp://127.0.0.1:")
        # Wildcard address: the lone meter answers the address query, and reads through it.
        driver = Dlt645Driver(
            _device("any", url, points=[{"name": "v", "di": "02010100"}], address="AAAAAAAAAAAA")
        )
        assert await driver.read_address() == "000000123456"
        poll = await driver.read()
        assert poll.values == [sim.meter("m3").served(0x02010100)]

        # The converter drops the connection: one failed poll, then a fresh connection.
        sim.meter("m3").faults.set("drop")
        with pytest.raises(DeviceUnreachable, match="connection lost"):
            await driver.read()
        sim.meter("m3").faults.clear()
        poll = await driver.read()
        assert not poll.issues
        await driver.close()

    # Two meters fit the wildcard: their answers collide.
    specs = [
        Dlt645MeterSpec(name=n, url="rtu+tcp://127.0.0.1:0", address=a)
        for n, a in ADDRESSES.items()
    ]
    async with serve(specs) as sim:
        url = sim.meter("m1").url
        lone = Dlt645Driver(_device("x", url, points=[{"name": "v", "di": "02010100"}]))
        with pytest.raises(DeviceUnreachable, match="bad checksum"):
            await lone.read_address()
        await lone.close()


async def test_frame_gap_is_kept_between_transactions() -> None:
    spec = Dlt645MeterSpec(name="m1", url="rtu+tcp://127.0.0.1:0", address=ADDRESSES["m1"])
    async with serve([spec]) as sim:
        line = Dlt645Line(parse_endpoint(sim.meter("m1").url), name="bus", frame_gap_s=0.05)
        address = address_bytes(ADDRESSES["m1"])
        loop = asyncio.get_running_loop()
        await line.read_data(address, 0x02010100, timeout_s=1.0)
        t0 = loop.time()
        for _ in range(3):
            assert isinstance(await line.read_data(address, 0x02010100, timeout_s=1.0), bytes)
        assert loop.time() - t0 >= 3 * 0.05
        line.close()


async def test_stale_bytes_and_echo_do_not_confuse_the_next_answer() -> None:
    """A late answer from an earlier request and an adapter echo are skipped."""
    spec = Dlt645MeterSpec(name="m1", url="rtu+tcp://127.0.0.1:0", address=ADDRESSES["m1"])
    async with serve([spec]) as sim:
        line = Dlt645Line(parse_endpoint(sim.meter("m1").url), name="bus")
        address = address_bytes(ADDRESSES["m1"])
        meter = sim.meter("m1")
        meter.freeze()
        meter.faults.set("slow", delay_s=0.3)
        with pytest.raises(DeviceUnreachable, match="timeout"):
            await line.read_data(address, 0x00010000, timeout_s=0.1)
        meter.faults.clear()
        # The slow answer to 00010000 arrives while we wait for 02010100: not taken for it.
        got = await line.read_data(address, 0x02010100, timeout_s=1.0)
        assert got == meter.value_bytes(0x02010100)
        # An echo of our own request (a half-duplex adapter) looks like a frame from us.
        line._received(read_request(address, 0x02010100))
        got = await line.read_data(address, 0x00010000, timeout_s=1.0)
        assert got == meter.value_bytes(0x00010000)
        line.close()


async def test_dead_meter_is_backed_off_and_the_others_keep_their_rate(
    serial_pair: tuple[str, str],
) -> None:
    """Four units share one pty line through the real poller; one of them never answers."""
    server_end, client_end = serial_pair
    specs = [
        Dlt645MeterSpec(name=n, url=f"rtu://{server_end}{LINE}", address=a, seed=i)
        for i, (n, a) in enumerate(ADDRESSES.items())
    ]
    interval = 0.2
    async with serve(specs) as sim:
        for meter in sim.meters.values():
            meter.freeze()
        url = f"rtu://{client_end}{LINE}"
        line = Dlt645Line(parse_endpoint(url), name="bus")
        points = _points(["00010000", "02010100", "0203FF00"])
        names = [*ADDRESSES, "dead"]  # "dead" is at 000000000099: nobody answers
        units = [
            Unit(
                Dlt645Driver(_device(n, url, points=points, timeout_s=0.15), line=line),
                interval,
                backoff_max_s=1.0,
                phase_s=interval * k / len(names),
            )
            for k, n in enumerate(names)
        ]
        by_name = {u.driver.name: u for u in units}
        polls: dict[str, list[Poll]] = {n: [] for n in names}
        states: list[tuple[str, bool, str | None]] = []
        done = asyncio.Event()

        def emit(poll: Poll) -> None:
            polls[poll.device].append(poll)
            if by_name["dead"].stats.failures >= 5:
                done.set()

        def on_state(name: str, up: bool, reason: str | None) -> None:
            states.append((name, up, reason))

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.create_task(
            run_line(units, emit=emit, on_state=on_state, rng=random.Random(3))
        )
        try:
            await asyncio.wait_for(done.wait(), timeout=20)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        window = loop.time() - t0
        dead = by_name["dead"].stats
        # Backed off: far fewer attempts than ticks, and reported once.
        assert dead.failures == 5 and dead.good_polls == 0
        assert dead.skipped_backoff >= 5
        assert [s for s in states if s[0] == "dead"] == [("dead", False, "timeout")]
        (bad,) = polls["dead"]
        assert set(bad.issues.values()) == {(Quality.BAD, "timeout")}
        # The live meters kept their rate: a dead attempt (0.15 s) fits between two ticks.
        for name in ADDRESSES:
            stats = by_name[name].stats
            assert stats.failures == 0 and stats.up is True
            assert stats.good_polls >= window / interval - 3, (name, stats.good_polls, window)
            assert stats.overruns == 0
            for poll in polls[name]:
                _expect_served(poll, sim, name)
        assert not line.connected  # run_line closed the drivers, and so the line

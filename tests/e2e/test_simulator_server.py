"""The simulator on the wire, checked with pymodbus as the independent reference client.

Modbus TCP, RTU over a pty pair (socat), RTU over TCP; every fault switch; every profile's
served values against what pymodbus reads and our codec decodes; the meters' key registers
against meters.md, decoded by pymodbus alone; pipelining and the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.modbus.codec import Order, Table, decode
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.driver import ModbusDriver
from drivers.reading import Quality, Value
from edge_agent.catalog import Kind, shipped
from simulators.common.faults import FaultKind
from simulators.modbus.frames import crc16, rtu_crc_ok, rtu_frame
from simulators.modbus.register_image import effective_order, engineering
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, run_simulators, serve

PROFILES = shipped(Kind.PROFILES)
PROFILE_NAMES = [
    "chint-dtsu666",
    "eastron-sdm630",
    "acrel-adl400",
    "acrel-adl400-float",
    "test-plc",
]
LOOPBACK = "127.0.0.1"
MBAP_READ = struct.Struct(">HHHBBHH")


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def profile(name: str) -> ModbusProfile:
    return load_profile(PROFILES / f"{name}.yaml")


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@contextlib.asynccontextmanager
async def tcp_client(
    url: str, *, timeout_s: float = 2.0, rtu: bool = False
) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient(
        LOOPBACK,
        port=port_of(url),
        framer=FramerType.RTU if rtu else FramerType.SOCKET,
        timeout=timeout_s,
        retries=0,
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def serial_client(
    path: str, *, timeout_s: float = 2.0
) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        path, framer=FramerType.RTU, baudrate=19200, timeout=timeout_s, retries=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


async def read_point(client: Client, p: ModbusPoint, device_id: int) -> list[int] | list[bool]:
    """The point's raw registers (or bit) as pymodbus reads them."""
    readers = {
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
    }
    rr = await readers[p.table](p.address, count=p.count, device_id=device_id)
    assert not rr.isError(), (p.name, rr)
    return list(rr.bits[: p.count]) if p.table.is_bits else list(rr.registers)


def decode_point(p: ModbusPoint, order: Order, raw: Sequence[int] | Sequence[bool]) -> Value:
    """What a correct client makes of a point's registers: our codec plus scale/offset."""
    if p.table.is_bits:
        return bool(raw[0])
    value = decode([int(r) for r in raw], p.point_type, order, length=p.length, bit=p.bit or 0)
    return engineering(value, p.scale, p.offset, p.decimals)


async def assert_wire_matches_served(
    sim: SimSite, name: str, client: Client, *, order: Order | None = None
) -> int:
    device = sim.device(name)
    device.freeze()
    served = device.served_values()
    prof = device.profile
    for p in prof.points:
        raw = await read_point(client, p, device.device_id)
        assert decode_point(p, effective_order(p, prof, order), raw) == served[p.name], p.name
    return len(prof.points)


async def raw_exchange(port: int, request: bytes, size: int) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readexactly(size), 2)
    finally:
        writer.close()


def mbap_read(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    return MBAP_READ.pack(tid, 0, 6, unit, fc, address, count)


# -- values on the wire ----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILE_NAMES)
async def test_every_profile_serves_what_a_client_decodes(name: str) -> None:
    spec = SimDeviceSpec(name=name, url=f"tcp://{LOOPBACK}:0", profile=profile(name), seed=11)
    async with serve([spec]) as sim, tcp_client(sim.device(name).url) as client:
        assert await assert_wire_matches_served(sim, name, client) == len(spec.profile.points)


@pytest.mark.parametrize("name", PROFILE_NAMES)
async def test_the_project_driver_reads_exactly_what_is_served(name: str) -> None:
    prof = profile(name)
    spec = SimDeviceSpec(name=name, url=f"rtu+tcp://{LOOPBACK}:0", profile=prof, device_id=3)
    async with serve([spec]) as sim:
        sim.device(name).freeze()
        device = ModbusDevice(
            name=name, driver="modbus", url=sim.device(name).url, device_id=3, profile=name
        )
        driver = ModbusDriver(device, prof)
        try:
            poll = await driver.read()
        finally:
            await driver.close()
        assert poll.issues == {}
        read = {r.point: r.value for r in poll.readings() if r.quality is Quality.GOOD}
        assert read == sim.device(name).served_values()
        assert sim.device(name).counters.requests == len(driver.plan.requests)


async def test_device_order_override_reaches_the_wire() -> None:
    prof = profile("acrel-adl400-float")
    specs = [
        SimDeviceSpec(name="cdab", url=f"tcp://{LOOPBACK}:0", profile=prof, device_id=1),
        SimDeviceSpec(
            name="abcd", url=f"tcp://{LOOPBACK}:0", profile=prof, device_id=2, order=Order.ABCD
        ),
    ]
    async with serve(specs) as sim, tcp_client(sim.device("abcd").url) as client:
        await assert_wire_matches_served(sim, "abcd", client, order=Order.ABCD)
        a = await client.read_holding_registers(0x0800, count=2, device_id=1)
        b = await client.read_holding_registers(0x0800, count=2, device_id=2)
        volts_cdab = client.convert_from_registers(a.registers, client.DATATYPE.FLOAT32, "little")
        volts_abcd = client.convert_from_registers(b.registers, client.DATATYPE.FLOAT32, "big")
        assert 200 < float(volts_cdab) < 260  # type: ignore[arg-type]
        assert 200 < float(volts_abcd) < 260  # type: ignore[arg-type]


# meters.md facts, hard-coded here so that a wrong profile (address, table, type, word
# order, scale) fails: (table, address, pymodbus type, word order, divide by, low, high).
F32, U16, I16, I32, U32 = (
    AsyncModbusTcpClient.DATATYPE.FLOAT32,
    AsyncModbusTcpClient.DATATYPE.UINT16,
    AsyncModbusTcpClient.DATATYPE.INT16,
    AsyncModbusTcpClient.DATATYPE.INT32,
    AsyncModbusTcpClient.DATATYPE.UINT32,
)
METERS_MD: dict[str, dict[str, tuple[Table, int, Any, str, float, float, float]]] = {
    "chint-dtsu666": {  # 3.2: holding float32 ABCD, scaled units
        "voltage_a": (Table.HOLDING, 0x2006, F32, "big", 10, 200, 260),
        "voltage_ab": (Table.HOLDING, 0x2000, F32, "big", 10, 350, 450),
        "current_a": (Table.HOLDING, 0x200C, F32, "big", 1000, 0.1, 100),
        "power_total": (Table.HOLDING, 0x2012, F32, "big", 10, 100, 100_000),
        "power_a": (Table.HOLDING, 0x2014, F32, "big", 10, 10, 40_000),
        "power_b": (Table.HOLDING, 0x2016, F32, "big", 10, 10, 40_000),
        "power_c": (Table.HOLDING, 0x2018, F32, "big", 10, 10, 40_000),
        "pf_total": (Table.HOLDING, 0x202A, F32, "big", 1000, 0.5, 1),
        "frequency": (Table.HOLDING, 0x2044, F32, "big", 100, 49.5, 50.5),
        "energy_import": (Table.HOLDING, 0x401E, F32, "big", 1, 1000, 1e6),
    },
    "eastron-sdm630": {  # 3.1: input float32 ABCD, SI units
        "voltage_a": (Table.INPUT, 0x0000, F32, "big", 1, 200, 260),
        "current_a": (Table.INPUT, 0x0006, F32, "big", 1, 0.1, 100),
        "power_a": (Table.INPUT, 0x000C, F32, "big", 1, 10, 40_000),
        "power_b": (Table.INPUT, 0x000E, F32, "big", 1, 10, 40_000),
        "power_c": (Table.INPUT, 0x0010, F32, "big", 1, 10, 40_000),
        "power_total": (Table.INPUT, 0x0034, F32, "big", 1, 100, 100_000),
        "pf_total": (Table.INPUT, 0x003E, F32, "big", 1, 0.5, 1),
        "frequency": (Table.INPUT, 0x0046, F32, "big", 1, 49.5, 50.5),
        "energy_import": (Table.INPUT, 0x0048, F32, "big", 1, 1000, 1e6),
    },
    "acrel-adl400": {  # 3.3: holding integers ABCD, secondary side
        "voltage_a": (Table.HOLDING, 0x0061, U16, "big", 10, 200, 260),
        "current_a": (Table.HOLDING, 0x0064, U16, "big", 100, 0.005, 5),
        "frequency": (Table.HOLDING, 0x0077, U16, "big", 100, 49.5, 50.5),
        "ct_ratio": (Table.HOLDING, 0x008E, U16, "big", 1, 20, 20),
        "power_a": (Table.HOLDING, 0x0164, I32, "big", 1, 1, 2_000),
        "power_b": (Table.HOLDING, 0x0166, I32, "big", 1, 1, 2_000),
        "power_c": (Table.HOLDING, 0x0168, I32, "big", 1, 1, 2_000),
        "power_total": (Table.HOLDING, 0x016A, I32, "big", 1, 5, 5_000),
        "pf_total": (Table.HOLDING, 0x017F, I16, "big", 1000, 0.5, 1),
        "energy_import": (Table.HOLDING, 0x000A, U32, "big", 100, 50, 1e5),
    },
    "acrel-adl400-float": {  # 3.4: holding float32 / uint32 CDAB, primary side
        "voltage_a": (Table.HOLDING, 0x0800, F32, "little", 1, 200, 260),
        "current_a": (Table.HOLDING, 0x080C, F32, "little", 1, 0.1, 100),
        "power_a": (Table.HOLDING, 0x0814, F32, "little", 1, 0.01, 40),
        "power_b": (Table.HOLDING, 0x0816, F32, "little", 1, 0.01, 40),
        "power_c": (Table.HOLDING, 0x0818, F32, "little", 1, 0.01, 40),
        "power_total": (Table.HOLDING, 0x081A, F32, "little", 1, 0.1, 100),
        "pf_total": (Table.HOLDING, 0x0832, F32, "little", 1, 0.5, 1),
        "frequency": (Table.HOLDING, 0x0834, F32, "little", 1, 49.5, 50.5),
        "energy_import": (Table.HOLDING, 0x084C, U32, "little", 10, 1000, 1e6),
    },
}


@pytest.mark.parametrize("name", sorted(METERS_MD))
async def test_meter_registers_agree_with_meters_md(name: str) -> None:
    spec = SimDeviceSpec(name=name, url=f"tcp://{LOOPBACK}:0", profile=profile(name), seed=5)
    async with serve([spec]) as sim, tcp_client(sim.device(name).url) as client:
        sim.device(name).freeze()
        served = sim.device(name).served_values()
        wire: dict[str, float] = {}
        for point_name, (table, address, dtype, word_order, divide, low, high) in METERS_MD[
            name
        ].items():
            read = (
                client.read_input_registers
                if table is Table.INPUT
                else client.read_holding_registers
            )
            rr = await read(address, count=dtype.value[1], device_id=1)
            assert not rr.isError(), (point_name, rr)
            value = float(client.convert_from_registers(rr.registers, dtype, word_order)) / divide  # type: ignore[arg-type]
            assert low <= value <= high, (point_name, value)
            assert value == pytest.approx(served[point_name], rel=1e-6), point_name
            wire[point_name] = value
        phases = wire["power_a"] + wire["power_b"] + wire["power_c"]
        assert wire["power_total"] == pytest.approx(phases, rel=1e-3, abs=2)


async def test_energy_counter_on_the_wire_never_decreases() -> None:
    clock = FakeClock()
    spec = SimDeviceSpec(name="m", url=f"tcp://{LOOPBACK}:0", profile=profile("eastron-sdm630"))
    async with serve([spec], clock=clock) as sim, tcp_client(sim.device("m").url) as client:
        readings: list[float] = []
        for _ in range(20):
            clock.t += 600.0  # ten simulated minutes per step
            rr = await client.read_input_registers(0x0048, count=2, device_id=1)
            kwh = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
            assert isinstance(kwh, float)
            readings.append(kwh)
        assert readings == sorted(readings)
        assert readings[-1] - readings[0] > 1.0  # kWh: hours of a few kW


# -- transports ------------------------------------------------------------------------------


async def test_tcp_serves_all_four_read_function_codes(free_tcp_port: int) -> None:
    url = f"tcp://{LOOPBACK}:{free_tcp_port}"
    spec = SimDeviceSpec(name="plc", url=url, profile=profile("test-plc"), device_id=3)
    async with serve([spec]) as sim, tcp_client(url) as client:
        dev = sim.device("plc")
        assert dev.url == url
        dev.freeze()
        served = dev.served_values()
        coils = await client.read_coils(0, count=18, device_id=3)
        assert coils.bits[:10] == [served[f"coil_{i}"] for i in range(10)]
        assert coils.bits[16:18] == [served["coil_16"], served["coil_17"]]
        discrete = await client.read_discrete_inputs(0, count=8, device_id=3)
        assert discrete.bits[:8] == [served[f"input_{i}"] for i in range(8)]
        holding = await client.read_holding_registers(0, count=125, device_id=3)
        inputs = await client.read_input_registers(0x1000, count=125, device_id=3)
        for rr, table, base in ((holding, Table.HOLDING, 0), (inputs, Table.INPUT, 0x1000)):
            inside = [
                p
                for p in dev.profile.points
                if p.table is table and base <= p.address and p.last_address < base + 125
            ]
            assert len(inside) > 40
            for p in inside:
                regs = rr.registers[p.address - base : p.last_address - base + 1]
                assert (
                    decode_point(p, effective_order(p, dev.profile, None), regs) == served[p.name]
                )
        assert dev.counters.requests == 4 and dev.counters.exceptions == 0


async def test_rtu_on_a_pty_serves_two_device_ids_and_ignores_strangers(
    serial_pair: tuple[str, str],
) -> None:
    server_end, client_end = serial_pair
    url = f"rtu://{server_end}?baudrate=19200"
    specs = [
        SimDeviceSpec(name="dtsu", url=url, profile=profile("chint-dtsu666"), device_id=1),
        SimDeviceSpec(name="sdm", url=url, profile=profile("eastron-sdm630"), device_id=2),
    ]
    async with serve(specs) as sim:
        async with serial_client(client_end) as client:
            assert await assert_wire_matches_served(sim, "dtsu", client) == 25
            assert await assert_wire_matches_served(sim, "sdm", client) == 55
            rr = await client.read_holding_registers(0x2000, count=0x46, device_id=1)
            assert len(rr.registers) == 0x46
        async with serial_client(client_end, timeout_s=0.3) as client:
            with pytest.raises(ModbusException):
                await client.read_holding_registers(0x2000, count=2, device_id=7)
            # The line is still in step after the unanswered request.
            rr = await client.read_input_registers(0, count=2, device_id=2)
            assert not rr.isError()
            sim.device("sdm").faults.set("drop")  # serial: drop means silence
            with pytest.raises(ModbusException):
                await client.read_input_registers(0, count=2, device_id=2)
            sim.device("sdm").faults.set("corrupt")  # bad CRC: the client rejects it
            with pytest.raises(ModbusException):
                await client.read_input_registers(0, count=2, device_id=2)
            sim.device("sdm").faults.set("exception", code=6)
            rr = await client.read_input_registers(0, count=2, device_id=2)
            assert rr.isError() and rr.exception_code == 6
        assert sim.device("sdm").counters.ignored == 1
    # Leaving `serve` closed the port: another simulator can take the line.
    async with serve(specs[:1]) as again, serial_client(client_end) as client:
        rr = await client.read_holding_registers(0x2006, count=2, device_id=1)
        assert not rr.isError() and again.device("dtsu").counters.requests == 1


async def test_rtu_over_tcp_and_bad_crc_frames_are_ignored() -> None:
    spec = SimDeviceSpec(
        name="adl", url=f"rtu+tcp://{LOOPBACK}:0", profile=profile("acrel-adl400"), device_id=5
    )
    async with serve([spec]) as sim:
        url = sim.device("adl").url
        assert url.startswith("rtu+tcp://")
        async with tcp_client(url, rtu=True) as client:
            assert await assert_wire_matches_served(sim, "adl", client) == 43
        good = rtu_frame(5, struct.pack(">BHH", 3, 0x0061, 3))
        bad = bytearray(good)
        bad[-2] ^= 0x55
        stranger = rtu_frame(9, struct.pack(">BHH", 3, 0x0061, 3))
        answer = await raw_exchange(port_of(url), bytes(bad) + stranger + good, 5 + 6)
        assert answer[:3] == bytes((5, 3, 6)) and rtu_crc_ok(answer)
        assert sim.device("adl").counters.requests == 43 + 1


async def test_pipelined_tcp_requests_are_answered_in_order() -> None:
    specs = [
        SimDeviceSpec(name="fast", url=f"tcp://{LOOPBACK}:0", profile=profile("test-plc")),
        SimDeviceSpec(
            name="slow", url=f"tcp://{LOOPBACK}:0", profile=profile("test-plc"), device_id=2
        ),
    ]
    async with serve(specs) as sim:
        for dev in sim.devices.values():
            dev.freeze()
        sim.device("slow").faults.set("slow", delay_s=0.2)
        port = port_of(sim.device("fast").url)
        holding = [p for p in profile("test-plc").points if p.table is Table.HOLDING]
        requests = [
            (tid, 1, holding[tid % len(holding)].address, holding[tid % len(holding)].count)
            for tid in range(1, 201)
        ]
        requests.insert(50, (999, 2, 0x10, 4))  # one slow answer in the middle
        burst = b"".join(mbap_read(tid, unit, 3, addr, n) for tid, unit, addr, n in requests)
        size = sum(9 + 2 * n for _, _, _, n in requests)
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(burst)
        data = await asyncio.wait_for(reader.readexactly(size), 5)
        elapsed = loop.time() - started
        writer.close()
        image = sim.device("fast").image
        pos = 0
        for tid, unit, addr, n in requests:
            got_tid, _, length, got_unit, fc, nbytes = struct.unpack_from(">HHHBBB", data, pos)
            assert (got_tid, got_unit, fc, nbytes, length) == (tid, unit, 3, 2 * n, 3 + 2 * n)
            regs = list(struct.unpack_from(f">{n}H", data, pos + 9))
            assert regs == sim.device("slow" if unit == 2 else "fast").image.registers(
                Table.HOLDING, addr, n
            )
            pos += 9 + 2 * n
        assert pos == len(data)
        assert elapsed >= 0.2  # the answers after the slow one waited for it
        assert image is not None and sim.device("fast").counters.answered == 200


async def test_exception_answers() -> None:
    plc = profile("test-plc")
    specs = [
        SimDeviceSpec(name="loose", url=f"tcp://{LOOPBACK}:0", profile=plc),
        SimDeviceSpec(
            name="strict", url=f"tcp://{LOOPBACK}:0", profile=plc, device_id=2, strict_gaps=True
        ),
    ]
    async with serve(specs) as sim, tcp_client(sim.device("loose").url) as client:
        port = port_of(sim.device("loose").url)
        # A read across the 2-register gap at 0x0E..0x0F: zeros, or 02 when strict.
        rr = await client.read_holding_registers(0x0D, count=4, device_id=1)
        assert not rr.isError() and rr.registers[1:3] == [0, 0]
        rr = await client.read_holding_registers(0x0D, count=4, device_id=2)
        assert rr.isError() and rr.exception_code == 2
        # Unmapped, unreadable, past the end of the map: 02 either way.
        for unit in (1, 2):
            for address, count in ((0x0090, 2), (0x00FF, 0x12), (0xFFFD, 3)):
                rr = await client.read_holding_registers(address, count=count, device_id=unit)
                assert rr.isError() and rr.exception_code == 2, (unit, address)
        # Counts pymodbus refuses to send: 0 and 126 registers, 2001 bits -> 03.
        for fc, count in ((3, 0), (3, 126), (4, 126), (1, 2001), (2, 0)):
            answer = await raw_exchange(port, mbap_read(7, 1, fc, 0, count), 9)
            assert answer[7:] == bytes((fc | 0x80, 3)), (fc, count)
        # Past the top of the address space (65535 + 1) -> 02.
        answer = await raw_exchange(port, mbap_read(6, 1, 3, 0xFFFF, 2), 9)
        assert answer[7:] == bytes((0x83, 2))
        # An unknown function code -> 01; an unknown device id -> 0B (gateway target).
        odd = struct.pack(">HHHBBBB", 8, 0, 4, 1, 0x2B, 0x0E, 0x01)
        assert (await raw_exchange(port, odd, 9))[7:] == bytes((0xAB, 1))
        assert (await raw_exchange(port, mbap_read(9, 42, 3, 0, 1), 9))[7:] == bytes((0x83, 0x0B))


async def test_writes_land_in_the_image() -> None:
    spec = SimDeviceSpec(name="plc", url=f"tcp://{LOOPBACK}:0", profile=profile("test-plc"))
    async with serve([spec]) as sim, tcp_client(sim.device("plc").url) as client:
        dev = sim.device("plc")
        assert not (await client.write_coil(3, True, device_id=1)).isError()
        assert not (await client.write_coils(16, [True, False], device_id=1)).isError()
        assert not (await client.write_register(0x0006, 4321, device_id=1)).isError()
        regs = client.convert_to_registers(-123456, client.DATATYPE.INT32)
        assert not (await client.write_registers(0x0010, regs, device_id=1)).isError()
        served = dev.served_values()
        assert (served["coil_3"], served["coil_16"], served["coil_17"]) == (True, True, False)
        assert (served["h_uint16_abcd"], served["h_int32_abcd"]) == (4321, -123456)
        rr = await client.read_holding_registers(0x0010, count=2, device_id=1)
        assert rr.registers == regs
        rr = await client.write_register(0x0090, 1, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = await client.write_register(0x1006, 1, device_id=1)  # input table: not writable
        assert rr.isError() and rr.exception_code == 2
        assert dev.counters.writes == 4


# -- faults ----------------------------------------------------------------------------------


async def test_every_fault_switch_over_tcp() -> None:
    spec = SimDeviceSpec(name="m", url=f"tcp://{LOOPBACK}:0", profile=profile("chint-dtsu666"))
    async with serve([spec]) as sim:
        dev = sim.device("m")
        url = dev.url
        port = port_of(url)
        loop = asyncio.get_running_loop()
        async with tcp_client(url, timeout_s=0.3) as client:
            dev.faults.set(FaultKind.NO_ANSWER)
            started = loop.time()
            with pytest.raises(ModbusException):
                await client.read_holding_registers(0x2006, count=2, device_id=1)
            assert loop.time() - started >= 0.3
            assert dev.counters.ignored == 1
        async with tcp_client(url, timeout_s=2.0) as client:
            dev.faults.set("slow", delay_s=0.3)
            started = loop.time()
            rr = await client.read_holding_registers(0x2006, count=2, device_id=1)
            assert not rr.isError() and loop.time() - started >= 0.3
            dev.faults.set("exception", code=2)
            rr = await client.read_holding_registers(0x2006, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 2
        dev.faults.set("drop")
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(mbap_read(1, 1, 3, 0x2006, 2))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, no answer
        writer.close()
        dev.faults.set("corrupt")
        answer = await raw_exchange(port, mbap_read(2, 1, 3, 0x2006, 2), 7 + 2 + 4)
        assert answer[8] == 6  # byte count says 6, the frame carries 4
        async with tcp_client(url, timeout_s=0.3) as client:
            with pytest.raises(ModbusException):
                await client.read_holding_registers(0x2006, count=2, device_id=1)
            dev.faults.clear()
        async with tcp_client(url) as client:
            rr = await client.read_holding_registers(0x2006, count=2, device_id=1)
            assert not rr.isError()
        assert dev.faults.changes == 6


async def test_corrupt_rtu_over_tcp_has_a_bad_crc() -> None:
    spec = SimDeviceSpec(
        name="m", url=f"rtu+tcp://{LOOPBACK}:0", profile=profile("chint-dtsu666"), device_id=4
    )
    async with serve([spec]) as sim:
        sim.device("m").faults.set("corrupt")
        request = rtu_frame(4, struct.pack(">BHH", 3, 0x2006, 2))
        answer = await raw_exchange(port_of(sim.device("m").url), request, 9)
        assert answer[:3] == bytes((4, 3, 4))
        assert int.from_bytes(answer[-2:], "little") != crc16(answer[:-2])
        sim.device("m").faults.set("drop")
        reader, writer = await asyncio.open_connection(LOOPBACK, port_of(sim.device("m").url))
        writer.write(request)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()


# -- control API and site entry point ----------------------------------------------------------


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_control_api_round_trip() -> None:
    specs = [
        SimDeviceSpec(name="m1", url=f"tcp://{LOOPBACK}:0", profile=profile("chint-dtsu666")),
        SimDeviceSpec(
            name="m2", url=f"tcp://{LOOPBACK}:0", profile=profile("acrel-adl400"), device_id=2
        ),
    ]
    async with serve(specs, control=(LOOPBACK, 0)) as sim:
        assert sim.control is not None
        base = sim.control.url
        status, devices = await asyncio.to_thread(http, "GET", f"{base}/devices")
        assert status == 200
        assert [d["name"] for d in devices] == ["m1", "m2"]
        assert devices[0]["fault"] == "none" and devices[0]["url"] == sim.device("m1").url
        assert devices[1]["counters"]["requests"] == 0
        body = {"fault": "slow", "delay_s": 2.0}
        status, dev = await asyncio.to_thread(http, "PUT", f"{base}/devices/m2/fault", body)
        assert status == 200 and (dev["fault"], dev["delay_s"]) == ("slow", 2.0)
        assert sim.device("m2").faults.kind is FaultKind.SLOW
        body = {"fault": "exception", "code": 2}
        status, dev = await asyncio.to_thread(http, "PUT", f"{base}/devices/m1/fault", body)
        assert status == 200 and sim.device("m1").faults.code == 2
        status, values = await asyncio.to_thread(http, "GET", f"{base}/devices/m1/values")
        assert status == 200 and set(values) == {p.name for p in sim.device("m1").profile.points}
        for method, path, payload, expected in (
            ("PUT", "/devices/m1/fault", {"fault": "melt"}, 400),
            ("PUT", "/devices/m1/fault", {"fault": "slow", "delay_s": -1}, 400),
            ("PUT", "/devices/m1/fault", {"fault": "none", "colour": "red"}, 400),
            ("PUT", "/devices/nope/fault", {"fault": "none"}, 404),
            ("GET", "/devices/m1/fault", None, 405),
            ("GET", "/elsewhere", None, 404),
        ):
            status, answer = await asyncio.to_thread(http, method, base + path, payload)
            assert status == expected and "error" in answer, (path, payload)
        assert sim.device("m1").faults.kind is FaultKind.EXCEPTION


async def test_run_simulators_sets_ready_and_stops_on_cancel(free_tcp_port: int) -> None:
    url = f"tcp://{LOOPBACK}:{free_tcp_port}"
    spec = SimDeviceSpec(name="m", url=url, profile=profile("eastron-sdm630"))
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulators([spec], ready=ready), name="simulators")
    await asyncio.wait_for(ready.wait(), 5)
    async with tcp_client(url) as client:
        rr = await client.read_input_registers(0x0046, count=2, device_id=1)
        frequency = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
        assert 49.5 < frequency < 50.5  # type: ignore[operator]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(OSError):
        await asyncio.open_connection(LOOPBACK, free_tcp_port)


async def test_tcp_throughput_from_the_precomputed_image() -> None:
    spec = SimDeviceSpec(name="m", url=f"tcp://{LOOPBACK}:0", profile=profile("test-plc"))
    async with serve([spec]) as sim:
        reader, writer = await asyncio.open_connection(LOOPBACK, port_of(sim.device("m").url))
        depth, rounds = 8, 1500
        burst = b"".join(mbap_read(i, 1, 3, 0, 125) for i in range(depth))
        started = time.perf_counter()
        for _ in range(rounds):
            writer.write(burst)
            await reader.readexactly(depth * (9 + 250))
        rate = depth * rounds / (time.perf_counter() - started)
        writer.close()
        # Client and server share this one loop; tens of thousands per second is typical.
        assert rate > 5_000, rate
        assert sim.device("m").counters.answered == depth * rounds

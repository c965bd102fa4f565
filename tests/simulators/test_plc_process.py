"""The simulated PLC's process reacts to written set-points and run coils (issue 21 item 7).

Through the device's own request path (FC06/FC16/FC05 PDUs in, FC03/FC01 answers out) on a
clock the test moves, so every value is exact.
"""

from __future__ import annotations

import math
import struct

from drivers.modbus.codec import Order, PointType, Table, encode
from drivers.modbus.config import ModbusPoint, ModbusProfile
from simulators.modbus.device import SimDevice
from simulators.modbus.plc_signals import FOLLOW_TAU_S, PlcSignals

PROFILE = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="flow", address=102, type=PointType.FLOAT32),
        ModbusPoint(name="temp_sp", address=104, type=PointType.INT16, scale=0.1),
        ModbusPoint(name="temp_pv", address=105, type=PointType.INT16, scale=0.1),
        ModbusPoint(name="pump_current", address=106, type=PointType.UINT16, scale=0.01),
        ModbusPoint(name="pump_run_hours", address=107, type=PointType.UINT32),
        ModbusPoint(name="level", address=109),
        ModbusPoint(name="pump_run", table=Table.COIL, address=5),
    ),
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _read(device: SimDevice, address: int, count: int) -> tuple[int, ...]:
    answer = device.respond(struct.pack(">BHH", 3, address, count))
    assert answer[0] == 3, answer
    return struct.unpack(f">{count}H", answer[2:])


def _float(device: SimDevice, address: int) -> float:
    hi, lo = _read(device, address, 2)
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def _write_float(device: SimDevice, address: int, value: float) -> None:
    registers = encode(value, PointType.FLOAT32, Order.ABCD)
    pdu = struct.pack(">BHHB", 16, address, 2, 4) + struct.pack(">2H", *registers)
    assert device.respond(pdu) == pdu[:5]


def test_the_process_value_follows_a_written_set_point_as_a_first_order_lag() -> None:
    clock = Clock()
    device = SimDevice("plc", PROFILE, clock=clock, update_interval_s=0.1)
    signals = device.signals
    assert isinstance(signals, PlcSignals)
    assert signals.follows == {"flow": "flow_setpoint", "temp_pv": "temp_sp"}
    clock.t += 0.5
    start = _float(device, 102)
    _write_float(device, 100, 42.5)
    clock.t += 0.2
    assert _float(device, 102) == start  # the step starts at this sample
    t0 = clock.t
    for elapsed in (0.5, 1.0, 3.0):
        clock.t = t0 + elapsed
        expected = 42.5 + (start - 42.5) * math.exp(-elapsed / FOLLOW_TAU_S)
        assert math.isclose(_float(device, 102), expected, rel_tol=1e-6, abs_tol=1e-4)
    clock.t += 20 * FOLLOW_TAU_S
    assert math.isclose(_float(device, 102), 42.5, abs_tol=1e-4)
    assert _float(device, 100) == 42.5  # the set-point itself stays as written
    # A second write moves it again, from where it is.
    _write_float(device, 100, 10.0)
    clock.t += 0.2
    _float(device, 102)
    clock.t += 30 * FOLLOW_TAU_S
    assert math.isclose(_float(device, 102), 10.0, abs_tol=1e-4)
    # FC06 on a scaled int16 set-point: temp_pv settles on it in register steps.
    assert device.respond(struct.pack(">BHH", 6, 104, 215)) == struct.pack(">BHH", 6, 104, 215)
    clock.t += 0.2
    _read(device, 105, 1)
    clock.t += 30 * FOLLOW_TAU_S
    assert _read(device, 105, 1) == (215,)


def test_a_run_coil_written_off_stops_the_pump_and_on_starts_it() -> None:
    clock = Clock()
    device = SimDevice("plc", PROFILE, clock=clock, update_interval_s=0.1)
    running = _read(device, 106, 1)[0]
    assert running >= 40_000  # the uint16 pattern: a current well above zero
    hours = _read(device, 107, 2)
    off = struct.pack(">BHH", 5, 5, 0x0000)
    assert device.respond(off) == off
    clock.t += 0.2
    assert _read(device, 106, 1) == (0,)
    assert _read(device, 107, 2) != (0, 0) and _read(device, 107, 2) >= hours  # not a current
    assert device.respond(struct.pack(">BHH", 1, 5, 1)) == bytes((1, 1, 0))
    on = struct.pack(">BHH", 5, 5, 0xFF00)
    assert device.respond(on) == on
    clock.t += 0.2
    assert _read(device, 106, 1)[0] >= 40_000


def test_a_write_that_drives_nothing_leaves_the_process_to_its_patterns() -> None:
    clock = Clock()
    written = SimDevice("a", PROFILE, clock=clock, seed=3)
    untouched = SimDevice("b", PROFILE, clock=clock, seed=3)
    assert written.respond(struct.pack(">BHH", 6, 109, 7)) == struct.pack(">BHH", 6, 109, 7)
    for _ in range(5):
        clock.t += 0.37
        assert _read(written, 100, 9) == _read(untouched, 100, 9)
    assert _read(written, 109, 1) == (7,)

"""The simulator's parts without sockets: frames, register image, meter physics, PLC signals."""

from __future__ import annotations

import math
import struct

import pytest

from drivers.modbus.codec import Order, PointType, Table
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.catalog import Kind, shipped
from simulators.common.faults import FaultKind, Faults
from simulators.common.meter_physics import MeterPhysics, resolve_name
from simulators.common.requests import Action
from simulators.modbus.device import SimDevice, signals_for
from simulators.modbus.frames import (
    crc16,
    exception_pdu,
    pack_bits,
    rtu_crc_ok,
    rtu_frame,
    unpack_bits,
)
from simulators.modbus.plc_signals import PlcSignals
from simulators.modbus.register_image import RegisterImage, engineering
from simulators.modbus.server import RtuFramer
from simulators.modbus.site import SimDeviceSpec, _group, load_profile

PROFILES = shipped(Kind.PROFILES)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def profile(name: str) -> ModbusProfile:
    return load_profile(PROFILES / f"{name}.yaml")


def point(name: str, address: int, **kw: object) -> ModbusPoint:
    return ModbusPoint.model_validate({"name": name, "address": address, **kw})


# -- frames ------------------------------------------------------------------------------


def test_crc16_matches_the_modbus_spec_example() -> None:
    # Modbus over serial line guide: 01 03 00 00 00 0A -> CRC C5 CD (low byte first).
    assert rtu_frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16(b"") == 0xFFFF
    assert rtu_crc_ok(bytes.fromhex("01030000000AC5CD"))
    assert not rtu_crc_ok(bytes.fromhex("01030000000AC5CE"))


@pytest.mark.parametrize("count", [1, 7, 8, 9, 16, 2000])
def test_bits_pack_and_unpack_in_modbus_order(count: int) -> None:
    bits = bytes((i * 7 + i // 3) % 2 for i in range(count))
    packed = pack_bits(bits)
    assert len(packed) == (count + 7) // 8
    assert packed[0] & 1 == bits[0]  # first bit is the low bit of the first byte
    assert unpack_bits(packed, count) == bits


def test_rtu_framer_cuts_frames_skips_garbage_and_resets_on_silence() -> None:
    framer = RtuFramer(frame_gap_s=0.05)
    req = rtu_frame(1, bytes.fromhex("0300000002"))
    write = rtu_frame(2, bytes.fromhex("10000A000204000100020000"[:-4]))  # FC16, 2 regs
    assert framer.feed(req[:3], now=0.0) == []  # partial frame waits
    assert framer.feed(req[3:] + write, now=0.001) == [(1, req[1:-2]), (2, write[1:-2])]
    bad = bytearray(req)
    bad[-1] ^= 0xFF
    assert framer.feed(bytes(bad) + req, now=0.002) == [(1, req[1:-2])]
    assert framer.bad_frames >= 1
    # A partial frame followed by silence is discarded, not glued to the next frame.
    assert framer.feed(req[:5], now=1.0) == []
    assert framer.feed(req, now=2.0) == [(1, req[1:-2])]
    # Unknown function code: the first prefix with a good CRC is the frame.
    odd = rtu_frame(1, bytes.fromhex("2B0E0100"))
    assert framer.feed(odd + req, now=3.0) == [(1, odd[1:-2]), (1, req[1:-2])]


# -- register image ----------------------------------------------------------------------


def test_engineering_divides_by_whole_inverse_scales() -> None:
    assert engineering(2305, 0.1, 0.0) == 230.5
    assert engineering(12345, 0.001, 0.0) == 12.345
    assert engineering(7, 0.5, 0.0) == 3.5
    assert engineering(700, 0.1, -40.0) == 30.0
    assert engineering(5, 1.0, 0.0) == 5 and isinstance(engineering(5, 1.0, 0.0), int)
    assert engineering(True, 0.1, 1.0) is True
    assert engineering(2305, -0.1, 0.0) == -230.5
    assert engineering(2, 3.0, 0.0) == 6.0
    assert engineering(12345, 0.001, 0.0, 1) == 12.3


def test_bits_of_one_register_are_ored_and_served_back() -> None:
    prof = ModbusProfile(
        points=(
            point("low", 0, type="bit", bit=0),
            point("high", 0, type="bit", bit=15),
            point("swapped", 1, type="bit", bit=3, order="BADC"),
            point("word", 2, type="uint16"),
        )
    )
    image = RegisterImage(prof)
    image.store({"low": True, "high": True, "swapped": True, "word": 7})
    assert image.registers(Table.HOLDING, 0, 3) == [0x8001, 0x0800, 7]
    assert image.served_values() == {"low": True, "high": True, "swapped": True, "word": 7}
    image.store({"low": False, "high": True, "swapped": False, "word": 7})
    assert image.registers(Table.HOLDING, 0, 2) == [0x8000, 0]


def test_device_order_override_applies_where_the_point_has_none() -> None:
    prof = ModbusProfile(
        order=Order.ABCD,
        points=(
            point("f", 0, type="float32"),
            point("fixed", 2, type="float32", order="ABCD"),
        ),
    )
    plain = RegisterImage(prof)
    swapped = RegisterImage(prof, order=Order.CDAB)
    for image in (plain, swapped):
        image.store({"f": 230.5, "fixed": 230.5})
        assert image.served_values() == {"f": 230.5, "fixed": 230.5}
    assert plain.registers(Table.HOLDING, 0, 4) == [0x4366, 0x8000, 0x4366, 0x8000]
    assert swapped.registers(Table.HOLDING, 0, 4) == [0x8000, 0x4366, 0x4366, 0x8000]


def test_integer_points_round_scale_and_clamp() -> None:
    prof = ModbusProfile(
        points=(
            point("v", 0, type="uint16", scale=0.1),
            point("t", 1, type="int16", scale=0.1, offset=-40.0),
            point("big", 2, type="uint16"),
            point("neg", 3, type="uint16"),
            point("s", 4, type="string", length=2),
        )
    )
    image = RegisterImage(prof)
    image.store({"v": 230.5, "t": 21.3, "big": 70000, "neg": -5, "s": "PLC-01"})
    assert image.registers(Table.HOLDING, 0, 4) == [2305, 613, 65535, 0]
    served = image.served_values()
    assert served == {"v": 230.5, "t": served["t"], "big": 65535, "neg": 0, "s": "PLC-"}
    assert served["t"] == pytest.approx(21.3)


def test_coverage_gaps_and_unreadable_ranges() -> None:
    prof = ModbusProfile.model_validate(
        {
            "unreadable": [{"start": 20, "end": 21}],
            "points": [
                {"name": "a", "address": 0},
                {"name": "b", "address": 5, "type": "uint32"},
                {"name": "c", "address": 22},
            ],
        }
    )
    loose, strict = RegisterImage(prof), RegisterImage(prof, strict_gaps=True)
    assert loose.check(Table.HOLDING, 0, 7) == 0  # gap 1..4 reads as zeros
    assert strict.check(Table.HOLDING, 0, 7) == 2
    assert strict.check(Table.HOLDING, 5, 2) == 0
    assert loose.check(Table.HOLDING, 1, 6) == 2  # starts in a gap
    assert loose.check(Table.HOLDING, 5, 18) == 2  # spans the unreadable range
    assert loose.check(Table.HOLDING, 22, 2) == 2  # runs past the last point
    assert loose.check(Table.INPUT, 0, 1) == 2  # a table the profile does not use
    assert loose.check(Table.HOLDING, 0, 7, write=True) == 2  # writes hit points only


def test_written_points_are_pinned_until_unpinned() -> None:
    clock = FakeClock()
    dev = SimDevice("plc", profile("test-plc"), clock=clock, update_interval_s=0.1)
    before = dev.served_values()["h_uint16_abcd"]
    answer = dev.respond(struct.pack(">BHH", 6, 0x0006, 1234))
    assert answer == struct.pack(">BHH", 6, 0x0006, 1234)
    clock.t += 5
    dev.refresh()
    values = dev.served_values()
    assert values["h_uint16_abcd"] == 1234 != before
    dev.image.unpin()
    clock.t += 5
    dev.refresh()
    assert dev.served_values()["h_uint16_abcd"] != 1234


# -- device: requests and faults -----------------------------------------------------------


def test_respond_validates_counts_addresses_and_functions() -> None:
    dev = SimDevice("m", profile("chint-dtsu666"))
    assert dev.respond(struct.pack(">BHH", 3, 0x2000, 0)) == exception_pdu(3, 3)
    assert dev.respond(struct.pack(">BHH", 3, 0x2000, 126)) == exception_pdu(3, 3)
    assert dev.respond(struct.pack(">BHH", 1, 0, 2001)) == exception_pdu(1, 3)
    assert dev.respond(struct.pack(">BHH", 3, 0x3000, 2)) == exception_pdu(3, 2)
    assert dev.respond(struct.pack(">BHH", 4, 0x2000, 2)) == exception_pdu(4, 2)
    assert dev.respond(bytes((0x2B, 0x0E, 1, 0))) == exception_pdu(0x2B, 1)
    assert dev.respond(struct.pack(">BHH", 3, 0x2000, 125)) == exception_pdu(3, 2)  # past 0x2044
    answer = dev.respond(struct.pack(">BHH", 3, 0x2000, 0x46))
    assert answer[:2] == bytes((3, 0x8C)) and len(answer) == 2 + 0x8C
    plc = SimDevice("plc", profile("test-plc"))
    answer = plc.respond(struct.pack(">BHH", 3, 0, 125))
    assert answer[:2] == bytes((3, 250)) and len(answer) == 252
    mirrored = SimDevice("m", profile("chint-dtsu666"), input_as_holding=True)
    assert mirrored.respond(struct.pack(">BHH", 4, 0x2006, 2))[:2] == bytes((4, 4))


def test_fault_switches_decide_the_action() -> None:
    dev = SimDevice("m", profile("chint-dtsu666"))
    read = struct.pack(">BHH", 3, 0x2006, 2)
    assert dev.serve(read)[0] is Action.SEND
    dev.faults.set("no_answer")
    assert dev.serve(read)[0] is Action.SILENT
    dev.faults.set(FaultKind.DROP)
    assert dev.serve(read)[0] is Action.CLOSE
    dev.faults.set("exception", code=2)
    assert dev.serve(read) == (Action.SEND, exception_pdu(3, 2), 0.0)
    dev.faults.set("slow", delay_s=0.25)
    action, out, delay = dev.serve(read)
    assert (action, out[:2], delay) == (Action.SEND, bytes((3, 4)), 0.25)
    dev.faults.set("corrupt")
    assert dev.serve(read)[0] is Action.CORRUPT
    dev.faults.clear()
    assert dev.counters.as_dict() == {
        "requests": 6,
        "answered": 4,
        "exceptions": 1,
        "ignored": 2,
        "writes": 0,
    }
    with pytest.raises(ValueError):
        dev.faults.set("melt")
    with pytest.raises(ValueError):
        dev.faults.set("slow", delay_s=-1)
    with pytest.raises(ValueError):
        Faults().set("exception", code=0)


def test_freeze_holds_values_and_unfreeze_lets_them_move() -> None:
    clock = FakeClock()
    dev = SimDevice("m", profile("eastron-sdm630"), clock=clock)
    dev.freeze()
    frozen = dev.served_values()
    clock.t += 30
    dev.respond(struct.pack(">BHH", 4, 0, 2))
    assert dev.served_values() == frozen
    dev.unfreeze()
    dev.respond(struct.pack(">BHH", 4, 0, 2))
    assert dev.served_values()["voltage_a"] != frozen["voltage_a"]


def test_updates_are_lazy_at_most_once_per_interval() -> None:
    clock = FakeClock()
    dev = SimDevice("m", profile("eastron-sdm630"), clock=clock, update_interval_s=0.5)
    first = dev.served_values()
    clock.t += 0.4
    dev.respond(struct.pack(">BHH", 4, 0, 2))
    assert dev.served_values() == first
    clock.t += 0.2
    dev.respond(struct.pack(">BHH", 4, 0, 2))
    assert dev.served_values()["voltage_a"] != first["voltage_a"]


# -- meter physics -------------------------------------------------------------------------


def meter_points(*extra: ModbusPoint) -> tuple[ModbusPoint, ...]:
    names = [
        "voltage_a", "voltage_b", "voltage_c", "voltage_ab", "voltage_bc", "voltage_ca",
        "current_a", "current_b", "current_c",
        "power_a", "power_b", "power_c", "power_total",
        "reactive_power_a", "reactive_power_b", "reactive_power_c", "reactive_power_total",
        "apparent_power_a", "apparent_power_b", "apparent_power_c", "apparent_power_total",
        "pf_a", "pf_b", "pf_c", "pf_total", "frequency",
        "energy_import", "energy_export", "reactive_energy_import", "reactive_energy_export",
        "demand_total",
    ]  # fmt: skip
    return tuple(point(n, 2 * i, type="float64") for i, n in enumerate(names)) + extra


def test_physics_is_consistent_at_every_step() -> None:
    physics = MeterPhysics(meter_points(), seed=7)
    last_import = -1.0
    for step in range(200):
        q = physics.quantities(step * 3.7)
        for x, y in (("a", "b"), ("b", "c"), ("c", "a")):
            va, vb = q[f"voltage_{x}"], q[f"voltage_{y}"]
            assert q[f"voltage_{x}{y}"] == pytest.approx(math.sqrt(va**2 + vb**2 + va * vb))
        for x in "abc":
            s = q[f"voltage_{x}"] * q[f"current_{x}"]
            assert q[f"apparent_power_{x}"] == pytest.approx(s)
            assert q[f"power_{x}"] == pytest.approx(s * q[f"pf_{x}"])
            assert q[f"apparent_power_{x}"] ** 2 == pytest.approx(
                q[f"power_{x}"] ** 2 + q[f"reactive_power_{x}"] ** 2
            )
            assert 207 < q[f"voltage_{x}"] < 253
        assert q["power_total"] == pytest.approx(sum(q[f"power_{x}"] for x in "abc"))
        assert q["pf_total"] == pytest.approx(q["power_total"] / q["apparent_power_total"])
        assert 49.9 < q["frequency"] < 50.1
        assert q["energy_import"] >= last_import
        last_import = q["energy_import"]


def test_energy_integrates_power_over_the_injected_clock() -> None:
    physics = MeterPhysics(meter_points(), seed=3)
    q0 = physics.quantities(100.0)
    e0, p0 = q0["energy_import"], q0["power_total"]
    q1 = physics.quantities(101.0)  # one second at (about) p0
    assert q1["energy_import"] - e0 == pytest.approx(q1["power_total"] / 3600, abs=1e-6)
    assert q1["power_total"] == pytest.approx(p0, rel=0.05)
    q2 = physics.quantities(50.0)  # the clock never runs backwards for the counters
    assert q2["energy_import"] == q1["energy_import"]


def test_physics_is_deterministic_per_seed() -> None:
    a, b, c = (MeterPhysics(meter_points(), seed=s) for s in (1, 1, 2))
    for t in (0.0, 0.5, 10.0, 99.0):
        assert a.sample(t) == b.sample(t)
    assert a.sample(200.0) != c.sample(200.0)


def test_pf_is_one_without_load() -> None:
    physics = MeterPhysics(meter_points(), seed=1)
    physics.load_scale = 0.0
    q = physics.quantities(10.0)
    assert q["apparent_power_total"] == 0.0
    assert q["pf_total"] == 1.0 and q["pf_a"] == 1.0


def test_units_convert_and_mirrors_follow_their_quantity() -> None:
    pts = meter_points(
        point("power_total_kw", 100, type="float64", unit="kW"),
        point("energy_import_mbmd", 104, type="float64", unit="Wh"),
        point("pf_total_pct", 108, type="float64", unit="%"),
        point("mystery", 112, type="uint16", scale=0.1),
        point("mystery_text", 113, type="string", length=4),
    )
    physics = MeterPhysics(pts, seed=5)
    v = physics.sample(42.0)
    assert v["power_total_kw"] == pytest.approx(v["power_total"] / 1000)  # type: ignore[operator]
    assert v["energy_import_mbmd"] == pytest.approx(v["energy_import"])
    assert v["pf_total_pct"] == pytest.approx(100 * v["pf_total"])  # type: ignore[operator]
    assert isinstance(v["mystery"], float) and 0 <= v["mystery"] <= 100.0
    assert v["mystery_text"] == "SIM-mystery_text"
    assert resolve_name("energy_import_mbmd") == "energy_import"
    assert resolve_name("mystery") is None


def test_a_unit_that_does_not_fit_the_quantity_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"energy_import.*kW"):
        MeterPhysics([point("energy_import", 0, type="float32", unit="kW")])


def test_secondary_side_profile_divides_by_the_ratios() -> None:
    clock = FakeClock()
    primary = SimDevice("f", profile("acrel-adl400-float"), seed=9, clock=clock)
    secondary = SimDevice("i", profile("acrel-adl400"), seed=9, clock=clock)
    p, s = primary.served_values(), secondary.served_values()
    ct, pt = s["ct_ratio"], s["pt_ratio"]
    assert (pt, ct) == (1, 20)
    assert s["voltage_a"] * pt == pytest.approx(p["voltage_a"], abs=0.1)  # type: ignore[operator]
    assert s["current_a"] * ct == pytest.approx(p["current_a"], abs=0.01 * ct)  # type: ignore[operator]
    # ADL400 int area power in W, float area in kW: same meter, same seed.
    assert s["power_total"] * pt * ct / 1000 == pytest.approx(p["power_total"], abs=0.03)  # type: ignore[operator]
    # Client writes a new CT ratio: what follows is rescaled.
    secondary.respond(struct.pack(">BHH", 6, 0x008E, 40))
    clock.t += 1
    secondary.refresh()
    s2 = secondary.served_values()
    assert s2["ct_ratio"] == 40
    assert s2["current_a"] * 40 == pytest.approx(p["current_a"], rel=0.05, abs=0.4)  # type: ignore[operator]


def test_served_totals_match_phases_within_quantisation() -> None:
    dev = SimDevice("i", profile("acrel-adl400"), seed=4)
    v = dev.served_values()
    phases = sum(v[f"power_{x}"] for x in "abc")  # type: ignore[misc]
    assert abs(v["power_total"] - phases) <= 2  # type: ignore[operator]
    pf = v["power_total"] / v["apparent_power_total"]  # type: ignore[operator]
    assert v["pf_total"] == pytest.approx(pf, abs=0.002)


# -- PLC signals ---------------------------------------------------------------------------


def test_plc_patterns_cover_every_type_and_move() -> None:
    prof = profile("test-plc")
    signals = signals_for(prof, seed=0)
    assert isinstance(signals, PlcSignals)
    types = {p.point_type for p in prof.points}
    assert types == set(PointType)
    a, b = signals.sample(0.0), signals.sample(3.0)
    assert a["h_string_abcd"] == "PLC-01"
    assert a["h_uint64_abcd"] > 2**32  # type: ignore[operator]
    assert a["h_int64_abcd"] < -(2**32)  # type: ignore[operator]
    assert a["h_uint32_abcd"] != b["h_uint32_abcd"]
    assert any(a[f"coil_{i}"] != b[f"coil_{i}"] for i in range(10))
    assert a == PlcSignals(prof.points, seed=0).sample(0.0)


def test_test_plc_profile_covers_every_type_in_every_order_on_both_tables() -> None:
    prof = profile("test-plc")
    seen = {(p.table, p.point_type, p.order) for p in prof.points}
    for table in (Table.HOLDING, Table.INPUT):
        for t in PointType:
            if t in (PointType.BOOL, PointType.BIT, PointType.STRING):
                continue
            for order in Order:
                assert (table, t, order) in seen, (table, t, order)
        assert (table, PointType.STRING, Order.BADC) in seen
        shared = [p for p in prof.points if p.table is table and p.point_type is PointType.BIT]
        assert len({p.address for p in shared}) < len(shared)  # two bits of one register
    assert {Table.COIL, Table.DISCRETE} <= {p.table for p in prof.points}
    assert len(prof.unreadable) == 2


# -- site ------------------------------------------------------------------------------------


def test_specs_group_by_endpoint_and_clashes_are_errors() -> None:
    prof = profile("chint-dtsu666")
    specs = [
        SimDeviceSpec(name="a", url="tcp://127.0.0.1:1502", profile=prof, device_id=1),
        SimDeviceSpec(name="b", url="tcp://127.0.0.1:1502", profile=prof, device_id=2),
        SimDeviceSpec(name="c", url="rtu:///dev/ttyX?baudrate=9600", profile=prof, device_id=1),
        SimDeviceSpec(name="d", url="rtu+tcp://127.0.0.1:1503", profile=prof),
    ]
    assert [len(g) for g in _group(specs).values()] == [2, 1, 1]
    with pytest.raises(ValueError, match="device_id 1 is taken"):
        _group([*specs, SimDeviceSpec(name="e", url="tcp://127.0.0.1:1502", profile=prof)])
    with pytest.raises(ValueError, match="named 'a'"):
        _group([*specs, SimDeviceSpec(name="a", url="tcp://127.0.0.1:9", profile=prof)])
    with pytest.raises(ValueError, match="other line settings"):
        _group(
            [*specs, SimDeviceSpec(name="f", url="rtu:///dev/ttyX?baudrate=19200", profile=prof)]
        )

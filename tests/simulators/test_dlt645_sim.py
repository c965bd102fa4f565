"""The simulated DL/T 645 meter on its own: physics in the table's units, tariffs, clock.

Pure logic with injected clocks (no transport): requests are built with the driver's frame
codec and answers read back with it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from drivers.dlt645.formats import decode
from drivers.dlt645.frame import Frame, FrameParser, address_bytes, read_request
from drivers.dlt645.identifiers import lookup
from simulators.common.meter_physics import MeterPhysics
from simulators.dlt645.meter import Dlt645Meter


class Clocks:
    """A monotonic clock and a wall clock that move only when told."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.start = dt.datetime(2024, 5, 1, 7, 58, 30)

    def mono(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.t - 1000.0)


def _frame(data: bytes) -> Frame:
    (frame,) = FrameParser().feed(data)
    assert isinstance(frame, Frame)
    return frame


def _read(meter: Dlt645Meter, di: int) -> list[Any]:
    _, out, _ = meter.serve(_frame(read_request(meter.address, di)))
    answer = _frame(out)
    known = lookup(di)
    assert known is not None and answer.data[:4] == di.to_bytes(4, "little")
    return list(decode(known.format, answer.data[4:]))


def test_values_are_the_modbus_physics_in_the_tables_units() -> None:
    clocks = Clocks()
    meter = Dlt645Meter("m", "000000000001", seed=7, clock=clocks.mono, wall=clocks.wall)
    twin = MeterPhysics([], seed=7)  # the same seed gives the same meter
    q = twin.quantities(0.0)
    assert _read(meter, 0x02010100) == [round(q["voltage_a"], 1)]
    assert _read(meter, 0x02020200) == [round(q["current_b"], 3)]
    assert _read(meter, 0x02030000) == [round(q["power_total"] / 1000, 4)]
    assert _read(meter, 0x00010000) == [round(q["energy_import"] / 1000, 2)]
    assert _read(meter, 0x02800002) == [round(q["frequency"], 2)]
    assert _read(meter, 0x04000101) == ["2024-05-01"]
    assert _read(meter, 0x04000102) == ["07:58:30"]
    demand, when = _read(meter, 0x01010000)
    assert demand == round(q["demand_max"] / 1000, 4) and when == "2024-05-01T07:58"
    # The import counter never decreases as time goes on.
    seen = []
    for _ in range(5):
        clocks.t += 60
        seen.append(_read(meter, 0x00010000)[0])
    assert seen == sorted(seen) and seen[-1] > seen[0]


def test_tariff_registers_follow_the_tariff_in_force() -> None:
    clocks = Clocks()

    def tariff_at(when: dt.datetime) -> int:
        return 4 if when.hour < 8 else 2  # valley until 08:00, then peak

    meter = Dlt645Meter(
        "m", "000000000001", seed=3, clock=clocks.mono, wall=clocks.wall, tariff_at=tariff_at
    )
    start = [_read(meter, 0x00010000 + (t << 8))[0] for t in range(5)]
    clocks.t += 60  # 07:59:30, still valley
    valley = [_read(meter, 0x00010000 + (t << 8))[0] for t in range(5)]
    clocks.t += 3600  # 08:59:30: the last hour counted as peak
    peak = [_read(meter, 0x00010000 + (t << 8))[0] for t in range(5)]
    assert valley[1:4] == start[1:4] and valley[4] > start[4]  # only valley moved
    assert peak[1] == valley[1] and peak[3:] == valley[3:] and peak[2] > valley[2]
    for registers in (start, valley, peak):  # tariffs add up to the total
        assert sum(registers[1:]) == pytest.approx(registers[0], abs=0.04)
    assert _read(meter, 0x0001FF00) == peak


def test_unknown_identifiers_and_faults() -> None:
    meter = Dlt645Meter("m", "000000000001", tariffs=2)
    request = _frame(read_request(address_bytes("000000000001"), 0x00010300))
    _, out, _ = meter.serve(request)
    answer = _frame(out)
    assert answer.is_error and answer.data == b"\x02"
    assert out.startswith(b"\xfe" * 4)  # answers come after a wake-up preamble
    meter.faults.set("corrupt")
    _, out, _ = meter.serve(request)
    assert [type(x).__name__ for x in FrameParser().feed(out)] == ["BadFrame"]
    with pytest.raises(ValueError, match="no wildcards"):
        Dlt645Meter("w", "AAAAAA000001")

"""The S7 driver against the simulated CPU on loopback: values, per-item quality, faults.

Each test starts a simulated CPU (simulators/s7) on a free port and reads it through the
real driver over TCP; values are compared with what the simulator serves at that moment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.reading import DeviceUnreachable, Quality
from drivers.s7.config import S7Device
from drivers.s7.driver import STOP_REASON, S7Driver
from simulators.s7.plc import SimPlc
from simulators.s7.server import S7Listener
from simulators.s7.simulator import S7Control

pytestmark = pytest.mark.timeout(30)

# The issue's block, plus a STRING, an LREAL and a DATE_AND_TIME in DB2.
ISSUE_POINTS: list[dict[str, Any]] = [
    {"name": "oil_temp", "address": "DB1.DBD0", "type": "REAL", "unit": "degC"},
    {"name": "strokes", "address": "DB1.DBD4", "type": "DINT"},
    {"name": "pressure_raw", "address": "DB1.DBW8", "type": "INT"},
    {"name": "running", "address": "DB1.DBX10.0"},
    {"name": "mode", "address": "MW20", "type": "WORD"},
    {"name": "recipe", "address": "DB2.DBB0", "type": "STRING[12]"},
    {"name": "flow", "address": "DB2.DBB14", "type": "LREAL", "unit": "m3/h"},
    {"name": "stamp", "address": "DB2.DBB22", "type": "DATE_AND_TIME"},
]


def device(port: int, points: list[dict[str, Any]] | None = None, **kw: Any) -> S7Device:
    return S7Device.model_validate(
        {
            "name": "press-plc",
            "driver": "s7",
            "url": f"s7://127.0.0.1:{port}",
            "rack": 0,
            "slot": 1,
            "timeout_s": 1.0,
            **kw,
            "points": points or ISSUE_POINTS,
        }
    )


@pytest.fixture
async def cpu() -> AsyncIterator[S7Listener]:
    plc = SimPlc.for_device(device(102), seed=7)
    listener = S7Listener(plc, "127.0.0.1", 0)
    await listener.start()
    yield listener
    await listener.stop()


async def test_reads_every_type_as_served(cpu: S7Listener) -> None:
    driver = S7Driver(device(cpu.port))
    cpu.plc.cpu_state = 0x04  # hold the values still while comparing
    try:
        poll = await driver.read()
    finally:
        await driver.close()
    served = cpu.plc.values
    values = dict(zip([p.name for p in poll.points], poll.values, strict=True))
    assert poll.issues == {i: (Quality.UNCERTAIN, STOP_REASON) for i in range(8)}
    assert values["oil_temp"] == pytest.approx(served["oil_temp"], rel=1e-6)  # REAL: float32
    for name in ("strokes", "pressure_raw", "running", "mode", "recipe", "flow"):
        assert values[name] == served[name], name
    assert values["stamp"] == served["stamp"]
    assert isinstance(values["running"], bool)
    assert values["recipe"] == "recipe"


async def test_one_request_per_poll_in_run(cpu: S7Listener) -> None:
    driver = S7Driver(device(cpu.port))
    try:
        first = await driver.read()
        before = cpu.requests
        second = await driver.read()
    finally:
        await driver.close()
    assert first.issues == {} and second.issues == {}
    assert len(driver.plan.requests) == 1
    assert cpu.requests - before == 1  # the CPU state is read on connect, then every 10 s


async def test_address_beyond_db_is_bad_alone(cpu: S7Listener) -> None:
    # DB1 ends at byte 11: DBW12 lies beyond it, but is joined with the others (gap 1).
    points = [*ISSUE_POINTS[:5], {"name": "beyond", "address": "DB1.DBW12", "type": "INT"}]
    driver = S7Driver(device(cpu.port, points))
    assert [len(r.slots) for r in driver.plan.requests[0].ranges] == [5, 1]
    try:
        poll = await driver.read()
        again = await driver.read()
    finally:
        await driver.close()
    reason = (Quality.BAD, "PLC item code 0x05 (address out of range)")
    assert poll.issues == {5: reason}
    assert again.issues == {5: reason}
    assert poll.values[:5] != [None] * 5 and None not in poll.values[:5]
    # The refused range stays split: one item per point of DB1 from now on.
    assert sorted(len(r.slots) for q in driver.plan.requests for r in q.ranges) == [1] * 6


async def test_missing_db_marks_its_points_only(cpu: S7Listener) -> None:
    control = S7Control(cpu)
    await control.set_fault("missing_db", {"fault": "missing_db", "db": 2})
    driver = S7Driver(device(cpu.port))
    try:
        poll = await driver.read()
        await control.set_fault("none", {"fault": "none"})
        healed = await driver.read()
    finally:
        await driver.close()
    reason = (Quality.BAD, "PLC item code 0x0A (object does not exist)")
    assert poll.issues == {5: reason, 6: reason, 7: reason}
    assert poll.values[5:] == [None, None, None]
    assert healed.issues == {}


async def test_stop_is_uncertain_and_run_recovers(cpu: S7Listener) -> None:
    control = S7Control(cpu)
    driver = S7Driver(device(cpu.port))
    try:
        assert (await driver.read()).issues == {}
        await control.set_fault("stop", {"fault": "stop"})
        driver._state_due = 0.0  # the next poll reads the state (else every 10 s)
        stopped = await driver.read()
        await control.set_fault("run", {"fault": "run"})
        running = await driver.read()  # in STOP the state is read every poll
    finally:
        await driver.close()
    assert set(stopped.issues.values()) == {(Quality.UNCERTAIN, STOP_REASON)}
    assert len(stopped.issues) == 8
    assert running.issues == {}


async def test_unreachable_refused_and_full_table(cpu: S7Listener) -> None:
    control = S7Control(cpu)
    driver = S7Driver(device(cpu.port))
    try:
        await driver.read()
        await control.set_fault("unreachable", {"fault": "unreachable"})
        with pytest.raises(DeviceUnreachable) as lost:
            await driver.read()
        with pytest.raises(DeviceUnreachable) as refused:
            await driver.read()
        await control.set_fault("none", {"fault": "none"})
        await control.set_fault("full", {"fault": "full"})
        with pytest.raises(DeviceUnreachable) as full:
            await driver.read()
        await control.set_fault("none", {"fault": "none"})
        back = await driver.read()
    finally:
        await driver.close()
    assert lost.value.reason in (
        "PLC closed the connection during a read",
        f"connection refused by 127.0.0.1:{cpu.port} (nothing listens)",
    )
    assert refused.value.reason == f"connection refused by 127.0.0.1:{cpu.port} (nothing listens)"
    assert full.value.reason == (
        "PLC refused the ISO connection: its connection table is full, or rack/slot "
        "(TSAP) names no CPU"
    )
    assert back.issues == {}


async def test_smaller_granted_pdu_replans(cpu: S7Listener) -> None:
    # 30 REALs of 4 bytes with gaps of 20: 30 items, more than one request of 240 carries.
    points = [{"name": f"t{i}", "address": f"DB1.DBD{i * 24}", "type": "REAL"} for i in range(30)]
    plc = SimPlc.for_device(device(102, points), seed=1)
    plc.cpu_state = 0x04  # STOP: the values hold still between the two requests
    big = S7Listener(plc, "127.0.0.1", 0)
    await big.start()
    driver = S7Driver(device(big.port, points, pdu_size=960))
    try:
        assert len(driver.plan.requests) == 2  # 20 items at most per request
        poll = await driver.read()
        granted = driver.connection.pdu_size
    finally:
        await driver.close()
        await big.stop()
    assert set(poll.issues.values()) == {(Quality.UNCERTAIN, STOP_REASON)}
    assert granted == 480  # the simulator grants at most 480
    assert driver.plan.pdu_size == 480
    assert poll.values == [pytest.approx(plc.values[f"t{i}"], rel=1e-6) for i in range(30)]


async def test_no_answer_is_a_timeout_and_the_next_poll_reconnects(cpu: S7Listener) -> None:
    control = S7Control(cpu)
    driver = S7Driver(device(cpu.port, timeout_s=0.2))
    try:
        await driver.read()
        await control.set_fault("no_answer", {"fault": "no_answer"})
        assert control.status()["active_faults"] == ["no_answer"]
        with pytest.raises(DeviceUnreachable) as silent:
            await driver.read()
        assert not driver.connection.connected  # a late answer must not be taken for the next
        await control.set_fault("none", {"fault": "none"})
        back = await driver.read()
    finally:
        await driver.close()
    assert silent.value.reason == "no answer to a read within 0.2 s"
    assert back.issues == {}

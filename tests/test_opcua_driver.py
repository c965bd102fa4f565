"""The OPC UA driver against the simulated PLC: polling, subscriptions, deadband, quality.

Every test reads the session's simulated PLC (tests/fixtures/opcua.py) through a real
asyncua session; values are compared with what the simulator serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver, browse
from drivers.reading import DeviceUnreachable, Poll, Quality
from tests.fixtures.opcua import PlcThread

pytestmark = pytest.mark.timeout(30)

NS = "urn:plant:plc"
TEMP = f"nsu={NS};s=Tank1.Temperature"
PUMP = f"nsu={NS};i=1002"
COUNTER = f"nsu={NS};i=1001"
LEL = f"nsu={NS};s=GasDetector1.LEL"


def device(url: str, points: list[dict[str, Any]], **kw: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {"name": "plc-1", "driver": "opcua", "url": url, "interval_s": 0.1, **kw, "points": points}
    )


async def until(
    predicate: Callable[[], Any], *, timeout_s: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


async def read_until(
    driver: OpcUaDriver, predicate: Callable[[Poll], bool], *, timeout_s: float = 5.0
) -> Poll:
    deadline = time.monotonic() + timeout_s
    while True:
        poll = await driver.read()
        if predicate(poll):
            return poll
        if time.monotonic() > deadline:
            raise AssertionError(f"no poll matched within {timeout_s} s; last: {poll}")
        await asyncio.sleep(0.02)


async def test_poll_reads_every_node_in_one_request(opcua_plc: PlcThread) -> None:
    await opcua_plc.call(opcua_plc.plc.freeze)
    served = await opcua_plc.call(opcua_plc.plc.values)
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "temp", "node": TEMP, "unit": "degC"},
                {"name": "pump_run", "node": PUMP},
                {"name": "counter", "node": COUNTER},
                {"name": "status", "node": f"nsu={NS};s=PLC1.Status"},
                {"name": "temp_f", "node": TEMP, "scale": 1.8, "offset": 32, "decimals": 2},
            ],
        )
    )
    try:
        poll = await driver.read()
    finally:
        await driver.close()
    assert poll.issues == {}
    assert poll.values == [
        served[TEMP],
        served[PUMP],
        served[COUNTER],
        "RUN",
        round(served[TEMP] * 1.8 + 32, 2),
    ]
    assert [p.unit for p in poll.points][:1] == ["degC"]
    assert driver.stats.reads == 1 and driver.stats.sessions == 1
    # The server's source and server timestamps are kept per point.
    source_ns, server_ns = driver.timestamps[0]
    assert source_ns is not None and server_ns is not None
    assert abs(source_ns - time.time_ns()) < 60 * 10**9


async def test_poll_batches_split_at_max_items(opcua_plc: PlcThread) -> None:
    points = [{"name": f"p{i}", "node": TEMP if i % 2 else COUNTER} for i in range(5)]
    driver = OpcUaDriver(device(opcua_plc.url, points, max_items_per_request=2))
    try:
        poll = await driver.read()
    finally:
        await driver.close()
    assert driver.stats.reads == 3  # 2 + 2 + 1 nodes
    assert poll.issues == {} and all(v is not None for v in poll.values)


async def test_subscription_feeds_the_cache(opcua_plc: PlcThread) -> None:
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "counter", "node": COUNTER, "mode": "subscribe"},
                {"name": "lel", "path": "PLC1/GasDetector1/LEL", "namespace": NS},
            ],
            mode="subscribe",
            publishing_interval_s=0.05,
        )
    )
    try:
        first = await driver.read()  # the first poll of a session waits for initial data
        assert first.issues == {}
        assert isinstance(first.values[0], int) and isinstance(first.values[1], float)
        later = await read_until(driver, lambda p: p.values[0] > first.values[0])
        assert later.values[0] > first.values[0]
        assert driver.stats.reads == 0  # nothing polled: every value came by notification
        assert driver.stats.notifications >= 3
    finally:
        await driver.close()


async def test_absolute_deadband_reports_only_big_changes(opcua_plc: PlcThread) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    await opcua_plc.call(plc.write, "s=Tank1.Temperature", 20.0)
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "banded", "node": TEMP, "mode": "subscribe", "deadband": {"abs": 0.5}},
                {"name": "every", "node": TEMP, "mode": "subscribe"},
            ],
            publishing_interval_s=0.05,
        )
    )
    try:
        poll = await driver.read()
        assert poll.values == [20.0, 20.0]
        # asyncua's server compares with the previous sample (not the last report), so
        # each step is measured from the value before it.
        seen: list[tuple[Any, Any]] = []
        for value in (20.3, 20.6, 21.2, 21.5, 22.5):
            await opcua_plc.call(plc.write, "s=Tank1.Temperature", value)
            poll = await read_until(driver, lambda p, v=value: p.values[1] == v)
            seen.append((poll.values[0], poll.values[1]))
        assert [banded for banded, _ in seen] == [20.0, 20.0, 21.2, 21.2, 22.5]
    finally:
        await driver.close()


async def test_percent_deadband_is_requested_and_accepted(opcua_plc: PlcThread) -> None:
    # asyncua's server accepts a percent deadband but does not filter by it (it logs
    # "not implemented"); the request is what the driver controls, and it is accepted.
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [{"name": "lel", "node": LEL, "mode": "subscribe", "deadband": {"percent": 5}}],
            publishing_interval_s=0.05,
        )
    )
    try:
        poll = await driver.read()
        assert poll.issues == {} and isinstance(poll.values[0], float)
    finally:
        await driver.close()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_status_codes_map_to_quality(opcua_plc: PlcThread, mode: str) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    await opcua_plc.call(plc.write, "s=Tank1.Temperature", 42.5)
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "temp", "node": TEMP},
                {"name": "pump_run", "node": PUMP},
                {"name": "lel", "node": LEL},
            ],
            mode=mode,
            publishing_interval_s=0.05,
        )
    )
    try:
        assert (await driver.read()).issues == {}
        await opcua_plc.call(plc.set_status, "s=Tank1.Temperature", "UncertainLastUsableValue")
        await opcua_plc.call(plc.set_status, "i=1002", "BadSensorFailure")
        poll = await read_until(driver, lambda p: len(p.issues) == 2)
        assert poll.issues == {
            0: (Quality.UNCERTAIN, "UncertainLastUsableValue"),
            1: (Quality.BAD, "BadSensorFailure"),
        }
        assert poll.values[0] == 42.5  # an uncertain value keeps its value
        assert poll.values[1] is None  # a bad one never carries text or a stale value
        assert isinstance(poll.values[2], float)
        await opcua_plc.call(plc.set_status, "s=Tank1.Temperature", None)
        await opcua_plc.call(plc.set_status, "i=1002", None)
        poll = await read_until(driver, lambda p: not p.issues)
        assert poll.values[0] == 42.5 and isinstance(poll.values[1], bool)
    finally:
        await driver.close()


async def test_missing_nodes_are_bad_per_point(opcua_plc: PlcThread) -> None:
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "nope", "node": f"nsu={NS};s=No.Such.Node"},
                {"name": "other_ns", "node": "nsu=urn:nobody;i=5"},
                {"name": "bad_path", "path": "PLC1/Tank9/Temperature", "namespace": NS},
                {"name": "sub_nope", "node": f"nsu={NS};s=Nope", "mode": "subscribe"},
                {"name": "temp", "node": TEMP},
            ],
            publishing_interval_s=0.05,
        )
    )
    try:
        poll = await driver.read()
    finally:
        await driver.close()
    assert poll.issues == {
        0: (Quality.BAD, "BadNodeIdUnknown"),
        1: (Quality.BAD, "namespace not on server: urn:nobody"),
        2: (Quality.BAD, "BadNoMatch"),
        3: (Quality.BAD, "BadNodeIdUnknown"),
    }
    assert poll.values[:4] == [None] * 4 and isinstance(poll.values[4], float)


async def test_deleted_nodes_go_bad_while_the_rest_flow(opcua_plc: PlcThread) -> None:
    plc = opcua_plc.plc
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "temp_sub", "node": TEMP, "mode": "subscribe"},
                {"name": "pump_poll", "node": PUMP},
                {"name": "counter_sub", "node": COUNTER, "mode": "subscribe"},
                {"name": "lel_poll", "node": LEL},
            ],
            publishing_interval_s=0.05,
        )
    )
    try:
        first = await driver.read()
        assert first.issues == {}
        await opcua_plc.call(plc.delete_node, "s=Tank1.Temperature")
        await opcua_plc.call(plc.delete_node, "i=1002")
        poll = await read_until(driver, lambda p: len(p.issues) == 2)
        assert poll.issues == {
            0: (Quality.BAD, "BadNodeIdUnknown"),
            1: (Quality.BAD, "BadNodeIdUnknown"),
        }
        later = await read_until(driver, lambda p: p.values[2] > poll.values[2])
        assert set(later.issues) == {0, 1} and isinstance(later.values[3], float)
    finally:
        await driver.close()


async def test_unreachable_server_raises_device_unreachable(free_tcp_port: int) -> None:
    driver = OpcUaDriver(
        device(f"opc.tcp://127.0.0.1:{free_tcp_port}", [{"name": "t", "node": TEMP}])
    )
    with pytest.raises(DeviceUnreachable) as info:
        await driver.read()
    assert info.value.reason == "connection refused"
    await driver.close()
    await driver.close()  # idempotent


async def test_browse_lists_nodes_with_namespace_uris(opcua_plc: PlcThread) -> None:
    entries = await browse(opcua_plc.url, depth=3)
    by_node = {e.node: e for e in entries}
    assert "i=2253" not in by_node  # the standard Server object is left out
    temp = by_node[TEMP]
    assert (temp.browse_name, temp.node_class, temp.data_type) == (
        "Temperature",
        "Variable",
        "Double",
    )
    assert temp.access == "r"
    assert by_node[PUMP].data_type == "Boolean"
    assert by_node[f"nsu={NS};s=PLC1"].depth == 0
    below = await browse(opcua_plc.url, path=["PLC1", "Tank1"], depth=1)
    assert {e.browse_name for e in below} >= {"Temperature", "Pressure"}
    with pytest.raises(DeviceUnreachable, match="BadNoMatch"):
        await browse(opcua_plc.url, path=["PLC9"])

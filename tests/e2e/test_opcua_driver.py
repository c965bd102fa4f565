"""The OPC UA driver against the simulated PLC: polling, subscriptions, deadband, quality.

Every test reads the session's simulated PLC (tests/fixtures/opcua.py) through a real
asyncua session; values are compared with what the simulator serves.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver, browse
from drivers.reading import DeviceUnreachable, Poll, Quality
from edge_agent.pipeline.payload import DeviceEncoder
from tests.fixtures.opcua import PlcThread
from tests.opcua_support import epoch_ms, epoch_ns, read_back, restamped_after, serve_stamped

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


# --- source timestamps ----------------------------------------------------------------

SCHEMA_V1 = jsonschema.Draft202012Validator(
    json.loads(
        (Path(__file__).resolve().parents[2] / "edge_agent/schemas/data-v1.schema.json").read_text()
    )
)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_values_carry_the_servers_source_timestamps(opcua_plc: PlcThread, mode: str) -> None:
    """A value's SourceTimestamp is its point's time in the poll that first holds it; none
    for a value the server sent without one (no fall back to ServerTimestamp), none for a
    BAD point, and a value that stays the same goes up again at the read time."""
    async with restamped_after(opcua_plc, "s=Tank1.Temperature", "i=1002"):
        await _check_source_timestamps(opcua_plc, mode)


async def _check_source_timestamps(opcua_plc: PlcThread, mode: str) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    now = datetime.datetime.now(datetime.UTC)
    stamped_at = (now - datetime.timedelta(seconds=2.5)).replace(microsecond=123_456)
    await serve_stamped(opcua_plc, "s=Tank1.Temperature", 42.25, stamped_at)
    pump = not plc.node("i=1002").value
    await serve_stamped(opcua_plc, "i=1002", pump, None)
    await opcua_plc.call(plc.set_status, "i=1001", "BadSensorFailure")
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "temp", "node": TEMP, "unit": "degC"},
                {"name": "pump_run", "node": PUMP},
                {"name": "lel", "node": LEL, "unit": "%LEL"},  # stamped by the simulator
                {"name": "counter", "node": COUNTER},
            ],
            mode=mode,
            publishing_interval_s=0.05,
        )
    )
    encoder = DeviceEncoder(gateway="gw-01", device="plc-1", points=driver.points)
    try:
        first = await driver.read()  # a subscription's first poll waits for initial data
        again = await driver.read()
        later_at = (now - datetime.timedelta(seconds=1.2)).replace(microsecond=654_321)
        await serve_stamped(opcua_plc, "s=Tank1.Temperature", 43.5, later_at)
        changed = await read_until(driver, lambda p: p.values[0] == 43.5)
    finally:
        await driver.close()
    keys = ["s=Tank1.Temperature", "i=1002", "s=GasDetector1.LEL"]
    held = await read_back(opcua_plc.url, keys)
    temp_dv, pump_dv, lel_dv = (held[k] for k in keys)
    assert temp_dv.SourceTimestamp == later_at  # the server kept the time it was given
    assert pump_dv.SourceTimestamp is None and pump_dv.ServerTimestamp is not None
    assert lel_dv.SourceTimestamp is not None

    assert first.values[:2] == [42.25, pump] and isinstance(first.values[2], float)
    assert first.issues == {3: (Quality.BAD, "BadSensorFailure")}
    assert first.point_ts == {0: epoch_ns(stamped_at), 2: epoch_ns(lel_dv.SourceTimestamp)}
    assert driver.timestamps[1] == (None, epoch_ns(pump_dv.ServerTimestamp))
    doc = orjson.loads(encoder.encode(first, seq=1))
    SCHEMA_V1.validate(doc)
    assert doc["ts_ms"] == first.ts_ns // 1_000_000
    assert doc["points"] == {
        "temp": {"value": 42.25, "unit": "degC", "quality": "good", "ts_ms": epoch_ms(stamped_at)},
        "pump_run": {"value": pump, "unit": None, "quality": "good"},
        "lel": {
            "value": first.values[2],
            "unit": "%LEL",
            "quality": "good",
            "ts_ms": epoch_ms(lel_dv.SourceTimestamp),
        },
        "counter": {"value": None, "unit": None, "quality": "bad", "reason": "BadSensorFailure"},
    }

    # The same values again: at the read time, like any driver's.
    assert again.values == first.values and again.point_ts is None
    doc = orjson.loads(encoder.encode(again, seq=2))
    SCHEMA_V1.validate(doc)
    assert [name for name, entry in doc["points"].items() if "ts_ms" in entry] == []

    # A new value of one point: its time, exactly as the server holds it.
    assert changed.point_ts == {0: epoch_ns(temp_dv.SourceTimestamp)}
    doc = orjson.loads(encoder.encode(changed, seq=3))
    SCHEMA_V1.validate(doc)
    assert doc["points"]["temp"] == {
        "value": 43.5,
        "unit": "degC",
        "quality": "good",
        "ts_ms": epoch_ms(temp_dv.SourceTimestamp),
    }
    assert [name for name, entry in doc["points"].items() if "ts_ms" in entry] == ["temp"]


async def test_source_times_of_a_wrong_clock_are_not_published(
    opcua_plc: PlcThread, caplog: pytest.LogCaptureFixture
) -> None:
    """OPC UA's "no time" (1601) and a time far ahead of the gateway's clock would make the
    ingest reject the whole message: such points take the read time, said once."""
    keys = ("s=Tank1.Temperature", "s=GasDetector1.LEL", "i=1002")
    async with restamped_after(opcua_plc, *keys):
        await _check_wrong_clock(opcua_plc, keys, caplog)


async def _check_wrong_clock(
    opcua_plc: PlcThread, keys: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    now = datetime.datetime.now(datetime.UTC)
    never_set = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)
    ahead = now + datetime.timedelta(hours=1)
    pump_at = now - datetime.timedelta(seconds=1.5)
    await serve_stamped(opcua_plc, keys[0], 33.5, never_set)
    await serve_stamped(opcua_plc, keys[1], 4.25, ahead)
    await serve_stamped(opcua_plc, keys[2], True, pump_at)
    driver = OpcUaDriver(
        device(
            opcua_plc.url,
            [
                {"name": "temp", "node": TEMP},
                {"name": "lel", "node": LEL},
                {"name": "pump", "node": PUMP},
            ],
        )
    )
    try:
        with caplog.at_level(logging.WARNING, logger="drivers.opcua.driver"):
            first = await driver.read()
            second = await driver.read()
    finally:
        await driver.close()
    held = await read_back(opcua_plc.url, keys)
    assert [held[k].SourceTimestamp for k in keys] == [never_set, ahead, pump_at]
    assert first.values == second.values == [33.5, 4.25, True]
    assert first.point_ts == {2: epoch_ns(pump_at)}
    assert second.point_ts is None  # the same values: at the read time
    warnings = [r.getMessage() for r in caplog.records if r.name == "drivers.opcua.driver"]
    assert warnings == [
        "plc-1: point temp has source time 1601-01-01T00:00:00+00:00 (before 2000); its "
        "values are published at the read time instead (is the PLC's clock set?)"
    ]

"""Helpers of the OPC UA tests: serve a value with a chosen SourceTimestamp, read back what
the server holds through a separate asyncua client, and turn OPC UA times into ms."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds

from simulators.opcua.server import OpcUaSim
from tests.fixtures.opcua import PlcThread

NS = "urn:plant:plc"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def epoch_ms(stamp: datetime.datetime) -> int:
    """ms since the epoch of an OPC UA time (floor), as the contract's `ts_ms`."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return (stamp - EPOCH) // datetime.timedelta(milliseconds=1)


def epoch_ns(stamp: datetime.datetime) -> int:
    """ns since the epoch of an OPC UA time (asyncua keeps µs)."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return (stamp - EPOCH) // datetime.timedelta(microseconds=1) * 1000


async def serve_stamped(
    plc: PlcThread, key: str, value: object, source: datetime.datetime | None
) -> None:
    """Serve `value` on the node `key` (`s=...` / `i=...`) with this SourceTimestamp (None:
    the DataValue has none) and ServerTimestamp now; the simulator should be frozen."""

    async def serve(sim: OpcUaSim) -> None:
        node = sim.node(key)
        node.value = value  # the simulator's own updates go on from this value
        stamps: dict[str, object] = {
            "SourceTimestamp": source,
            "ServerTimestamp": datetime.datetime.now(datetime.UTC),
        }
        dv = ua.DataValue(Value=ua.Variant(value), **stamps)  # type: ignore[arg-type]
        await sim.server.write_attribute_value(node.node_id, dv)

    await plc.call(serve, plc.plc)


async def read_back(url: str, keys: Iterable[str]) -> dict[str, ua.DataValue]:
    """What the server holds for each node (`s=...` / `i=...` in the PLC namespace), read by
    a client of its own with both timestamps, whatever the status."""
    client = Client(url, timeout=5)
    await client.connect()
    try:
        ns = await client.get_namespace_index(NS)
        result: dict[str, ua.DataValue] = {}
        for key in keys:
            node_id = client.get_node(f"ns={ns};{key}").nodeid
            params = ua.ReadParameters(
                MaxAge=0,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value)],
            )
            (result[key],) = await client.uaclient.read(params)
        return result
    finally:
        await client.disconnect()


@asynccontextmanager
async def restamped_after(plc: PlcThread, *keys: str) -> AsyncIterator[None]:
    """Serve the nodes' values again with a fresh SourceTimestamp when the block ends, so
    the session's PLC hands no odd time on to later tests."""
    try:
        yield
    finally:
        for key in keys:
            await plc.call(plc.plc.write, key, plc.plc.node(key).value)

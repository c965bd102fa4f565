"""The in-process amqtt broker: it takes the sink's messages and frees its port afterwards."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable

import pytest

from edge_agent.mqtt.config import MqttConfig, broker_address
from edge_agent.mqtt.embedded_broker import embedded_broker, free_port
from edge_agent.mqtt.sink import MqttSink
from tests.fixtures.mosquitto import Subscriber, publish_once

pytestmark = pytest.mark.timeout(15)


async def test_sink_publishes_through_the_embedded_broker(
    subscribe: Callable[..., Subscriber], unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d"
    async with embedded_broker() as url:
        address = broker_address(url)
        sub = await asyncio.to_thread(subscribe, address.host, address.port, topic)
        sink = MqttSink(MqttConfig(url=url), client_id="embedded-test")
        acks: list[int] = []
        task = asyncio.create_task(sink.run())
        assert await sink.wait_connected(5)
        for i in range(100):
            sink.publish(topic, b"%d" % i, on_ack=functools.partial(acks.append, i))
        assert await sink.drain(5)
        received = await sub.wait_for(100)
        await sink.close()
        await asyncio.wait_for(task, 5)
        sub.close()
    assert [m.payload for m in received] == [b"%d" % i for i in range(100)]
    assert sorted(acks) == list(range(100))


async def test_embedded_broker_on_a_given_port_frees_it_on_exit() -> None:
    port = free_port("127.0.0.1")
    async with embedded_broker(port=port) as url:
        assert url == f"mqtt://127.0.0.1:{port}"
        # A full MQTT exchange: amqtt leaks the transport of a bare TCP probe.
        await asyncio.to_thread(publish_once, "127.0.0.1", port, "t/probe", b"")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

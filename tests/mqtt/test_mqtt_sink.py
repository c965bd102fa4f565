"""MqttSink against a real Mosquitto on loopback: delivery, acks, will, outage, auth, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from edge_agent.mqtt.config import MqttConfig, TlsConfig
from edge_agent.mqtt.sink import MqttSink, Will, backoff_delays
from tests.fixtures.mosquitto import Mosquitto, SecureMosquitto, Subscriber, publish_once

pytestmark = pytest.mark.timeout(15)

SINK_LOGGER = "edge_agent.mqtt.sink"
Subscribe = Callable[..., Subscriber]


def make_sink(url: str, *, client_id: str | None = None, **options: Any) -> MqttSink:
    """A sink with test-sized backoff (50 ms doubling to 0.5 s)."""
    sink_options = {
        k: options.pop(k)
        for k in ("will", "birth", "protocol", "connect_timeout_s")
        if k in options
    }
    config = MqttConfig(url=url, **{"backoff_max_s": 0.5, **options})
    return MqttSink(
        config,
        client_id=client_id or f"test-{uuid.uuid4().hex[:10]}",
        backoff_initial_s=0.05,
        **sink_options,
    )


@contextlib.asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[asyncio.Task[None]]:
    """Run the sink for the block; then close it, which must make run() return."""
    task = asyncio.create_task(sink.run(), name="test-sink")
    try:
        yield task
    finally:
        await sink.close(grace_s=1.0)
        await asyncio.wait_for(task, 5)  # also surfaces an exception of run()


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition the code under test offers no event for."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_backoff_doubles_to_the_cap_with_full_jitter() -> None:
    delays = backoff_delays(1.0, 8.0, random.Random(7))
    drawn = [next(delays) for _ in range(200)]
    ceilings = [1.0, 2.0, 4.0] + [8.0] * 197
    assert all(0.0 <= d <= c for d, c in zip(drawn, ceilings, strict=True))
    assert max(drawn[3:]) > 4.0  # the cap is reached, and jitter spreads below it
    assert min(drawn[3:]) < 1.0


async def test_qos1_arrives_in_order_and_each_ack_fires_once(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d"
    sub = subscribe(mosquitto.host, mosquitto.port, topic)
    sink = make_sink(mosquitto.url)
    acks: list[int] = []
    payloads = [f"reading-{i}".encode() * 3 for i in range(500)]
    async with running(sink):
        assert await sink.wait_connected(5)
        for i, payload in enumerate(payloads):
            sink.publish(topic, payload, on_ack=functools.partial(acks.append, i))
        assert await sink.drain(5)
        received = await sub.wait_for(500)
    assert [m.payload for m in received] == payloads
    assert all(m.qos == 1 for m in received)
    assert sorted(acks) == list(range(500))  # once each
    assert sink.stats.published == sink.stats.acked == 500
    assert sink.stats.pending == 0


async def test_qos0_acks_after_the_write(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/q0"
    sub = subscribe(mosquitto.host, mosquitto.port, topic, qos=0)
    sink = make_sink(mosquitto.url)
    written = asyncio.Event()
    async with running(sink):
        assert await sink.wait_connected(5)
        sink.publish(topic, b"fast", qos=0, on_ack=written.set)
        await asyncio.wait_for(written.wait(), 5)
        assert [m.payload for m in await sub.wait_for(1)] == [b"fast"]
    assert sink.stats.pending == 0


async def test_birth_on_connect_and_final_not_will_after_clean_close(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    status = f"{unique_prefix}/status"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    sink = make_sink(
        mosquitto.url,
        will=Will(status, b"offline: connection lost"),
        birth=[(status, b"online")],
    )
    async with running(sink) as task:
        assert (await sub.wait_for(1))[0].payload == b"online"
        await sink.close(final=[(status, b"offline: stopped")])
        await asyncio.wait_for(task, 5)  # close() makes run() return
    assert not sink.connected
    # A marker sent over a connection opened after the close reaches the subscriber only
    # after Mosquitto handled our DISCONNECT, so a will would have come before it.
    await asyncio.to_thread(publish_once, mosquitto.host, mosquitto.port, f"{unique_prefix}/m", b"")
    received = await sub.wait_for(3)
    assert [m.payload for m in received] == [b"online", b"offline: stopped", b""]
    fresh = subscribe(mosquitto.host, mosquitto.port, status)
    (retained,) = await fresh.wait_for(1)
    assert (retained.payload, retained.retain) == (b"offline: stopped", True)


CHILD_AGENT = """
import asyncio, sys
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.sink import MqttSink, Will
url, status = sys.argv[1:3]
sink = MqttSink(MqttConfig(url=url), client_id="child-" + status.replace("/", "-"),
                will=Will(status, b"offline: connection lost"), birth=[(status, b"online")])
asyncio.run(sink.run())
"""


async def test_will_is_published_retained_when_the_agent_process_is_killed(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    status = f"{unique_prefix}/status"
    sub = subscribe(mosquitto.host, mosquitto.port, status)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD_AGENT, mosquitto.url, status,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        online = await sub.wait_for(1, 10)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        _, stderr = await child.communicate()
    assert online[0].payload == b"online", stderr.decode()
    assert [m.payload for m in await sub.wait_for(2)] == [b"online", b"offline: connection lost"]
    fresh = subscribe(mosquitto.host, mosquitto.port, status)
    (retained,) = await fresh.wait_for(1)
    assert (retained.payload, retained.retain) == (b"offline: connection lost", True)


async def test_will_is_published_when_run_is_cancelled(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    status = f"{unique_prefix}/status"
    sub = subscribe(mosquitto.host, mosquitto.port, status)
    sink = make_sink(mosquitto.url, will=Will(status, b"lost"), birth=[(status, b"online")])
    task = asyncio.create_task(sink.run())
    assert await sink.wait_connected(5)
    await sub.wait_for(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [m.payload for m in await sub.wait_for(2)] == [b"online", b"lost"]


async def test_outage_backlog_arrives_in_order_after_broker_restart(
    mosquitto_fresh: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    broker = mosquitto_fresh
    topic = f"{unique_prefix}/d"
    # A persistent session, so messages the sink delivers before we resubscribe wait for us.
    sub_id = f"sub-{uuid.uuid4().hex[:8]}"
    sub_options: dict[str, Any] = {"client_id": sub_id, "clean_session": False}
    sub = subscribe(broker.host, broker.port, topic, **sub_options)
    sink = make_sink(broker.url)
    async with running(sink):
        assert await sink.wait_connected(5)
        for i in range(20):
            sink.publish(topic, b"before-%d" % i)
        assert await sink.drain(5)
        await sub.wait_for(20)
        sub.close()
        # Else SIGTERM may beat our PUBACKs and the saved session would deliver them again.
        await asyncio.to_thread(broker.wait_for_log, f"Client {sub_id} disconnected.")

        await asyncio.to_thread(broker.stop)
        assert await sink.wait_disconnected(5)
        during = [b"during-%d" % i for i in range(300)]
        acks: list[int] = []
        for i, payload in enumerate(during):
            sink.publish(topic, payload, on_ack=functools.partial(acks.append, i))
        assert sink.stats.pending == 300
        assert not sink.connected

        await asyncio.to_thread(broker.start)
        assert await sink.wait_connected(5)
        sub = subscribe(broker.host, broker.port, topic, **sub_options)
        assert await sink.drain(5)
        received = await sub.wait_for(300)
    assert [m.payload for m in received] == during
    assert sorted(acks) == list(range(300))
    assert sink.stats.reconnects == 1
    assert sink.stats.refused == sink.stats.dropped == 0


class ConnackHoldingProxy:
    """A TCP relay to the broker that holds the broker's replies until `release()`.

    It opens the window between the sink's CONNECT and its CONNACK as wide as a test needs.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.connect_sent = asyncio.Event()
        self._released = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    def release(self) -> None:
        """Let the broker's bytes through from now on."""
        self._released.set()

    async def close(self) -> None:
        """Close both sides of every relayed connection."""
        self._released.set()
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection."""
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, sent=self.connect_sent),
            self._pipe(up_reader, writer, gate=self._released),
        )

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        gate: asyncio.Event | None = None,
        sent: asyncio.Event | None = None,
    ) -> None:
        try:
            while data := await src.read(65536):
                if gate is not None:
                    await gate.wait()
                dst.write(data)
                await dst.drain()
                if sent is not None:
                    sent.set()
        except ConnectionError:
            pass
        finally:
            dst.close()


async def test_messages_published_while_connecting_go_behind_the_backlog(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d"
    sub = subscribe(mosquitto.host, mosquitto.port, topic)
    proxy = ConnackHoldingProxy(mosquitto.host, mosquitto.port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = make_sink(f"mqtt://127.0.0.1:{port}")
    for i in range(50):  # before run(): paho keeps them for after the CONNACK
        sink.publish(topic, b"old-%d" % i)
    async with server:
        async with running(sink):
            await asyncio.wait_for(proxy.connect_sent.wait(), 5)
            # The socket is open and CONNECT is out; paho alone would send these at once.
            for i in range(50):
                sink.publish(topic, b"new-%d" % i)
            assert not sink.connected
            proxy.release()
            received = await sub.wait_for(100)
        await proxy.close()
    expected = [b"old-%d" % i for i in range(50)] + [b"new-%d" % i for i in range(50)]
    assert [m.payload for m in received] == expected


async def test_a_broker_that_sends_no_connack_is_given_up_on_and_retried(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    proxy = ConnackHoldingProxy(mosquitto.host, mosquitto.port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = make_sink(f"mqtt://127.0.0.1:{port}", connect_timeout_s=0.2)
    async with server:
        async with running(sink):
            await until(lambda: sink.stats.failed_connects >= 2)
            proxy.release()  # the next attempt gets its CONNACK
            assert await sink.wait_connected(5)
        await proxy.close()
    messages = [r.getMessage() for r in caplog.records if r.name == SINK_LOGGER]
    assert messages[0] == f"cannot connect to {sink.url}: no CONNACK within 0.2 s"
    assert f"connected to {sink.url}" in messages


async def test_max_queued_overflow_is_counted(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d"
    sink = make_sink(mosquitto.url, max_queued=10)
    for i in range(15):  # not connected yet
        sink.publish(topic, b"%d" % i)
    assert (sink.stats.pending, sink.stats.refused, sink.stats.published) == (10, 5, 10)
    sink.publish(topic, b"qos0", qos=0)
    assert sink.stats.dropped == 1
    sub = subscribe(mosquitto.host, mosquitto.port, topic)
    async with running(sink):
        assert await sink.drain(5)
        received = await sub.wait_for(10)
    assert [m.payload for m in received] == [b"%d" % i for i in range(10)]


async def test_mqtt5_publishes(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d"
    sub = subscribe(mosquitto.host, mosquitto.port, topic)
    sink = make_sink(mosquitto.url, protocol="5")
    async with running(sink):
        for i in range(10):
            sink.publish(topic, b"%d" % i)
        assert await sink.drain(5)
        assert [m.payload for m in await sub.wait_for(10)] == [b"%d" % i for i in range(10)]
    assert sink.stats.rejected == 0


async def test_close_is_idempotent_and_later_publishes_are_dropped(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.url)
    async with running(sink):
        assert await sink.wait_connected(5)
        await asyncio.gather(sink.close(), sink.close())
        sink.publish("t/after-close", b"x")
    assert sink.stats.dropped == 1
    await sink.close()


async def test_password_accepted(
    mosquitto_secure: SecureMosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    secure = mosquitto_secure
    auth = {"username": secure.username, "password": secure.password}
    topic = f"{unique_prefix}/d"
    sub = subscribe(secure.host, secure.port, topic, **auth)
    sink = make_sink(secure.url, username=auth["username"], password=SecretStr(auth["password"]))
    async with running(sink):
        assert await sink.wait_connected(5)
        sink.publish(topic, b"hello")
        assert [m.payload for m in await sub.wait_for(1)] == [b"hello"]


async def test_wrong_password_is_logged_once_and_retried_with_backoff(
    mosquitto_secure: SecureMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SINK_LOGGER)
    wrong = f"wrong-{uuid.uuid4().hex}"
    sink = make_sink(
        mosquitto_secure.url, username=mosquitto_secure.username, password=SecretStr(wrong)
    )
    async with running(sink):
        await until(lambda: sink.stats.failed_connects >= 4)
        assert not sink.connected
    records = [r for r in caplog.records if r.name == SINK_LOGGER]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert warnings == [f"cannot connect to {mosquitto_secure.url}: not authorized"]
    delays = [float(r.args[1]) for r in records if r.msg.startswith("next connect")]  # type: ignore[index,arg-type]
    assert len(delays) >= 3
    assert all(d <= 0.5 for d in delays)  # jittered under backoff_max_s
    assert sink.stats.connects == 0
    assert wrong not in caplog.text


async def test_tls_with_the_generated_ca_connects(
    mosquitto_secure: SecureMosquitto, subscribe: Subscribe, unique_prefix: str
) -> None:
    secure = mosquitto_secure
    topic = f"{unique_prefix}/d"
    sub = subscribe(
        secure.host, secure.tls_port, topic,
        username=secure.username, password=secure.password, ca_file=secure.ca_file,
    )  # fmt: skip
    sink = make_sink(
        secure.tls_url,
        username=secure.username,
        password=SecretStr(secure.password),
        tls=TlsConfig(ca_file=secure.ca_file),
    )
    async with running(sink):
        assert await sink.wait_connected(5)
        for i in range(200):
            sink.publish(topic, b"%d" % i)
        assert await sink.drain(5)
        received = await sub.wait_for(200)
    assert [m.payload for m in received] == [b"%d" % i for i in range(200)]


async def test_tls_with_a_wrong_ca_is_refused(
    mosquitto_secure: SecureMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    secure = mosquitto_secure
    sink = make_sink(
        secure.tls_url,
        username=secure.username,
        password=SecretStr(secure.password),
        tls=TlsConfig(ca_file=secure.other_ca_file),
    )
    async with running(sink):
        await until(lambda: sink.stats.failed_connects >= 2)
        assert not sink.connected
    messages = [r.getMessage() for r in caplog.records if r.name == SINK_LOGGER]
    assert len(messages) == 1
    assert messages[0].startswith(f"cannot connect to {secure.tls_url}: certificate verify failed")


async def test_subscribe_receives_on_the_loop_and_resubscribes_after_a_reconnect(
    mosquitto_fresh: Mosquitto, unique_prefix: str
) -> None:
    broker = mosquitto_fresh
    received: list[tuple[str, bytes, bool]] = []
    loop_thread = threading.get_ident()

    def on_message(topic: str, payload: bytes) -> None:
        received.append((topic, payload, threading.get_ident() == loop_thread))

    async def delivered(payload: bytes) -> None:
        # Until the SUBACK there is no telling the subscription exists: publish until one lands.
        deadline = time.monotonic() + 5
        while True:
            await asyncio.to_thread(
                publish_once, broker.host, broker.port, f"{unique_prefix}/cmd/a", payload
            )
            retry_at = time.monotonic() + 0.2
            while time.monotonic() < retry_at:
                if any(p == payload for _, p, _ in received):
                    return
                await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline
            assert time.monotonic() < deadline, f"{payload!r} never arrived"

    sink = make_sink(broker.url)
    sink.subscribe(f"{unique_prefix}/cmd/#", on_message)
    sink.subscribe(f"{unique_prefix}/other", lambda _t, _p: received.append(("x", b"", False)))
    async with running(sink):
        assert await sink.wait_connected(5)
        await delivered(b"first")
        broker.restart()
        assert await sink.wait_disconnected(5)
        assert await sink.wait_connected(5)
        await delivered(b"after restart")
    assert {t for t, _, _ in received} == {f"{unique_prefix}/cmd/a"}
    assert all(on_loop for _, _, on_loop in received)
    assert received[-1][1] == b"after restart"


async def test_the_connection_sends_without_nagle_delay(mosquitto: Mosquitto) -> None:
    # One commit outstanding waits for each PUBACK: a message held behind the ACK of the
    # one before (Nagle, up to 40 ms) would show as publish latency.
    sink = make_sink(mosquitto.url)
    async with running(sink):
        assert await sink.wait_connected(5)
        sock = sink._sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_the_keepalive_task_does_not_wake_while_there_is_no_connection() -> None:
    """A broker that refuses: the sink retries on its backoff, the keepalive task sleeps
    until a connection is up (it woke every second for nothing, before)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        sink = make_sink(f"mqtt://127.0.0.1:{port}")
        looked: list[float] = []
        delay = sink._misc_delay

        def counted() -> float:
            looked.append(time.monotonic())
            return delay()

        sink._misc_delay = counted  # type: ignore[method-assign]
        async with running(sink):
            # Six attempts on the 0.05 .. 0.5 s backoff: about 1.8 s without a connection.
            await until(lambda: sink.stats.failed_connects >= 6)
            assert not sink.connected
            assert looked == []

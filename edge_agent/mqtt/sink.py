"""Publish to an MQTT broker from the agent's asyncio loop, through paho-mqtt without its thread.

paho's socket callbacks plug its socket into the running loop (the pattern of aiomqtt and
paho's examples/loop_asyncio.py):

    on_socket_open             -> loop.add_reader(fd, client.loop_read)
    on_socket_register_write   -> client.loop_write() at the end of the loop turn, and
                                  loop.add_writer(fd, ...) only if the socket is full
    on_socket_unregister_write -> loop.remove_writer(fd)
    on_socket_close            -> loop.remove_reader(fd)
    a task, at paho's next keepalive deadline -> client.loop_misc()  (PINGREQ, dead broker)

Wake-ups scale with work: the messages of a loop turn go out in one write, without a
round through the selector, and the keepalive task sleeps until the keepalive is due
(once a second only while there is no connection).

Only the blocking part of a connect (DNS, TCP, TLS handshake, queueing CONNECT) runs on a
worker thread; the socket callbacks it triggers hop to the loop with call_soon_threadsafe.
Every other paho call happens on the loop's thread.

While the broker is away (paho-mqtt 2.2, checked against Mosquitto): `Client.publish` of a
QoS>0 message returns MQTT_ERR_NO_CONN but keeps the message in paho's ordered queue, up to
`max_queued`; beyond that it answers MQTT_ERR_QUEUE_SIZE and the sink counts the message as
refused. After the next CONNACK paho re-sends the whole backlog at once (max_inflight does not
apply to it), oldest first. One gap is ours to close: between opening the socket and the
CONNACK, paho sends a *new* message straight away, ahead of the backlog; so the sink holds
messages published during a connect attempt and hands them to paho after the CONNACK.
QoS 0 messages published while disconnected are dropped and counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.mqtt.config import MqttConfig, TlsConfig
from edge_agent.mqtt.tls import tls_context

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

logger = logging.getLogger(__name__)

AckCallback = Callable[[], None]
MessageCallback = Callable[[str, bytes], object]  # (topic, payload), on the loop; result ignored
MISC_INTERVAL_S = 1.0  # keepalive task period when no deadline can be read (another paho)
KEEPALIVE_SLACK_S = 0.01  # wake just after the deadline, so loop_misc sees it due
FENCE_FILTER = "$edge-agent/fence"  # unsubscribed from as a round trip (MqttSink.fence)


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for us when our connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class MqttStats:
    """Counters of one sink, as plain ints."""

    published: int = 0  # accepted by publish(), birth and final messages included
    acked: int = 0  # acknowledged: PUBACK/PUBCOMP, or written to the socket for QoS 0
    pending: int = 0  # QoS>0 accepted and not acknowledged yet: queued or in flight
    refused: int = 0  # QoS>0 refused because max_queued messages were pending
    dropped: int = 0  # QoS 0 while disconnected, and anything published after close()
    rejected: int = 0  # MQTT 5 only: acknowledged with a failure reason code
    connects: int = 0  # CONNACKs accepted
    reconnects: int = 0  # CONNACKs accepted after the first
    failed_connects: int = 0  # connect attempts that ended without a connection


# One answer for every MQTT 3.1.1 PUBACK (it carries no reason code and no properties).
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class _Client(mqtt.Client):
    """paho's client, minus two objects per acknowledged message.

    paho 2.2 decodes every PUBACK into a new ReasonCode and a new Properties (~25 µs, a
    seventh of the agent's CPU per message at full rate), which MQTT 3.1.1 cannot fill:
    its PUBACK is the message id and nothing else. Those go through here with shared,
    empty ones; MQTT 5, PUBCOMP and anything unexpected take paho's own path.
    """

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == mqtt.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _PUBACK_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def backoff_delays(
    initial_s: float, max_s: float, rng: random.Random | None = None
) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(max_s, initial_s * 2**n)), n = 0, 1, …"""
    uniform = (rng or random.Random()).uniform
    ceiling = min(initial_s, max_s)
    while True:
        yield uniform(0.0, ceiling)
        ceiling = min(max_s, ceiling * 2)


def describe_error(exc: BaseException) -> str:
    """A short reason for a connect attempt that raised, for the log."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"


def describe_reason(reason: ReasonCode) -> str:
    """A paho reason code as a log phrase, e.g. 'not authorized', 'connection lost'."""
    name = reason.getName()
    # paho reports every socket-level loss as "Unspecified error".
    return "connection lost" if name == "Unspecified error" else name.lower()


class MqttSink:
    """Publishes to one broker: `run()` keeps the connection, `publish()` never waits.

    Call `publish`, `close` and the rest from the loop that runs `run()`. Cancelling `run()`
    drops the connection without DISCONNECT (the broker then publishes the will);
    `close()` ends it cleanly and makes `run()` return.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        will: Will | None = None,
        birth: Sequence[tuple[str, bytes]] = (),
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        backoff_initial_s: float = 1.0,
        connect_timeout_s: float = 10.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        address = config.address
        use_tls = address.tls or config.tls is not None
        host = f"[{address.host}]" if ":" in address.host else address.host
        self.url = f"{'mqtts' if use_tls else 'mqtt'}://{host}:{address.port}"
        self.stats = MqttStats()
        self._qos = config.qos
        self._max_queued = config.max_queued
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = config.backoff_max_s
        self._connect_timeout_s = connect_timeout_s
        self._birth = tuple(birth)
        self._v5 = protocol == "5"
        self._on_state = on_state  # told of every connection up/down, after the log line

        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # we reconnect; paho would block the loop doing it
        )
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(config.max_queued)
        client.connect_timeout = connect_timeout_s
        if config.username is not None:
            secret = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, secret)
        if use_tls:
            # With insecure, the context has check_hostname off and paho follows it.
            client.tls_set_context(tls_context(config.tls or TlsConfig()))
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_unsubscribe = self._on_unsubscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.connect_async(address.host, address.port, keepalive=config.keepalive_s)
        self._client = client

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: SocketLike | None = None  # the socket the loop watches
        self._fd = -1
        self._tls_sock: ssl.SSLSocket | None = None
        self._write_handle: asyncio.Handle | None = None  # a loop_write at the turn's end
        self._corked = False  # inside corked(): paho's writes wait for its end
        self._write_wanted = False
        self._dispatching = False  # inside one of paho's loop_* calls (and its callbacks)
        self._connected = False
        self._staging = False  # a connect attempt runs: hold QoS>0 messages in _staged
        self._staged: deque[tuple[str, bytes, int, bool, AckCallback | None, Properties | None]] = (
            deque()
        )
        self._acks: dict[int, AckCallback] = {}  # QoS>0 mid -> on_ack
        self._qos0: dict[int, AckCallback | None] = {}  # QoS 0 mids not yet on the wire
        self._attempt: concurrent.futures.Future[MQTTErrorCode] | None = None  # connect thread
        self._connack: asyncio.Future[str | None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._drained = asyncio.Event()
        self._wake = asyncio.Event()  # cuts a backoff sleep short when closing
        self._closed_event = asyncio.Event()
        self._running = False
        self._closing = False  # close() began: no more reconnects once drained
        self._close_started = False
        self._closed = False
        self._last_logged = ""  # "up", or the reason last logged for being down
        self._subscriptions: dict[str, tuple[int, MessageCallback]] = {}
        # MQTT 5 properties of the message whose callback runs now (None otherwise): a
        # request's response topic and correlation data (edge_agent/commands).
        self.message_properties: Properties | None = None
        self._fences: dict[int, AckCallback] = {}  # UNSUBSCRIBE mid -> fence callback

    # -- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker accepted our CONNECT and the connection is still up."""
        return self._connected

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """Wait until connected; False if `timeout_s` passed first."""
        return await _wait(self._up, timeout_s)

    async def wait_disconnected(self, timeout_s: float | None = None) -> bool:
        """Wait until not connected; False if `timeout_s` passed first."""
        return await _wait(self._down, timeout_s)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every accepted QoS>0 message is acknowledged; False on timeout."""
        if self.stats.pending == 0:
            return True
        self._drained.clear()
        return await _wait(self._drained, timeout_s)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int | None = None,
        retain: bool = False,
        on_ack: AckCallback | None = None,
        properties: Properties | None = None,
    ) -> None:
        """Queue one message; `on_ack` runs on the loop once the broker acknowledged it.

        `properties` (MQTT 5 only, e.g. correlation data) go with the message.

        Never blocks and never raises because the broker is down (ValueError only for an
        invalid topic or QoS). QoS>0 messages wait in the queue while disconnected; when
        `max_queued` are pending, more are refused (counted in stats.refused).
        """
        if qos is None:
            qos = self._qos
        stats = self.stats
        if self._closed:
            stats.dropped += 1
        elif qos == 0:
            if not self._connected:
                stats.dropped += 1
                return
            info = self._client.publish(topic, payload, 0, retain, properties)
            if info.rc:
                stats.dropped += 1
                return
            stats.published += 1
            self._qos0[info.mid] = on_ack
        elif self._staging:
            if self._max_queued and stats.pending >= self._max_queued:
                stats.refused += 1
                return
            self._staged.append((topic, payload, qos, retain, on_ack, properties))
            stats.published += 1
            stats.pending += 1
        else:
            self._enqueue(topic, payload, qos, retain, on_ack, properties)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Messages published inside go out in one write when the block ends, in this loop
        turn instead of the next. Inside paho's own callbacks it does nothing (paho is not
        reentrant there): the write happens at the end of the turn as usual."""
        if self._corked or self._dispatching or threading.get_ident() != self._loop_thread:
            yield
            return
        self._corked = True
        try:
            yield
        finally:
            self._corked = False
            if self._write_wanted:
                self._write_wanted = False
                self._write()

    def set_will(self, will: Will) -> None:
        """The will of the next CONNECT (Sparkplug's NDEATH carries a bdSeq per connect)."""
        self._client.will_set(will.topic, will.payload, will.qos, will.retain)

    def fence(self, callback: AckCallback) -> bool:
        """Run `callback` once the broker has handled every packet sent before this call.

        An UNSUBSCRIBE of a filter nobody uses makes the round trip: the broker answers a
        connection's packets in order, so its UNSUBACK follows the handling of every QoS 0
        message before it. False when not connected; a fence whose answer is lost with the
        connection never calls back.
        """
        if not self._connected:
            return False
        rc, mid = self._client.unsubscribe(FENCE_FILTER)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return False
        self._fences[mid] = callback
        return True

    def subscribe(self, topic_filter: str, callback: MessageCallback, *, qos: int = 1) -> None:
        """Receive messages matching `topic_filter`: `callback(topic, payload)` runs on the loop.

        The subscription is made again on every connect (the session is clean), so messages
        published while the sink is not connected are not delivered to it.
        """
        self._subscriptions[topic_filter] = (qos, callback)
        if self._connected:
            self._client.subscribe(topic_filter, qos)

    async def run(self) -> None:
        """Connect, and reconnect with jittered backoff, until cancelled or closed."""
        if self._running:
            raise RuntimeError("MqttSink.run() is already running")
        if self._closing:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._running = True
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mqtt-connect")
        misc = asyncio.create_task(self._run_misc(), name=f"mqtt-misc {self.url}")
        try:
            await self._run_connection(executor)
        finally:
            misc.cancel()
            was_up = self._connected
            attempt = self._attempt
            if attempt is None or attempt.done():
                # No DISCONNECT: the broker sees the connection die and publishes the will.
                self._abort_socket()
            # else the connect thread still owns the socket; _drop_abandoned_socket closes it.
            if was_up:
                logger.info("disconnected from %s: stopped", self.url)
            self._up.clear()
            self._down.set()
            self._running = False
            executor.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(asyncio.CancelledError):
                await misc

    async def close(self, *, grace_s: float = 5.0, final: Sequence[tuple[str, bytes]] = ()) -> None:
        """Publish `final` retained, wait up to `grace_s` for acks, then DISCONNECT cleanly.

        The broker does not send the will after a clean DISCONNECT, so `final` (e.g. status
        "offline") is what the retained topics show. `run()` returns afterwards. Idempotent.
        """
        if self._close_started:
            await self._closed_event.wait()
            return
        self._close_started = True
        try:
            for topic, payload in final:
                self.publish(topic, payload, qos=1, retain=True)
            if self._running:
                await self.drain(grace_s)
            if self.stats.pending:
                logger.warning(
                    "closing %s with %d unacknowledged messages", self.url, self.stats.pending
                )
            self._closing = True
            self._wake.set()
            lost = self._lost
            if self._connected and lost is not None:
                self._client.disconnect()
                await _wait_future(lost, self._connect_timeout_s)
        finally:
            self._closing = True
            self._closed = True
            self._closed_event.set()

    # -- connection life ------------------------------------------------------------------

    async def _run_connection(self, executor: concurrent.futures.Executor) -> None:
        loop = asyncio.get_running_loop()
        delays = backoff_delays(self._backoff_initial_s, self._backoff_max_s)
        while not self._closing:
            reason = await self._connect(executor)
            if reason is None:
                up_since = loop.time()
                self._went_up()
                if self._closing:  # close() ran out of grace while we were connecting
                    self._client.disconnect()
                assert self._lost is not None
                reason = await self._lost
                self._went_down(reason, was_up=True)
                if loop.time() - up_since >= self._backoff_max_s:
                    delays = backoff_delays(self._backoff_initial_s, self._backoff_max_s)
            else:
                self._went_down(reason, was_up=False)
            if self._closing:
                break
            delay = next(delays)
            logger.debug("next connect to %s in %.2f s", self.url, delay)
            await _wait(self._wake, delay)

    async def _connect(self, executor: concurrent.futures.Executor) -> str | None:
        """One connect attempt: None once the CONNACK accepted us, else the reason."""
        loop = asyncio.get_running_loop()
        self._connack = connack = loop.create_future()
        self._lost = loop.create_future()
        self._staging = True
        cancelled = False
        self._attempt = attempt = executor.submit(self._client.reconnect)
        try:
            try:
                rc = await asyncio.wrap_future(attempt)
            except asyncio.CancelledError:
                # The thread cannot be stopped; close what it opens once it is done.
                attempt.add_done_callback(self._drop_abandoned_socket)
                raise
            except Exception as exc:  # any failure is a reason to retry
                return describe_error(exc)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._abort_socket()
                return mqtt.error_string(rc).lower()
            reason = await _wait_future(connack, self._connect_timeout_s)
            if reason is _TIMED_OUT:
                self._abort_socket()
                return f"no CONNACK within {self._connect_timeout_s:g} s"
            return reason  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            cancelled = True  # held messages stay held, in order, for a later run()
            raise
        finally:
            self._connack = None
            if not cancelled:
                # After a CONNACK paho has re-sent its backlog; after a failure the socket is
                # closed and paho queues. Either way the held messages now go behind those.
                self._staging = False
                self._flush_staged()

    def _went_up(self) -> None:
        stats = self.stats
        stats.connects += 1
        if stats.connects > 1:
            stats.reconnects += 1
        self._down.clear()
        self._up.set()
        self._last_logged = "up"
        logger.info("connected to %s", self.url)
        if self._on_state is not None:
            self._on_state(True)

    def _went_down(self, reason: str, *, was_up: bool) -> None:
        self._up.clear()
        self._down.set()
        if was_up:
            if self._closing:
                logger.info("disconnected from %s: closed", self.url)
            else:
                logger.warning("disconnected from %s: %s", self.url, reason)
            self._last_logged = reason
            if self._on_state is not None:
                self._on_state(False)
            return
        self.stats.failed_connects += 1
        if reason == self._last_logged:  # still down for the same reason: said already
            logger.debug("cannot connect to %s: %s", self.url, reason)
        else:
            logger.warning("cannot connect to %s: %s", self.url, reason)
            self._last_logged = reason

    async def _run_misc(self) -> None:
        """Keepalive: paho sends PINGREQ and notices a silent broker from loop_misc()."""
        client = self._client
        while True:
            if not self._up.is_set():
                await self._up.wait()  # no connection: nothing to keep alive, no timer
            await asyncio.sleep(self._misc_delay())
            if not self._staging and client.socket() is not None:
                self._dispatching = True
                try:
                    client.loop_misc()
                finally:
                    self._dispatching = False

    def _misc_delay(self) -> float:
        """Seconds until loop_misc has something to do: a PINGREQ after `keepalive` of
        silence either way, or giving up on a PINGRESP (paho 2.2's `_check_keepalive`)."""
        client = self._client
        keepalive = client.keepalive
        if self._staging or client.socket() is None or keepalive <= 0:
            return MISC_INTERVAL_S
        try:
            last = min(client._last_msg_out, client._last_bytes_received)
        except AttributeError:  # another paho: fall back to polling
            return MISC_INTERVAL_S
        # paho stamps these with time.monotonic (its time_func on every platform we run).
        return max(KEEPALIVE_SLACK_S, last + keepalive - time.monotonic() + KEEPALIVE_SLACK_S)

    def _abort_socket(self) -> None:
        """Drop the connection without DISCONNECT, and let paho notice it as a loss."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        # loop_read drains what was buffered, then reads EOF, closes and calls on_disconnect.
        for _ in range(1000):
            if client.socket() is not sock:
                return
            client.loop_read()
        self._unwatch_socket(sock)
        sock.close()

    def _drop_abandoned_socket(self, _attempt: concurrent.futures.Future[Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._abort_socket_unless_running)

    def _abort_socket_unless_running(self) -> None:
        if not self._running:
            self._abort_socket()

    # -- publishing -------------------------------------------------------------------------

    def _enqueue(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        on_ack: AckCallback | None,
        properties: Properties | None = None,
    ) -> None:
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.stats.refused += 1
            return
        self.stats.published += 1
        self.stats.pending += 1
        if on_ack is not None:
            self._acks[info.mid] = on_ack

    def _flush_staged(self) -> None:
        stats = self.stats
        staged = self._staged
        while staged:
            topic, payload, qos, retain, on_ack, properties = staged.popleft()
            info = self._client.publish(topic, payload, qos, retain, properties)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                stats.refused += 1
                stats.published -= 1
                stats.pending -= 1
            elif on_ack is not None:
                self._acks[info.mid] = on_ack
        if stats.pending == 0:
            self._drained.set()

    # -- paho callbacks (on the loop's thread unless noted) -------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            _resolve(self._connack, describe_reason(reason))
            return
        self._connected = True
        # Published here, birth goes out ahead of the backlog paho re-sends after this call.
        for topic, payload in self._birth:
            self._enqueue(topic, payload, 1, True, None)
        for topic_filter, (qos, _callback) in self._subscriptions.items():
            client.subscribe(topic_filter, qos)  # the session is clean: subscribe every time
        _resolve(self._connack, None)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected = False
        text = describe_reason(reason)
        if flags.is_disconnect_packet_from_server:
            text = f"broker disconnected us: {text}"
        if self._qos0:  # QoS 0 packets still in paho's buffer are gone with the socket
            self.stats.dropped += len(self._qos0)
            self._qos0.clear()
        self._fences.clear()  # their answers are lost, and paho reuses message ids
        _resolve(self._connack, text)
        _resolve(self._lost, text)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.message_properties = getattr(message, "properties", None) if self._v5 else None
        try:
            for topic_filter, (_qos, callback) in self._subscriptions.items():
                if mqtt.topic_matches_sub(topic_filter, message.topic):
                    try:
                        callback(message.topic, bytes(message.payload))
                    except Exception:
                        logger.exception("callback for %s failed", message.topic)
        finally:
            self.message_properties = None

    def _on_unsubscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, _codes: Any, _props: Any
    ) -> None:
        callback = self._fences.pop(mid, None)
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("fence callback %s failed", mid)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        stats = self.stats
        stats.acked += 1
        on_ack: AckCallback | None
        if mid in self._qos0:
            on_ack = self._qos0.pop(mid)
        else:
            stats.pending -= 1
            if not stats.pending:
                self._drained.set()
            on_ack = self._acks.pop(mid, None)
            if self._v5 and reason.is_failure:
                stats.rejected += 1
                logger.debug("broker rejected message %s: %s", mid, reason.getName())
        if on_ack is not None:
            try:
                on_ack()
            except Exception:
                logger.exception("on_ack callback for message %s failed", mid)

    # Socket callbacks also fire on the connect thread (open, register_write).

    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, sock: SocketLike) -> None:
        self._on_loop(self._watch_socket, sock)

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: SocketLike) -> None:
        self._on_loop(self._unwatch_socket, sock)

    def _on_socket_register_write(
        self, _client: mqtt.Client, _userdata: Any, sock: SocketLike
    ) -> None:
        self._on_loop(self._watch_writable, sock)

    def _on_socket_unregister_write(
        self, _client: mqtt.Client, _userdata: Any, sock: SocketLike
    ) -> None:
        self._on_loop(self._unwatch_writable, sock)

    def _on_loop(self, action: Callable[[SocketLike], None], sock: SocketLike) -> None:
        if threading.get_ident() == self._loop_thread:
            action(sock)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: nothing left to watch
                loop.call_soon_threadsafe(action, sock)

    def _watch_socket(self, sock: SocketLike) -> None:
        loop = self._loop
        if loop is None or not self._running or sock is not self._client.socket():
            return  # an abandoned attempt's socket, or already closed
        self._sock = sock
        self._fd = sock.fileno()
        self._tls_sock = sock if isinstance(sock, ssl.SSLSocket) else None
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A loop turn's messages already leave in one write; Nagle would only hold a
            # message behind the ACK of the one before (up to 40 ms on Linux).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(self._fd, self._on_readable)

    def _unwatch_socket(self, sock: SocketLike) -> None:
        loop = self._loop
        if loop is None or sock is not self._sock:
            return
        loop.remove_reader(self._fd)
        loop.remove_writer(self._fd)
        self._sock = None
        self._tls_sock = None
        self._fd = -1

    def _watch_writable(self, sock: SocketLike) -> None:
        # Not loop_write here: this runs inside paho's publish (or its callbacks).
        loop = self._loop
        if loop is None or sock is not self._sock:
            return
        if self._corked:
            self._write_wanted = True
        elif self._write_handle is None:
            self._write_handle = loop.call_soon(self._write)

    def _write(self) -> None:
        """Write what paho queued this turn; watch the socket only if it is full."""
        self._write_handle = None
        loop, client = self._loop, self._client
        if loop is None or self._sock is None or not client.want_write():
            return
        self._dispatching = True
        try:
            client.loop_write()
        finally:
            self._dispatching = False
        if self._sock is not None and client.want_write():
            loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        self._dispatching = True
        try:
            self._client.loop_write()
        finally:
            self._dispatching = False

    def _unwatch_writable(self, sock: SocketLike) -> None:
        if self._loop is not None and sock is self._sock:
            self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        client = self._client
        self._dispatching = True
        try:
            client.loop_read()
            tls_sock = self._tls_sock
            if tls_sock is None:
                return
            # TLS can hold decrypted bytes the selector will never report: read them now.
            while tls_sock.pending() and self._tls_sock is tls_sock:
                client.loop_read()
        finally:
            self._dispatching = False


_TIMED_OUT: Any = object()


async def _wait(event: asyncio.Event, timeout_s: float | None) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _wait_future(future: asyncio.Future[Any], timeout_s: float) -> Any:
    """The future's result, or _TIMED_OUT; the future itself is not cancelled."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(future)
    except TimeoutError:
        return _TIMED_OUT


def _resolve(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)

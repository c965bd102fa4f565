"""The ingest's MQTT side: a persistent, manually acknowledged subscription (paho-mqtt 2.x).

paho runs on its own network thread (keepalive and reconnects go on while the asyncio loop
is busy encoding a batch); deliveries hop to the loop in arrival order, in bunches:

    paho thread: on_message -> inbox deque --(call_soon_threadsafe, once per bunch)--> loop
    loop:        service handles Delivery ... writes ... ack(delivery) -> PUBACK

- MQTT v5, clean_start=False, a Session Expiry Interval and a stable client id: the broker
  keeps the subscription and every unacknowledged message while the worker is away, and
  redelivers them when the same client id reconnects (runtime.md §8).
- Receive Maximum = `max_inflight`: the broker sends at most that many messages we have
  not acknowledged, so a store outage holds a bounded amount here and the broker queues
  the rest.
- Shared subscription `$share/<group>/...` (with a group): workers of one group split the
  messages. Mosquitto 2.0.11 does not persist shared subscriptions: after its restart the
  session comes back without it, and until the worker subscribes again the broker drops
  (after acknowledging them to the publishers) the messages it would have queued. Without
  a group the subscription is plain, and restored with the session.
- `stale_filters`: unsubscribed after resuming a session, once the subscription is made,
  so a worker that switched between shared and plain does not get every message twice.
- `protocol="3.1.1"`, or a broker that answers the v5 CONNECT with "unsupported protocol
  version", gives a 3.1.1 client with clean_session=False and a plain subscription: one
  worker only, in-flight window left to the broker. (amqtt, the embedded demo broker,
  never answers a v5 CONNECT that carries properties, so the demo asks for 3.1.1.)

Acknowledgements are tied to the connection a message came in on (`generation`): after a
reconnect the broker redelivers what was not acknowledged, and a packet id of the old
connection may already name a different message on the new one, so stale ones are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.mqtt.config import MqttConfig, TlsConfig
from edge_agent.mqtt.sink import describe_reason
from edge_agent.mqtt.tls import tls_context

logger = logging.getLogger(__name__)

UNSUPPORTED_PROTOCOL = (1, 132)  # CONNACK codes of 3.1.1 and v5 for "unsupported protocol"
Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message and what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # the connection it came in on
    dup: bool


@dataclass(slots=True)
class ClientStats:
    """Counters of the subscriber, as plain ints."""

    received: int = 0
    acked: int = 0
    stale_acks: int = 0  # skipped: the message's connection is gone; the broker redelivers
    connects: int = 0
    sessions_resumed: int = 0  # CONNACKs with session present
    published: int = 0
    publish_acked: int = 0


class IngestClient:
    """Subscribes to data topics and hands deliveries to `deliver` on the loop."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        filters: Sequence[str],
        group: str | None,
        deliver: Callable[[list[Delivery]], None],
        max_inflight: int = 1000,
        session_expiry_s: int = 86400,
        protocol: Protocol = "5",
        every_worker: Sequence[str] = (),
        stale_filters: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.filters = tuple(filters)
        # Subscribed by each worker itself at QoS 0 (retained metadata, ingest/meta.py).
        self.every_worker = tuple(every_worker)
        self.group = group
        self.stale_filters = tuple(stale_filters)
        self.stats = ClientStats()
        self._deliver = deliver
        self._max_inflight = max_inflight
        self._session_expiry_s = session_expiry_s
        self.protocol: Protocol = protocol
        address = config.address
        self._host, self._port = address.host, address.port
        self._tls = address.tls or config.tls is not None
        self.url = f"{'mqtts' if self._tls else 'mqtt'}://{address.host}:{address.port}"

        self._lock = threading.Lock()  # generation and connected, against acks
        self._generation = 0
        self._connected = False
        self._inbox: deque[Delivery] = deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._publish_acks: dict[int, Callable[[], None]] = {}
        self._fallback: asyncio.Event | None = None
        self._subscribed_event = asyncio.Event()  # binds to a loop only when awaited
        self._unsubscribing = False  # stale filters sent, UNSUBACK not yet back
        self._granted = False  # the last SUBACK granted every filter
        self._last_state = ""

    # -- public (call from the loop) --------------------------------------------------------

    @property
    def topic_filters(self) -> tuple[str, ...]:
        """What is subscribed: shared filters under v5 with a group, plain ones otherwise."""
        if self.protocol == "5" and self.group:
            return tuple(f"$share/{self.group}/{f}" for f in self.filters)
        return self.filters

    @property
    def connected(self) -> bool:
        """Whether the broker accepted our CONNECT and the connection is up."""
        return self._connected

    async def wait_subscribed(self, timeout_s: float | None = None) -> bool:
        """Wait until the broker granted the subscription once; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._subscribed_event.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Keep the connection until cancelled; falls back to 3.1.1 once if the broker says so."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._fallback = asyncio.Event()
            client = self._start()
            try:
                await self._fallback.wait()
            finally:
                await self._stop(client)
            logger.warning(
                "%s speaks MQTT 3.1.1 only: plain subscription %s, no shared subscription, "
                "one ingest worker",
                self.url,
                ", ".join(self.filters),
            )
            self.protocol = "3.1.1"

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge a delivery (PUBACK); False when its connection is gone."""
        client = self._client
        with self._lock:
            if client is None or not self._connected or delivery.generation != self._generation:
                self.stats.stale_acks += 1
                return False
            client.ack(delivery.mid, delivery.qos)
        self.stats.acked += 1
        return True

    def publish(self, topic: str, payload: bytes, *, on_ack: Callable[[], None]) -> None:
        """Publish at QoS 1; `on_ack` runs on the loop once the broker acknowledged it."""
        client = self._client
        if client is None:
            raise RuntimeError("publish before run()")
        info = client.publish(topic, payload, qos=1)
        self.stats.published += 1
        self._publish_acks[info.mid] = on_ack

    # -- connection life ------------------------------------------------------------------

    def _start(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        config = self.config
        if config.username is not None:
            secret = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, secret)
        if self._tls:
            client.tls_set_context(tls_context(config.tls or TlsConfig()))
        client.reconnect_delay_set(1, max(1, int(config.backoff_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry_s
            properties.ReceiveMaximum = self._max_inflight
        client.connect_async(
            self._host,
            self._port,
            keepalive=config.keepalive_s,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client = client
        client.loop_start()
        return client

    async def _stop(self, client: mqtt.Client) -> None:
        """DISCONNECT (the session stays on the broker) and join paho's thread."""
        with self._lock:
            self._connected = False
            self._generation += 1
        with contextlib.suppress(Exception):
            client.disconnect()
        await asyncio.shield(asyncio.to_thread(client.loop_stop))
        self._client = None
        self._publish_acks.clear()

    # -- paho callbacks (paho's thread) -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            if reason.value in UNSUPPORTED_PROTOCOL and self.protocol == "5":
                self._call(self._fall_back)
                return
            self._log_state(f"refused: {describe_reason(reason)}")
            return
        with self._lock:
            self._generation += 1
            self._connected = True
        self.stats.connects += 1
        if flags.session_present:
            self.stats.sessions_resumed += 1
        self._log_state("up")
        if self.protocol == "5":
            options = SubscribeOptions(qos=1)
            plain = SubscribeOptions(qos=0)
            client.subscribe(
                [(f, options) for f in self.topic_filters] + [(f, plain) for f in self.every_worker]
            )
            if flags.session_present and self.stale_filters:
                # After the SUBSCRIBE: the broker handles them in order, no gap between.
                self._unsubscribing = True
                client.unsubscribe(list(self.stale_filters))
        else:
            client.subscribe(
                [(f, 1) for f in self.topic_filters] + [(f, 0) for f in self.every_worker]
            )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            was_up = self._connected
            self._connected = False
        if was_up:
            text = describe_reason(reason)
            if flags.is_disconnect_packet_from_server:
                text = f"broker disconnected us: {text}"
            self._log_state(text)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            logger.error(
                "%s refused the subscription %s: %s",
                self.url,
                ", ".join(self.topic_filters),
                refused[0].getName(),
            )
            self._granted = False
            return
        self._granted = True
        if not self._unsubscribing:
            self._call(self._subscribed)

    def _on_unsubscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        # "No subscription existed" is fine: ready once the stale shape is surely gone.
        self._unsubscribing = False
        if self._granted:
            self._call(self._subscribed)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        self._inbox.append(
            Delivery(
                message.topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                generation,
                bool(message.dup),
            )
        )
        if not self._scheduled:
            self._scheduled = True
            self._call(self._drain)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        _reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        self._call(self._published, mid)

    # -- on the loop ------------------------------------------------------------------------

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to tell
                loop.call_soon_threadsafe(callback, *args)

    def _drain(self) -> None:
        # Cleared before emptying: a message appended meanwhile schedules another drain.
        self._scheduled = False
        inbox = self._inbox
        bunch = [inbox.popleft() for _ in range(len(inbox))]
        if bunch:
            self.stats.received += len(bunch)
            self._deliver(bunch)

    def _published(self, mid: int) -> None:
        on_ack = self._publish_acks.pop(mid, None)
        self.stats.publish_acked += 1
        if on_ack is not None:
            on_ack()

    def _subscribed(self) -> None:
        if not self._subscribed_event.is_set():
            logger.info("ingest subscribed to %s", ", ".join(self.topic_filters))
        self._subscribed_event.set()

    def _fall_back(self) -> None:
        if self._fallback is not None:
            self._fallback.set()

    def _log_state(self, state: str) -> None:
        if state == self._last_state:
            return
        self._last_state = state
        if state == "up":
            logger.info(
                "ingest connected to %s as %s (MQTT %s)", self.url, self.client_id, self.protocol
            )
        else:
            logger.warning("ingest connection to %s: %s", self.url, state)

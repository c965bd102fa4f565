"""The edge node: a stage that turns every poll into Sparkplug messages of its own session.

    connect (will = NDEATH with bdSeq) ─► subscribe NCMD, DCMD (and STATE/<host>) ─►
      [primary host: wait for its STATE online] ─► NBIRTH (seq 0) ─► DBIRTH per device
      (DDEATH right after for a device that is down) ─► ready: the outbox flows
    poll ─► report filter ─► DDATA body ─► outbox      device down ─► DDEATH row
    device answers again ─► its next poll goes up as a DBIRTH row (all metrics)
    NCMD Node Control/Rebirth, DCMD Device Control/Rebirth ─► births again, same bdSeq
    connection lost ─► bdSeq + 1 into the next will; host STATE offline ─► NDEATH, hold

Births are published directly, every other message through the outbox, so the order
on the wire is the order things happened, and what was read while the broker or the
primary host was away goes up afterwards marked historical (delivery.py). Births carry
each device's last full poll, so a host's live values are right from the birth on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from drivers.reading import PointSpec, Poll
from edge_agent.config.site import LoadedConfig
from edge_agent.delivery.outbox import Outbox
from edge_agent.mqtt.sink import MqttSink, Will
from edge_agent.pipeline.by_exception import build_report_filter
from edge_agent.sparkplug.config import SparkplugConfig
from edge_agent.sparkplug.datatypes import DOUBLE, declared_types, inferred_type
from edge_agent.sparkplug.delivery import SparkplugForwarder
from edge_agent.sparkplug.payload import (
    DEVICE_REBIRTH,
    NODE_REBIRTH,
    DeviceMetrics,
    decode,
    node_birth_body,
    node_death,
    stamp,
)
from edge_agent.sparkplug.session import Session
from edge_agent.sparkplug.topics import NodeTopics, state_topic

if TYPE_CHECKING:
    from edge_agent.commands.service import WriteCommands

log = logging.getLogger(__name__)
# Signed integers in a metric: 32-bit two's complement for Int8/16/32, 64-bit for Int64.
_SIGNED_BITS = {1: 32, 2: 32, 3: 32, 4: 64}

GRACE_S = 5.0  # for the last messages and the NDEATH when the agent stops


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Device:
    """One Sparkplug device: its metrics, what it declared, and its life in the session."""

    name: str
    declared: dict[str, int]
    points: tuple[PointSpec, ...] = ()
    metrics: DeviceMetrics = field(default_factory=lambda: DeviceMetrics((), ()))
    guessed: list[bool] = field(default_factory=list)  # type not declared, not yet seen
    last: Poll | None = None  # the last full poll: the values of a birth
    dead: bool = False
    birth_due: bool = True  # its next poll goes up as a DBIRTH

    def bind(self, points: tuple[PointSpec, ...]) -> None:
        """Align with the driver's points (first poll, or a driver replaced by a reload)."""
        self.points = points
        types = [self.declared.get(p.name, DOUBLE) for p in points]
        self.guessed = [p.name not in self.declared for p in points]
        self.metrics = DeviceMetrics(points, types)
        self.birth_due = True

    def learn_types(self, poll: Poll) -> bool:
        """Types of undeclared points from their first values; True if any changed."""
        changed = False
        types = self.metrics.types
        for i, guessed in enumerate(self.guessed):
            if guessed and (found := inferred_type(poll.values[i])) is not None:
                self.guessed[i] = False
                if found != types[i]:
                    types[i] = found
                    changed = True
        return changed


class EdgeNode:
    """The Sparkplug B edge node of the gateway (a `stages.Stage`)."""

    name = "sparkplug"

    def __init__(
        self,
        loaded: LoadedConfig,
        config: SparkplugConfig,
        *,
        points: dict[str, tuple[PointSpec, ...]] | None = None,
    ) -> None:
        site = loaded.site
        self.config = config
        self.json_data = config.json_data
        # The agent's command path, for DCMD metric writes (None: DCMD only rebirths).
        self.commands: WriteCommands | None = None
        self._write_count = 0
        self.topics = NodeTopics(config.group_id, config.edge_node_id)
        mqtt = site.mqtt
        client_id = f"{mqtt.client_id}-sparkplug" if mqtt.client_id else None
        mqtt = mqtt.model_copy(update={"url": config.url or mqtt.url, "client_id": client_id})
        box = loaded.path.parent / site.outbox.path
        self.session = Session(box.with_name(f"{box.stem}-sparkplug.bdseq"))
        self.sink = MqttSink(
            mqtt,
            client_id=client_id or f"edge-agent-{config.group_id}-{config.edge_node_id}",
            will=self._will(),
            on_state=self._connection,
        )
        self.outbox = Outbox(box.with_name(f"{box.stem}-sparkplug{box.suffix}"), site.outbox)
        self.forwarder = SparkplugForwarder(
            self.outbox,
            self.sink,
            session=self,
            window=mqtt.max_inflight,
            flush_interval_s=site.outbox.flush_interval_s,
            replay_max_per_s=site.outbox.replay_max_per_s,
        )
        self.filter = build_report_filter(loaded)  # state of its own, the same options
        self._declared = {s.device.name: declared_types(s) for s in loaded.devices}
        self._devices: dict[str, _Device] = {}
        for name, device_points in (points or {}).items():  # born with the node's births
            self._device(name).bind(device_points)
        self._ready = False
        self._host_online = config.primary_host_id is None
        self._host_ts = -1  # timestamp of the last STATE taken (older ones are ignored)
        self.births = 0  # birth sequences published (NBIRTH and the DBIRTHs after it)
        self.sink.subscribe(self.topics.node("NCMD"), self._node_command, qos=1)
        self.sink.subscribe(self.topics.dcmd_filter, self._device_command, qos=1)
        if config.primary_host_id is not None:
            self.sink.subscribe(state_topic(config.primary_host_id), self._host_state, qos=1)

    # -- the session --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, births out, primary host (if any) online: data may go up."""
        return self._ready

    def next_seq(self) -> int:
        """The seq of the node's next message."""
        return self.session.next_seq()

    def _will(self) -> Will:
        payload = node_death(self.session.bd_seq, ts_ms=_now_ms())
        return Will(self.topics.node("NDEATH"), payload, qos=1, retain=False)

    def _connection(self, up: bool) -> None:
        if up:
            if self._host_online:
                self._birth()
            return
        self._stop_data()
        self._host_online = self.config.primary_host_id is None
        self.session.next_connect()
        self.sink.set_will(self._will())  # a new CONNECT, a new bdSeq

    def _stop_data(self) -> None:
        self._ready = False
        self.forwarder.on_connection(False)

    def _birth(self) -> None:
        """NBIRTH, then a DBIRTH per device (and DDEATH for the dead), then data flows."""
        self.forwarder.flush()  # stored before the births: history from now on
        ts = _now_ms()
        sink = self.sink
        session = self.session
        body = node_birth_body(session.bd_seq, ts_ms=ts)
        sink.publish(
            self.topics.node("NBIRTH"), stamp(body, ts_ms=ts, seq=session.birth_seq()), qos=0
        )
        for device in self._devices.values():
            self._publish_dbirth(device, ts)
            if device.dead:
                topic = self.topics.device("DDEATH", device.name)
                sink.publish(topic, stamp(b"", ts_ms=ts, seq=session.next_seq()), qos=0)
        self.births += 1
        self._ready = True
        # What was stored before the births is history now; what comes next is live.
        self.forwarder.on_connection(True)

    def _publish_dbirth(self, device: _Device, ts: int) -> None:
        body = device.metrics.birth(device.last, ts_ms=ts)
        topic = self.topics.device("DBIRTH", device.name)
        self.sink.publish(topic, stamp(body, ts_ms=ts, seq=self.session.next_seq()), qos=0)
        device.birth_due = False

    # -- from the broker ----------------------------------------------------------------------

    def _node_command(self, _topic: str, payload: bytes) -> None:
        if _asks(payload, NODE_REBIRTH) and self.sink.connected and self._host_online:
            log.info("sparkplug: rebirth requested by a host")
            self._stop_data()  # tck-id-operational-behavior-data-commands-rebirth-action-1
            self._birth()

    def _device_command(self, topic: str, payload: bytes) -> None:
        device = self._devices.get(topic.rsplit("/", 1)[-1])
        if device is not None and self.commands is not None:
            self._metric_writes(device.name, payload)
        if device is None or not _asks(payload, DEVICE_REBIRTH) or not self._ready:
            return
        self._stop_data()
        self._publish_dbirth(device, _now_ms())
        if device.dead:
            topic = self.topics.device("DDEATH", device.name)
            self.sink.publish(topic, stamp(b"", ts_ms=_now_ms(), seq=self.next_seq()), qos=0)
        self._ready = True
        self.forwarder.on_connection(True)

    def _metric_writes(self, device: str, payload: bytes) -> None:
        """DCMD metrics other than the rebirth control are writes of the device's points:
        each goes through the command path (writes: enabled, write: on the point, limits,
        rate, expiry, audit); the value read back comes up in the next DDATA, and the reply
        on .../cmd/reply says done, rejected or failed."""
        try:
            command = decode(payload)
        except Exception:  # a malformed command is ignored, like any unknown metric
            return
        assert self.commands is not None
        for metric in command.metrics:
            if metric.name == DEVICE_REBIRTH or not metric.name or metric.is_null:
                continue
            which = metric.WhichOneof("value")
            if which is None:
                continue
            value = getattr(metric, which)
            bits = _SIGNED_BITS.get(metric.datatype)
            if bits and isinstance(value, int) and value >= 1 << (bits - 1):
                value -= 1 << bits  # Int8/16/32/64 travel as two's complement
            self._write_count += 1
            request = {
                "id": f"sparkplug-{self._write_count}",
                "point": metric.name,
                "value": value,
            }
            self.commands.submit(device, orjson.dumps(request))

    def _host_state(self, _topic: str, payload: bytes) -> None:
        online, ts = _host_state(payload)
        if online is None or ts < self._host_ts:
            return  # not a STATE message, or an older one than the last taken
        self._host_ts = ts
        if online == self._host_online:
            return
        self._host_online = online
        host = self.config.primary_host_id
        if online:
            log.warning("sparkplug: primary host %s online; publishing births", host)
            if self.sink.connected:
                self._birth()
            return
        log.warning("sparkplug: primary host %s offline; storing data until it is back", host)
        if self._ready:
            self._stop_data()
            self.sink.publish(
                self.topics.node("NDEATH"), node_death(self.session.bd_seq, ts_ms=_now_ms()), qos=1
            )

    # -- from the agent -----------------------------------------------------------------------

    def observe(self, poll: Poll) -> None:
        """Every poll, before any uplink thinning: a DDATA (or DBIRTH) row in the outbox."""
        device = self._device(poll.device)
        if poll.points is not device.points:
            device.bind(poll.points)
        if device.guessed and device.learn_types(poll):
            device.birth_due = True  # hosts learn the types from a birth
        device.last = poll
        selected = poll if self.filter is None else self.filter.select(poll)
        if device.birth_due and not device.dead:
            device.birth_due = False
            body = device.metrics.birth(poll, ts_ms=poll.ts_ns // 1_000_000)
            self._store(
                self.topics.device("DBIRTH", poll.device), body, poll.device, len(poll.values)
            )
            return
        if selected is None:
            return
        body = device.metrics.data(selected)
        self._store(
            self.topics.device("DDATA", poll.device), body, poll.device, len(selected.values)
        )

    def _device(self, name: str) -> _Device:
        device = self._devices.get(name)
        if device is None:
            device = self._devices[name] = _Device(name, self._declared.get(name, {}))
        return device

    def device_state(self, device: str, up: bool, reason: str | None) -> None:
        """A device stopped answering (DDEATH) or answers again (DBIRTH with its next poll)."""
        known = self._devices.get(device)
        if known is None:
            return
        if not up:
            if not known.dead:
                known.dead = True
                self._store(self.topics.device("DDEATH", device), b"", device, 0)
        elif known.dead:
            known.dead = False
            known.birth_due = True

    def _store(self, topic: str, body: bytes, device: str, readings: int) -> None:
        forwarder = self.forwarder
        forwarder.submit(forwarder.next_seq(), topic, body, device=device, readings=readings)

    async def run(self) -> None:
        """Keep the session until cancelled; then NDEATH, the last acks, DISCONNECT."""
        self.outbox.open()
        self.forwarder.start()
        connection = asyncio.create_task(self.sink.run(), name="sink:sparkplug")
        try:
            await asyncio.shield(connection)  # cancelled here, it still sends what is left
        finally:
            self.forwarder.flush()
            if self._ready:
                # tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath
                death = node_death(self.session.bd_seq, ts_ms=_now_ms())
                self.sink.publish(self.topics.node("NDEATH"), death, qos=1)
            self._ready = False
            await self.sink.close(grace_s=GRACE_S)
            connection.cancel()
            await asyncio.gather(connection, return_exceptions=True)
            self.forwarder.close()


def _asks(payload: bytes, metric_name: str) -> bool:
    """Whether a command payload sets `metric_name` to true."""
    try:
        command = decode(payload)
    except Exception:  # a malformed command is ignored, like any unknown metric
        log.debug("sparkplug: undecodable command ignored")
        return False
    return any(m.name == metric_name and m.boolean_value for m in command.metrics)


def _host_state(payload: bytes) -> tuple[bool | None, int]:
    """(online, timestamp) of a STATE message: 3.0 JSON, or the 2.2 'ONLINE'/'OFFLINE'."""
    text = payload.strip()
    if text in (b"ONLINE", b"OFFLINE"):
        return text == b"ONLINE", 0
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, 0
    if not isinstance(doc, dict) or not isinstance(doc.get("online"), bool):
        return None, 0
    ts = doc.get("timestamp")
    return doc["online"], ts if isinstance(ts, int) else 0

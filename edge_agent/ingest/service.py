"""The ingest service: gateways' data messages from MQTT into a store, acknowledged once written.

    broker ──► IngestClient (paho thread, manual ack, persistent session, Receive Maximum)
                   │ deliveries, in order
                   ▼
               decode_data ──► batch (size / time) ──► store.write ──► ack each message
                   │ Rejected                             │ StoreUnavailable: retry with
                   ▼                                      │ capped, jittered backoff; acks
               dead-letter topic ──► ack after PUBACK     │ held; the broker stops sending
                                                          ▼ at max_inflight
                                                     StoreRejected (4xx): IngestStopped

At least once: a message is acknowledged only after the batch holding its points was
written (or its dead letter acknowledged), in the order it arrived. A crash, a broker
restart or a store outage leaves unacknowledged messages with the broker, which
redelivers them; writes are idempotent (a reading is one series and timestamp), so a
redelivered message leaves the store as it was.

One `Ingest` is one worker. With `ingest.shared`, workers with the same `ingest.group` share
an MQTT v5 shared subscription, so adding workers (on any machine) splits the load; without
it (the default) the one worker's plain subscription outlives a Mosquitto restart, which a
shared one does not (README, "At least once, written once").
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge_agent.config.site import LoadedConfig
from edge_agent.ingest.alarms import ALARMS_TOPIC, AlarmMessage, decode_alarm, parse_alarm_topic
from edge_agent.ingest.audits import (
    AUDIT_SUFFIX,
    AuditMessage,
    WhoTags,
    decode_audit,
    parse_audit_topic,
)
from edge_agent.ingest.deadletter import RejectLog, deadletter_topic, envelope
from edge_agent.ingest.embedded_store import EmbeddedStore
from edge_agent.ingest.influx import InfluxStore
from edge_agent.ingest.meta import MetaBook, Units, meta_filters, parse_meta_topic
from edge_agent.ingest.mqtt_client import Delivery, IngestClient
from edge_agent.ingest.schema import (
    ENERGY_TOPIC,
    DataMessage,
    MetaMissing,
    Rejected,
    Source,
    decode_messages,
    parse_topic,
    shown_name,
)
from edge_agent.ingest.series import KnownSeries
from edge_agent.ingest.sparkplug import SparkplugReader
from edge_agent.ingest.store import PointStore, StoreBatch, StoreRejected, StoreUnavailable
from edge_agent.mqtt.sink import backoff_delays

logger = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5
Written = Callable[[Sequence[DataMessage]], None]


class IngestStopped(Exception):
    """The store refused a batch for good (e.g. HTTP 401): the worker stops, nothing acked."""


@dataclass(slots=True)
class IngestStats:
    """Counters of one worker, as plain ints."""

    received: int = 0  # deliveries, redeliveries included
    stored_messages: int = 0
    stored_points: int = 0
    stored_alarms: int = 0  # alarm transitions written
    stored_audits: int = 0  # write audit messages written (ingest/audits.py)
    batches: int = 0
    write_failures: int = 0  # attempts that raised StoreUnavailable
    deadlettered: int = 0  # dead letters the broker acknowledged
    unconfigured_points: int = 0  # points given no series (ingest_series.py), all messages
    unacked: int = 0  # received, not acknowledged yet
    store_up: bool | None = None
    last_error: str | None = None
    write_seconds: float = 0.0  # wall time inside successful store writes
    waiting_for_meta: int = 0  # compact messages held until their device's metadata comes
    without_meta: int = 0  # ... read with the latest metadata, or dead letters, after the wait


@dataclass(slots=True, eq=False)
class _Entry:
    delivery: Delivery
    waiting: int = 1  # its batch's write and/or its dead letter; acknowledged at 0


@dataclass(slots=True, eq=False)
class _Parked:
    """A compact message waiting (unacknowledged) for its device's metadata."""

    entry: _Entry
    source: Source
    until: float  # loop time after which it is read with what there is


@dataclass(slots=True, eq=False)
class _Batch:
    store: StoreBatch = field(default_factory=StoreBatch)
    entries: list[_Entry] = field(default_factory=list)
    started: float = 0.0  # loop time of its first message


def topic_filters(prefix: str, sites: Sequence[str] | None) -> list[str]:
    """The data, energy, alarm and write audit topics of every site under `prefix` (or listed)."""
    return [
        topic
        for site in (sites or ["+"])
        for topic in (
            f"{prefix}/{site}/+/+/data",
            f"{prefix}/{site}/+/{ENERGY_TOPIC}",
            f"{prefix}/{site}/+/{ALARMS_TOPIC}",  # transitions; not alarms/active nor /cmd
            f"{prefix}/{site}/+/+/{AUDIT_SUFFIX}",  # write audits; not the requests or replies
        )
    ]


def default_client_id(group: str, worker: str | None = None) -> str:
    """`edge-ingest-{group}-{host}[-{worker}]`: stable across restarts of the same worker."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"edge-ingest-{group}-{host}" + (f"-{worker}" if worker else "")


def device_profiles(loaded: LoadedConfig) -> dict[tuple[str, str, str], str]:
    """(site, gateway, device) -> profile name, for the devices the config file lists."""
    site = loaded.site
    return {
        (site.site, site.gateway, d.device.name): d.profile_name
        for d in loaded.devices
        if d.profile_name != "inline"
    }


def store_path(loaded: LoadedConfig) -> Path:
    """The embedded store's file; relative paths are relative to the config file."""
    path = loaded.site.ingest.store
    return path if path.is_absolute() else loaded.path.parent / path


def make_store(loaded: LoadedConfig) -> PointStore:
    """InfluxStore when the config has an `influx:` block, else the embedded SQLite store."""
    site = loaded.site
    profiles = device_profiles(loaded)
    if site.influx is not None:
        influx = site.influx.resolved(loaded.path.parent)  # ca_file: beside the site file
        return InfluxStore(influx, measurement=site.ingest.measurement, profiles=profiles)
    return EmbeddedStore(store_path(loaded), profiles=profiles)


class Ingest:
    """One ingest worker: `run()` until cancelled; raises IngestStopped on a 4xx answer."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        store: PointStore | None = None,
        worker: str | None = None,
        client_id: str | None = None,
        on_written: Written | None = None,
    ) -> None:
        site = loaded.site
        config = site.ingest
        self.loaded = loaded
        self.config = config
        self.prefix = site.mqtt.prefix
        self.store = store if store is not None else make_store(loaded)
        self.series = KnownSeries.from_config(loaded)
        self.stats = IngestStats()
        self.rejects = RejectLog()
        self.client_id = client_id or config.client_id or default_client_id(config.group, worker)
        if client_id is None and config.client_id and worker:
            self.client_id = f"{config.client_id}-{worker}"
        # A Sparkplug edge node's data too, when the site's agent is one (same broker).
        self.sparkplug: SparkplugReader | None = None
        filters = topic_filters(self.prefix, config.sites)
        if site.sparkplug is not None and site.sparkplug.url in (None, site.mqtt.url):
            self.sparkplug = SparkplugReader(site.sparkplug, site=site.site, gateway=site.gateway)
            filters += self.sparkplug.filters
        self.client = IngestClient(
            site.mqtt,
            client_id=self.client_id,
            filters=filters,
            group=config.group if config.shared else None,
            # The other shape, left in a resumed session by a worker before `shared` changed.
            stale_filters=_other_shape(filters, config.group, shared=config.shared),
            deliver=self._on_deliveries,
            max_inflight=config.max_inflight,
            session_expiry_s=config.session_expiry_s,
            protocol=config.protocol,
            every_worker=meta_filters(self.prefix, config.sites),
        )
        self.metas = MetaBook()  # compact data messages' units, by device and version
        self._parked: deque[_Parked] = deque()
        self._park_timer: asyncio.TimerHandle | None = None
        self._on_written = on_written
        self._max_future_ms = int(config.max_future_s * 1000)
        self.who_tags = WhoTags()
        self._batches: deque[_Batch] = deque()
        self._unacked: deque[_Entry] = deque()
        self._work = asyncio.Event()  # a batch is waiting
        self._full = asyncio.Event()  # ... and should go now

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until the broker granted the subscription; False on timeout."""
        return await self.client.wait_subscribed(timeout_s)

    async def run(self) -> None:
        """Subscribe and write until cancelled."""
        await self.store.open()
        logger.info(
            "ingest %s: %s -> %s",
            self.client_id,
            ", ".join(self.client.filters),
            self.store.description,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.client.run(), name="ingest-mqtt")
                tg.create_task(self._run_writer(), name="ingest-writer")
        except BaseExceptionGroup as group:
            stopped = _first_stopped(group)
            if stopped is not None:
                raise stopped from None
            raise
        finally:
            await self.store.close()

    # -- receiving (on the loop) ------------------------------------------------------------

    def _on_deliveries(self, deliveries: list[Delivery]) -> None:
        loop_time = asyncio.get_running_loop().time()
        now_ms = time.time_ns() // 1_000_000
        stats = self.stats
        config = self.config
        for delivery in deliveries:
            stats.received += 1
            meta_source = parse_meta_topic(delivery.topic, self.prefix)
            if meta_source is not None:  # QoS 0, nothing to acknowledge
                self._on_meta(meta_source, delivery, now_ms)
                continue
            entry = _Entry(delivery)
            self._unacked.append(entry)
            sparkplug = (
                self.sparkplug if self.sparkplug and self.sparkplug.owns(delivery.topic) else None
            )
            source = None if sparkplug else parse_topic(delivery.topic, self.prefix)
            alarm_source = (
                None
                if source is not None or sparkplug
                else parse_alarm_topic(delivery.topic, self.prefix)
            )
            audit_source = (
                None
                if source is not None or sparkplug or alarm_source is not None
                else parse_audit_topic(delivery.topic, self.prefix)
            )
            messages: list[DataMessage] = []
            alarms: list[AlarmMessage] = []
            audits: list[AuditMessage] = []
            unconfigured: Rejected | None = None  # points of a stored message without series
            try:
                if len(delivery.payload) > config.max_message_bytes:
                    raise Rejected(
                        "too_large",
                        f"{len(delivery.payload):,} bytes, over ingest.max_message_bytes "
                        f"({config.max_message_bytes:,})",
                    )
                if audit_source is not None:
                    audits.append(self._admit_audit(audit_source, delivery.payload, now_ms))
                elif alarm_source is not None:
                    alarm = decode_alarm(
                        alarm_source,
                        delivery.payload,
                        now_ms=now_ms,
                        max_future_ms=self._max_future_ms,
                    )
                    if not self.series.alarm(alarm):
                        raise Rejected(
                            "not_configured", f"alarm {shown_name(alarm.id)} is not configured"
                        )
                    alarms.append(alarm)
                elif sparkplug is not None:
                    messages = sparkplug.read(delivery.topic, delivery.payload)
                    if messages:
                        messages, unconfigured = self._admit(messages, energy=False)
                elif source is None:
                    raise Rejected("not_data", "not a data topic")
                else:
                    # One message per poll; a batched (v2) delivery holds several.
                    messages = decode_messages(
                        source,
                        delivery.payload,
                        now_ms=now_ms,
                        max_future_ms=self._max_future_ms,
                        max_points=config.max_points_per_message,
                        units=self.metas.units,
                    )
                    messages, unconfigured = self._admit(messages, energy=source.device == "")
            except MetaMissing:
                assert source is not None
                self._park(entry, source, loop_time)
                continue
            except Rejected as rejected:
                self._dead_letter(entry, rejected, now_ms)
                continue
            except Exception as exc:  # a bug of ours must not stall the ack queue
                logger.exception("could not decode a message on %s", delivery.topic)
                self._dead_letter(entry, Rejected("unexpected", repr(exc)), now_ms)
                continue
            if unconfigured is not None:  # acknowledged once stored and dead-lettered
                entry.waiting = 2
                self._dead_letter(entry, unconfigured, now_ms)
            batch = self._batches[-1] if self._batches else None
            if batch is None or batch.store.points >= config.batch_size:
                batch = _Batch(started=loop_time)
                self._batches.append(batch)
            batch.store.messages.extend(messages)
            batch.store.alarms.extend(alarms)
            batch.store.audits.extend(audits)
            batch.store.points += sum(len(message.points) for message in messages) + len(alarms)
            batch.store.points += len(audits)
            batch.entries.append(entry)
        stats.unacked = len(self._unacked)
        if self._batches:
            self._work.set()
            if self._go_now():
                self._full.set()

    # -- compact messages and their metadata (ingest/meta.py) -------------------------------

    def _on_meta(self, source: Source, delivery: Delivery, now_ms: int) -> None:
        try:
            meta_id = self.metas.read(source, delivery.payload)
        except Rejected as rejected:
            self._dead_letter(_Entry(delivery), rejected, now_ms)  # never in the ack queue
            return
        if meta_id is not None and self._parked:
            self._read_parked()

    def _park(self, entry: _Entry, source: Source, loop_time: float) -> None:
        self._parked.append(_Parked(entry, source, loop_time + self.config.meta_wait_s))
        self.stats.waiting_for_meta = len(self._parked)
        if self._park_timer is None:
            self._park_timer = asyncio.get_running_loop().call_later(
                self.config.meta_wait_s, self._read_parked
            )

    def _read_parked(self) -> None:
        """Read the waiting messages whose metadata came; those past their wait with the
        device's latest metadata, or as `no_metadata` dead letters (module ingest/meta.py)."""
        loop = asyncio.get_running_loop()
        loop_time = loop.time()
        now_ms = time.time_ns() // 1_000_000
        metas = self.metas
        fell_back: list[Source] = []

        def latest(source: Source, meta_id: str) -> Units | None:
            found = metas.units(source, meta_id)
            if found is None:
                fell_back.append(source)
                found = metas.latest(source)
            return found

        waiting: deque[_Parked] = deque()
        for parked in self._parked:
            expired = parked.until <= loop_time
            entry, source = parked.entry, parked.source
            mark = len(fell_back)
            try:
                messages = decode_messages(
                    source,
                    entry.delivery.payload,
                    now_ms=now_ms,
                    max_future_ms=self._max_future_ms,
                    max_points=self.config.max_points_per_message,
                    units=latest if expired else metas.units,
                )
                messages, unconfigured = self._admit(messages, energy=False)
            except MetaMissing as missing:
                if not expired:
                    waiting.append(parked)
                    continue
                del fell_back[mark:]
                self.stats.without_meta += 1
                self._dead_letter(
                    entry,
                    Rejected(
                        "no_metadata",
                        f"no metadata of {shown_name(source.device)} lists this message's "
                        f"points (it names version {missing.meta_id!r}); waited "
                        f"{self.config.meta_wait_s:g} s",
                    ),
                    now_ms,
                )
                continue
            except Rejected as rejected:
                self._dead_letter(entry, rejected, now_ms)
                continue
            if unconfigured is not None:  # acknowledged once stored and dead-lettered
                entry.waiting = 2
                self._dead_letter(entry, unconfigured, now_ms)
            batch = self._batches[-1] if self._batches else None
            if batch is None or batch.store.points >= self.config.batch_size:
                batch = _Batch(started=loop_time)
                self._batches.append(batch)
            batch.store.messages.extend(messages)
            batch.store.points += sum(len(message.points) for message in messages)
            batch.entries.append(entry)
        self.stats.without_meta += len(fell_back)
        self._parked = waiting
        self.stats.waiting_for_meta = len(waiting)
        if self._park_timer is not None:
            self._park_timer.cancel()
            self._park_timer = None
        if waiting:
            self._park_timer = loop.call_later(
                max(0.0, waiting[0].until - loop_time), self._read_parked
            )
        if self._batches:
            self._work.set()
            if self._go_now():
                self._full.set()

    def _admit(
        self, messages: list[DataMessage], *, energy: bool
    ) -> tuple[list[DataMessage], Rejected | None]:
        """The messages with only the points that get series, and why the rest do not.

        Raises Rejected when no point is left.
        """
        dropped: list[str] = []
        for message in messages:
            dropped += self.series.admit(message, energy=energy)
        if not dropped:
            return messages, None
        self.stats.unconfigured_points += len(dropped)
        source = messages[0].source
        names = ", ".join(shown_name(n) for n in dict.fromkeys(dropped[:5]))
        more = f" and {len(dropped) - 5:,} more" if len(dropped) > 5 else ""
        where = shown_name(f"{source.site}/{source.gateway}/{source.device}")
        rejected = Rejected(
            "not_configured", f"{len(dropped):,} points of {where} not configured: {names}{more}"
        )
        kept = [m for m in messages if m.points]
        if not kept:
            raise rejected
        return kept, rejected

    def _admit_audit(self, source: Source, payload: bytes, now_ms: int) -> AuditMessage:
        """A write audit, validated, with its bounded tags; Rejected when its device gets
        no series."""
        audit = decode_audit(source, payload, now_ms=now_ms, max_future_ms=self._max_future_ms)
        point_tag = self.series.command(source, audit.point)
        if point_tag is None:
            where = shown_name(f"{source.site}/{source.gateway}/{source.device}")
            raise Rejected("not_configured", f"write audit of {where}: device not configured")
        return replace(audit, point_tag=point_tag, who_tag=self.who_tags.tag(audit.by))

    def _go_now(self) -> bool:
        """Whether the head batch should be written without waiting for its flush time."""
        batches = self._batches
        return (
            len(batches) > 1
            or batches[0].store.points >= self.config.batch_size
            # The broker sends no more until we acknowledge: waiting gains nothing.
            or len(self._unacked) >= self.config.max_inflight
        )

    def _dead_letter(self, entry: _Entry, rejected: Rejected, now_ms: int) -> None:
        delivery = entry.delivery
        self.rejects.record(delivery.topic, rejected)
        source = (
            parse_topic(delivery.topic, self.prefix)
            or parse_alarm_topic(delivery.topic, self.prefix)
            or parse_audit_topic(delivery.topic, self.prefix)
            or parse_meta_topic(delivery.topic, self.prefix)
        )
        topic = deadletter_topic(
            source, prefix=self.prefix, configured=self.config.deadletter_topic
        )
        letter = envelope(
            delivery.topic,
            delivery.payload,
            rejected,
            received_ms=now_ms,
            worker=self.client_id,
        )

        def acked() -> None:
            self.stats.deadlettered += 1
            entry.waiting -= 1
            self._ack_ready()

        try:
            self.client.publish(topic, letter, on_ack=acked)
        except (RuntimeError, ValueError) as exc:  # no client yet: the broker redelivers it
            logger.warning("could not publish a dead letter to %s: %s", topic, exc)

    def _ack_ready(self) -> None:
        """Acknowledge, in arrival order, every message from the head that is done."""
        unacked = self._unacked
        ack = self.client.ack
        while unacked and unacked[0].waiting <= 0:
            ack(unacked.popleft().delivery)
        self.stats.unacked = len(unacked)

    # -- writing ----------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        """Take batches when due and write up to `write_concurrency` of them at once."""
        loop = asyncio.get_running_loop()
        flush_interval_s = self.config.flush_interval_s
        slots = asyncio.Semaphore(self.config.write_concurrency)
        async with asyncio.TaskGroup() as tg:
            while True:
                await slots.acquire()  # first a free slot: the batch keeps growing meanwhile
                await self._work.wait()
                delay = self._batches[0].started + flush_interval_s - loop.time()
                if delay > 0 and not self._go_now():
                    self._full.clear()
                    try:
                        async with asyncio.timeout(delay):
                            await self._full.wait()
                    except TimeoutError:
                        pass
                batch = self._batches.popleft()
                if not self._batches:
                    self._work.clear()
                tg.create_task(self._write_and_ack(batch, slots), name="ingest-write")

    async def _write_and_ack(self, batch: _Batch, slots: asyncio.Semaphore) -> None:
        try:
            await self._write(batch)
        finally:
            slots.release()
        for entry in batch.entries:
            entry.waiting -= 1
        self._ack_ready()

    async def _write(self, batch: _Batch) -> None:
        """Write one batch, retrying for as long as the store is unavailable."""
        stats = self.stats
        store = self.store
        delays = None
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await store.write(batch.store)
            except StoreUnavailable as exc:
                stats.write_failures += 1
                if stats.store_up is not False or stats.last_error != exc.reason:
                    logger.warning(
                        "store %s unavailable: %s; holding %d messages unacknowledged, retrying",
                        store.description,
                        exc.reason,
                        len(self._unacked),
                    )
                stats.store_up = False
                stats.last_error = exc.reason
                if delays is None:
                    delays = backoff_delays(RETRY_INITIAL_S, self.config.backoff_max_s)
                delay = next(delays)
                if exc.retry_after_s is not None:
                    delay = max(delay, min(exc.retry_after_s, self.config.backoff_max_s))
                await asyncio.sleep(delay)
                continue
            except StoreRejected as exc:
                stats.last_error = exc.reason
                logger.error(
                    "store %s refused a batch of %d points: %s; stopping without "
                    "acknowledging (the broker keeps the messages)",
                    store.description,
                    batch.store.points,
                    exc.reason,
                )
                raise IngestStopped(f"{store.description} refused a write: {exc.reason}") from exc
            break
        if stats.store_up is False:
            logger.warning("store %s is back; writing the backlog", store.description)
        stats.store_up = True
        stats.write_seconds += loop.time() - began
        stats.batches += 1
        stats.stored_messages += len(batch.store.messages)
        stats.stored_alarms += len(batch.store.alarms)
        stats.stored_audits += len(batch.store.audits)
        stats.stored_points += batch.store.points
        if self._on_written is not None:
            try:
                self._on_written(batch.store.messages)
            except Exception:
                logger.exception("on_written callback failed")


def _other_shape(filters: Sequence[str], group: str, *, shared: bool) -> list[str]:
    """The filters of the subscription shape this worker does not use."""
    return list(filters) if shared else [f"$share/{group}/{f}" for f in filters]


def _first_stopped(group: BaseExceptionGroup[BaseException]) -> IngestStopped | None:
    for exc in group.exceptions:
        if isinstance(exc, IngestStopped):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_stopped(exc)
            if found is not None:
                return found
    return None

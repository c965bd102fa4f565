"""The whole runtime of one gateway, top to bottom.

    lines (one task per TCP device or per shared serial bus)
        └─ run_line ─► emit(poll) ─► DeviceEncoder ─► MqttSink.publish ─► broker

An outer TaskGroup holds the MQTT sink, an inner one the pollers. Stopping is ordered:
the pollers are cancelled first, then the sink publishes the retained "offline" status,
drains outstanding acknowledgements within the grace period, and disconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from drivers.reading import Poll
from drivers.registry import plugin
from edge_agent import __version__
from edge_agent.alarms.stage import build_alarm_stages
from edge_agent.cli.plan_listing import render_issues
from edge_agent.commands.service import WriteCommands
from edge_agent.config.site import ConfigError, DeviceSetup, LoadedConfig, load_config
from edge_agent.delivery.forwarder import Forwarder
from edge_agent.delivery.outbox import Outbox
from edge_agent.energy.stage import build_energy_stages, energy_state_path
from edge_agent.mqtt.sink import MqttSink, Will
from edge_agent.ops.gateway_health import GatewayHealth
from edge_agent.pipeline.batching import build_batcher, resend_held
from edge_agent.pipeline.by_exception import build_report_filter, rebuild_report_filter
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.device_meta import DeviceMeta, setup_meta
from edge_agent.pipeline.payload import DataEncoder, DeviceEncoder
from edge_agent.pipeline.stages import Outlet, Stage, UplinkFilter
from edge_agent.runtime.heap import settle, thaw
from edge_agent.runtime.poll_slots import slot_width, slotted_phase
from edge_agent.runtime.poller import Unit, run_line
from edge_agent.runtime.reload import ReloadPlan, plan_reload
from edge_agent.sparkplug.hook import attach_sparkplug
from edge_agent.uplink.platform import with_uplink

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Line:
    """Units that share one connection and are polled one transaction at a time."""

    key: str
    units: list[Unit]
    frame_gap_s: float = 0.0
    slot_s: float = 0.0  # poll slots (poll_slots.py); 0 on lines shared by several units


@dataclass(slots=True)
class Topics:
    """The MQTT topics of one gateway (see the README's contract)."""

    prefix: str
    site: str
    gateway: str
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        """Retained gateway status; the broker publishes the will here."""
        return f"{self.base}/status"

    def data(self, device: str) -> str:
        """One message per device per poll."""
        return f"{self.base}/{device}/data"

    def device_status(self, device: str) -> str:
        """Retained per-device up/down status."""
        return f"{self.base}/{device}/status"

    def meta(self, device: str) -> str:
        """Retained per-device metadata of compact data messages (`mqtt.payload: compact`)."""
        return f"{self.base}/{device}/meta"


def build_lines(devices: tuple[DeviceSetup, ...], *, slot_s: float = 0.0) -> list[Line]:
    """Group devices into lines (their protocol says which share one) and spread their
    phases evenly over each interval, by the device's place among the enabled ones; a
    device with a line of its own takes the slot its phase falls in (poll_slots.py)."""
    enabled = [d for d in devices if d.device.enabled]
    grouped: dict[str, list[tuple[int, DeviceSetup]]] = {}
    for index, setup in enumerate(enabled):
        key = plugin(setup.device.driver).line_key(setup.device)
        grouped.setdefault(key, []).append((index, setup))
    # Devices with a line of their own, by interval: how many share the slots (poll_slots.py).
    own: dict[float, int] = {}
    for members in grouped.values():
        if len(members) == 1:
            interval = members[0][1].device.interval_s
            own[interval] = own.get(interval, 0) + 1
    lines: list[Line] = []
    for key, members in grouped.items():
        protocol = plugin(members[0][1].device.driver)
        parts = protocol.open_line(key, [(s.device, s.profile) for _, s in members])
        units = []
        line_slot_s = 0.0
        for (index, setup), driver in zip(members, parts.drivers, strict=True):
            device = setup.device
            phase = device.interval_s * index / max(1, len(enabled))
            if len(members) == 1 and slot_s > 0.0:
                line_slot_s = slot_width(own[device.interval_s], device.interval_s, slot_s)
                phase = slotted_phase(phase, device.interval_s, line_slot_s)
            units.append(
                Unit(driver, device.interval_s, backoff_max_s=device.backoff_max_s, phase_s=phase)
            )
        lines.append(Line(key, units, frame_gap_s=parts.frame_gap_s, slot_s=line_slot_s))
    return lines


class Agent:
    """Polls every device of a site config and publishes what it reads."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        grace_s: float = 5.0,
        settle_heap: bool = False,
    ) -> None:
        site = loaded.site
        self.loaded = loaded
        self.grace_s = grace_s
        # `edge-agent run`: freeze the start-up objects out of the garbage collector's walks
        # (heap.py); off for agents that share a process (tests, tools).
        self.settle_heap = settle_heap
        self.topics = Topics(site.mqtt.prefix, site.site, site.gateway)
        self.lines = build_lines(loaded.devices, slot_s=site.polling.slot_s)
        self.units = [u for line in self.lines for u in line.units]
        self.metas: dict[str, DeviceMeta] = {}  # `mqtt.payload: compact` only
        self.encoders = {u.driver.name: self._encoder(loaded, u) for u in self.units}
        self._data_topics = {name: self.topics.data(name) for name in self.encoders}
        client_id = site.mqtt.client_id or f"edge-agent-{site.site}-{site.gateway}"
        self.sink = MqttSink(
            site.mqtt,
            client_id=client_id,
            will=Will(self.topics.status, self._status_payload("offline", "connection lost")),
            birth=[(self.topics.status, self._status_payload("online"))],
            protocol=site.mqtt.protocol,
            on_state=self._mqtt_state,
        )
        # Not a hash of the config: editing the file keeps the backlog (issue 4).
        self.outbox = Outbox(loaded.path.parent / site.outbox.path, site.outbox)
        self.forwarder = Forwarder(
            self.outbox,
            self.sink,
            window=site.mqtt.max_inflight,
            flush_interval_s=site.outbox.flush_interval_s,
            replay_max_per_s=site.outbox.replay_max_per_s,
        )

        self.outlet = Outlet(
            base_topic=self.topics.base,
            gateway=site.gateway,
            forwarder=self.forwarder,
            sink=self.sink,
        )
        # Filled from the config by the stages' own modules (energy, alarms, report by
        # exception); each sees every poll, see stages.py.
        self.stages: list[Stage] = []
        # A stage that raises costs only itself: counted here (metrics), logged once.
        self.stage_failures: dict[str, int] = {}
        self._pollers: asyncio.TaskGroup | None = None
        self._reloading = asyncio.Lock()  # two quick SIGHUPs apply one after the other
        self._line_tasks: dict[str, asyncio.Task[None]] = {}
        # Called when a reload has replaced units, before their lines start (metrics wrap
        # the new drivers so their first poll is measured).
        self.on_units_changed: list[Callable[[], object]] = []
        self.uplink_filter: UplinkFilter | None = None
        energy_outlet = with_uplink(loaded, self.outlet, self.stages)  # `uplink:` block
        self.stages.extend(
            build_energy_stages(loaded, energy_outlet, state_path=energy_state_path(loaded))
        )
        self.stages.extend(
            build_alarm_stages(loaded, self.outlet, sink=self.sink, forwarder=self.forwarder)
        )
        self.commands = WriteCommands(site.writes, self.outlet, self.sink)  # .../{device}/cmd
        self.stages.append(self.commands)
        self.sparkplug = attach_sparkplug(loaded, self.stages, self.units)  # or None
        if self.sparkplug is not None:
            self.sparkplug.commands = self.commands  # DCMD metric writes take the same path
        self.stages.append(GatewayHealth(self))  # outbox depth etc. as a stored series
        self.uplink_filter = build_report_filter(loaded)  # None without `report:` options
        self.batcher = build_batcher(
            loaded, topics=self._data_topics, forwarder=self.forwarder, holder=self.forwarder
        )

    def _mqtt_state(self, up: bool) -> None:
        if up:  # retained metadata ahead of the data the forwarder now sends
            for meta in self.metas.values():
                self.sink.publish(self.topics.meta(meta.device), meta.payload, qos=1, retain=True)
        self.forwarder.on_connection(up)

    def _encoder(self, loaded: LoadedConfig, unit: Unit) -> DataEncoder:
        """The device's data encoder: v1 JSON, or compact with its metadata message."""
        name, points, gateway = unit.driver.name, unit.driver.points, loaded.site.gateway
        if loaded.site.mqtt.payload != "compact":
            return DeviceEncoder(gateway=gateway, device=name, points=points)
        setup = next(s for s in loaded.devices if s.device.name == name)
        meta = self.metas[name] = setup_meta(gateway, setup, points)
        return CompactEncoder(gateway=gateway, device=name, points=points, meta_id=meta.meta_id)

    @property
    def seq(self) -> int:
        """The sequence number of the last accepted data message."""
        return self.outbox.reserve_id() - 1

    def _status_payload(self, state: str, reason: str | None = None) -> bytes:
        doc: dict[str, object] = {"state": state, "version": __version__, "schema_version": 1}
        if reason:
            doc["reason"] = reason
        return orjson.dumps(doc)

    def emit(self, poll: Poll) -> None:
        """Accept one poll into the outbox: the hot path, once per device per poll."""
        for stage in self.stages:
            try:
                stage.observe(poll)
            except Exception:
                self._stage_failed(stage, "observe")
        if self.sparkplug is not None and not self.sparkplug.json_data:
            return  # `sparkplug: {json: false}`: the edge node alone publishes data
        if self.uplink_filter is not None:
            selected = self.uplink_filter.select(poll)
            if selected is None:
                return
            poll = selected
        if self.batcher is not None and self.batcher.add(poll):
            return  # the device batches its polls: they go up as one v2 message
        forwarder = self.forwarder
        seq = forwarder.next_seq()
        payload = self.encoders[poll.device].encode(poll, seq=seq)
        forwarder.submit(
            seq,
            self._data_topics[poll.device],
            payload,
            device=poll.device,
            readings=len(poll.values),
        )

    def _stage_failed(self, stage: Stage, what: str) -> None:
        """Count a stage's failure; the first of each stage is logged with its traceback."""
        count = self.stage_failures.get(stage.name, 0) + 1
        self.stage_failures[stage.name] = count
        if count == 1:
            log.exception(
                "stage %s failed in %s; the readings and the other stages go on "
                "(further failures are counted in edge_agent_stage_failures_total)",
                stage.name,
                what,
            )

    async def _run_stage(self, stage: Stage) -> None:
        """A stage's timers, started again after a failure (capped backoff), never ending
        the agent."""
        pause_s = 1.0
        while True:
            try:
                await stage.run()
                return
            except Exception:
                self._stage_failed(stage, "run")
            await asyncio.sleep(pause_s)
            pause_s = min(60.0, pause_s * 2)

    def _device_state(self, device: str, up: bool, reason: str | None) -> None:
        # Up with a reason: it answers, but every point is bad (poller.py).
        state = "down" if not up else "fault" if reason else "up"
        doc: dict[str, object] = {"state": state, "ts_ms": time.time_ns() // 10**6}
        if reason:
            doc["reason"] = reason
        self.sink.publish(self.topics.device_status(device), orjson.dumps(doc), retain=True)
        if self.sparkplug is not None:
            self.sparkplug.device_state(device, up, reason)  # DDEATH / DBIRTH

    def _start_lines(self, lines: list[Line]) -> None:
        for line in lines:
            self._start_line(line)

    def _start_line(self, line: Line) -> None:
        assert self._pollers is not None
        self._line_tasks[line.key] = self._pollers.create_task(
            run_line(
                line.units,
                emit=self.emit,
                on_state=self._device_state,
                frame_gap_s=line.frame_gap_s,
                between=self.commands.line_started(line.key, line.units, line.frame_gap_s),
                slot_s=line.slot_s,
            ),
            name=f"line:{line.key}",
        )

    async def reload(self, loaded: LoadedConfig) -> ReloadPlan:
        """Apply a changed config's devices; unaffected lines and the outbox keep running.

        A line is restarted when any device on it changed (see reload.py); its in-progress
        read is abandoned, every poll already emitted is in the outbox.
        """
        if not self.settle_heap:
            return await self._apply(loaded)
        thaw()  # what the reload drops must be collectable (heap.py)
        try:
            return await self._apply(loaded)
        finally:
            # Once _apply has returned: its frame no longer holds the stopped lines' tasks.
            settle()

    async def _apply(self, loaded: LoadedConfig) -> ReloadPlan:
        new_lines = build_lines(loaded.devices, slot_s=self.loaded.site.polling.slot_s)
        plan = plan_reload(
            self.loaded,
            loaded,
            old_lines={x.key: [u.driver.name for u in x.units] for x in self.lines},
            new_lines={x.key: [u.driver.name for u in x.units] for x in new_lines},
        )
        stopping = [self._line_tasks.pop(key) for key in plan.stop if key in self._line_tasks]
        for key in plan.stop:
            self.commands.line_stopped(key)
        for task in stopping:
            task.cancel()
        # Wait for the drivers to close: a serial port must be free before it reopens.
        await asyncio.gather(*stopping, return_exceptions=True)
        kept = {x.key: x for x in self.lines if x.key in plan.keep}
        self.lines = [kept.get(x.key, x) for x in new_lines]
        self.units = [u for line in self.lines for u in line.units]
        # The new devices, with the site settings the agent started with (mqtt.payload).
        devices_now = dataclasses.replace(loaded, site=self.loaded.site)
        for line in self.lines:
            if line.key in kept:
                continue
            for u in line.units:
                name = u.driver.name
                before = self.metas.get(name)
                self.encoders[name] = self._encoder(devices_now, u)
                self._data_topics[name] = self.topics.data(name)
                meta = self.metas.get(name)
                if meta is not None and meta != before:
                    self.sink.publish(self.topics.meta(name), meta.payload, qos=1, retain=True)
        polled = {u.driver.name for u in self.units}
        for name in [*plan.removed, *plan.disabled]:
            if name in polled:
                continue
            self.encoders.pop(name, None)
            if self.metas.pop(name, None) is not None:
                self.sink.publish(self.topics.meta(name), b"", qos=1, retain=True)
            # An empty retained message deletes the retained status of a device no longer
            # polled (removed, or `enabled: false`).
            self.sink.publish(self.topics.device_status(name), b"", retain=True)
        # Only devices are reloaded; everything else stays as the agent started with it.
        self.loaded = dataclasses.replace(
            loaded, site=self.loaded.site.model_copy(update={"devices": loaded.site.devices})
        )
        self.uplink_filter = rebuild_report_filter(self.uplink_filter, self.loaded)
        for hook in self.on_units_changed:
            hook()
        for line in self.lines:
            if line.key in plan.start and self._pollers is not None:
                self._start_line(line)
        log.warning(
            "config reloaded: %d devices added, %d removed, %d changed; %d lines restarted, "
            "%d untouched%s",
            len(plan.added),
            len(plan.removed),
            len(plan.changed),
            len(plan.start),
            len(plan.keep),
            f"; restart the agent to apply {', '.join(plan.needs_restart)}"
            if plan.needs_restart
            else "",
        )
        return plan

    async def reload_file(self) -> ReloadPlan | None:
        """Re-read the config file; an invalid one is reported and changes nothing."""
        async with self._reloading:
            try:
                loaded = load_config(self.loaded.path)
            except ConfigError as exc:
                log.error("config not reloaded, the running one stays:\n%s", render_issues(exc))
                return None
            try:
                return await self.reload(loaded)
            except Exception:
                # A reload runs beside the pollers (SIGHUP): its bug must not stop the agent.
                log.exception("config reload failed; lines it had not stopped keep running")
                return None

    def _resend_held(self) -> None:
        """Polls that waited in batches when the agent crashed go up now (batching.py)."""
        held = self.outbox.held()
        if not held:
            return
        messages = resend_held(
            held, gateway=self.loaded.site.gateway, forwarder=self.forwarder, holder=self.forwarder
        )
        log.warning(
            "outbox: %d polls were waiting in batches when the agent stopped; sent as %d "
            "historical messages",
            len(held),
            messages,
        )

    async def run(self) -> None:
        """Run until cancelled, then stop in order: pollers, then the sink."""
        log.info(
            "agent %s: %d devices on %d lines, publishing to %s",
            __version__,
            len(self.units),
            len(self.lines),
            self.loaded.site.mqtt.url,
        )
        self.outbox.open()
        self.forwarder.start()
        self._resend_held()
        if self.settle_heap:
            settle()  # the config, plans and drivers leave the collector's walks (heap.py)
        async with asyncio.TaskGroup() as outer:
            outer.create_task(self.sink.run(), name="sink:mqtt")
            for stage in self.stages:
                outer.create_task(self._run_stage(stage), name=f"stage:{stage.name}")
            try:
                async with asyncio.TaskGroup() as pollers:
                    self._pollers = pollers
                    # Not a loop here: its variable would hold the last line for as long
                    # as the agent runs, and a reload could never free it.
                    self._start_lines(self.lines)
                    # The group lives as long as the agent, not as long as its lines: a
                    # reload may stop every line (or leave none) before it starts new ones.
                    await asyncio.Future()
            finally:
                self._pollers = None
                if self.batcher is not None:
                    self.batcher.flush()  # batches still waiting go up before the end
                self.forwarder.flush()  # store the last polls before anything else
                await self.sink.close(
                    grace_s=self.grace_s,
                    final=[(self.topics.status, self._status_payload("offline", "stopped"))],
                )
                self.forwarder.close()  # commits the deletions the last acks asked for

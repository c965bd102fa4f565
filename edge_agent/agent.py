"""The whole runtime of one gateway, top to bottom.

    lines (one task per TCP device or per shared serial bus)
        └─ run_line ─► emit(poll) ─► DeviceEncoder ─► MqttSink.publish ─► broker

An outer TaskGroup holds the MQTT sink, an inner one the pollers. Stopping is ordered:
the pollers are cancelled first, then the sink publishes the retained "offline" status,
drains outstanding acknowledgements within the grace period, and disconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson

from drivers.modbus.connection import ModbusConnection
from drivers.modbus.driver import ModbusDriver
from drivers.reading import Poll
from edge_agent import __version__
from edge_agent.config import DeviceSetup, LoadedConfig
from edge_agent.forwarder import Forwarder
from edge_agent.mqtt_sink import MqttSink, Will
from edge_agent.outbox import Outbox
from edge_agent.payload import DeviceEncoder
from edge_agent.poller import Unit, run_line
from edge_agent.stages import Outlet, Stage, UplinkFilter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Line:
    """Units that share one connection and are polled one transaction at a time."""

    key: str
    units: list[Unit]
    frame_gap_s: float = 0.0


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


def build_lines(devices: tuple[DeviceSetup, ...]) -> list[Line]:
    """Group devices into lines and spread their phases evenly over each interval."""
    enabled = [d for d in devices if d.device.enabled]
    lines: dict[str, Line] = {}
    connections: dict[str, ModbusConnection] = {}
    for index, setup in enumerate(enabled):
        device = setup.device
        endpoint = device.endpoint
        key = endpoint.bus_key or f"tcp:{device.name}"
        if endpoint.bus_key:
            shared = [d.device for d in enabled if d.device.endpoint.bus_key == endpoint.bus_key]
            if key not in connections:
                # One client per bus; it waits as long as the slowest unit is allowed to.
                connections[key] = ModbusConnection(
                    endpoint,
                    name=endpoint.bus_key,
                    timeout_s=max(d.timeout_s for d in shared),
                )
            driver = ModbusDriver(device, setup.profile, connection=connections[key])
        else:
            driver = ModbusDriver(device, setup.profile)
        line = lines.setdefault(key, Line(key, []))
        line.frame_gap_s = max(line.frame_gap_s, device.frame_gap_s)
        phase = device.interval_s * index / max(1, len(enabled))
        line.units.append(
            Unit(driver, device.interval_s, backoff_max_s=device.backoff_max_s, phase_s=phase)
        )
    return list(lines.values())


class Agent:
    """Polls every device of a site config and publishes what it reads."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        grace_s: float = 5.0,
    ) -> None:
        site = loaded.site
        self.loaded = loaded
        self.grace_s = grace_s
        self.topics = Topics(site.mqtt.prefix, site.site, site.gateway)
        self.lines = build_lines(loaded.devices)
        self.units = [u for line in self.lines for u in line.units]
        self.encoders = {
            u.driver.name: DeviceEncoder(
                gateway=site.gateway, device=u.driver.name, points=u.driver.points
            )
            for u in self.units
        }
        self._data_topics = {name: self.topics.data(name) for name in self.encoders}
        client_id = site.mqtt.client_id or f"edge-agent-{site.site}-{site.gateway}"
        self.sink = MqttSink(
            site.mqtt,
            client_id=client_id,
            will=Will(self.topics.status, self._status_payload("offline", "connection lost")),
            birth=[(self.topics.status, self._status_payload("online"))],
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
        self.uplink_filter: UplinkFilter | None = None

    def _mqtt_state(self, up: bool) -> None:
        self.forwarder.on_connection(up)

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
            stage.observe(poll)
        if self.uplink_filter is not None:
            selected = self.uplink_filter.select(poll)
            if selected is None:
                return
            poll = selected
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

    def _device_state(self, device: str, up: bool, reason: str | None) -> None:
        doc: dict[str, object] = {"state": "up" if up else "down", "ts_ms": time.time_ns() // 10**6}
        if reason:
            doc["reason"] = reason
        self.sink.publish(self.topics.device_status(device), orjson.dumps(doc), retain=True)

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
        async with asyncio.TaskGroup() as outer:
            outer.create_task(self.sink.run(), name="sink:mqtt")
            for stage in self.stages:
                outer.create_task(stage.run(), name=f"stage:{stage.name}")
            try:
                async with asyncio.TaskGroup() as pollers:
                    for line in self.lines:
                        pollers.create_task(
                            run_line(
                                line.units,
                                emit=self.emit,
                                on_state=self._device_state,
                                frame_gap_s=line.frame_gap_s,
                            ),
                            name=f"line:{line.key}",
                        )
            finally:
                self.forwarder.flush()  # store the last polls before anything else
                await self.sink.close(
                    grace_s=self.grace_s,
                    final=[(self.topics.status, self._status_payload("offline", "stopped"))],
                )
                self.forwarder.close()  # commits the deletions the last acks asked for

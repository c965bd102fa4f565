"""The gateway's health, as `/healthz` reports it: is the uplink up, do the devices answer?

A gateway is unhealthy when its MQTT uplink has been down longer than the site's
`health.uplink_down_s`, when more than `health.max_devices_down_share` of its devices
have each been down (or in fault: answering with every point bad) longer than
`health.device_down_s`, or while its outbox cannot store (a full disk: readings are being
dropped, counted in `outbox_disk_full`). Short outages pass: a supervisor that restarts
the agent on every broker hiccup would only lose the readings in memory.

Times are the loop's monotonic clock, the one the poller stamps `Unit.down_since` with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.delivery.outbox import OutboxStats
from edge_agent.mqtt.sink import MqttSink
from edge_agent.ops.health_config import HealthConfig
from edge_agent.runtime.poller import Unit


class UplinkClock:
    """Since when the MQTT sink has been disconnected (from start, until it connects)."""

    def __init__(self, sink: MqttSink) -> None:
        self.sink = sink
        self.clock = asyncio.get_running_loop().time  # also callable from other threads
        self.down_since: float | None = self.clock()

    def down_for(self) -> float | None:
        """Seconds the uplink has been down, or None while it is up."""
        down_since = self.down_since
        if self.sink.connected or down_since is None:
            return None
        return self.clock() - down_since

    async def run_watch(self) -> None:
        """Follow the sink's connection until cancelled."""
        while True:
            await self.sink.wait_connected()
            self.down_since = None
            await self.sink.wait_disconnected()
            self.down_since = self.clock()


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The verdict and what it rests on; `problems` is empty when healthy."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    uplink_down_s: float | None = None
    devices_down: list[str] = field(default_factory=list)  # down longer than device_down_s
    devices: int = 0
    devices_fault: list[str] = field(default_factory=list)  # in fault longer than that
    # messages and readings the outbox could not store (a full disk), and since when now
    outbox_disk_full: dict[str, int | float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, the body of /healthz."""
        return {
            "ok": self.ok,
            "problems": self.problems,
            "uplink_down_s": None if self.uplink_down_s is None else round(self.uplink_down_s, 3),
            "devices_down": self.devices_down,
            "devices": self.devices,
            "devices_fault": self.devices_fault,
            "outbox_disk_full": self.outbox_disk_full,
        }


def check_health(
    config: HealthConfig,
    *,
    uplink_down_s: float | None,
    units: Sequence[Unit],
    now: float,
    outbox: OutboxStats | None = None,
) -> HealthReport:
    """Judge the gateway against the thresholds (see the module docstring)."""
    problems: list[str] = []
    if uplink_down_s is not None and uplink_down_s > config.uplink_down_s:
        problems.append(
            f"MQTT uplink down for {uplink_down_s:.0f} s (limit {config.uplink_down_s:g} s)"
        )
    down = [
        u.driver.name
        for u in units
        if u.stats.up is False and now - u.down_since > config.device_down_s
    ]
    fault = [
        u.driver.name
        for u in units
        if u.stats.up and u.stats.fault is not None and now - u.fault_since > config.device_down_s
    ]
    troubled = [*down, *fault]
    if units and len(troubled) / len(units) > config.max_devices_down_share:
        what = "down or in fault" if fault else "down"
        problems.append(
            f"{len(troubled)} of {len(units)} devices {what} for more than "
            f"{config.device_down_s:g} s (limit {config.max_devices_down_share:.0%} of devices): "
            f"{', '.join(troubled)}"
        )
    disk_full: dict[str, int | float | None] = {}
    if outbox is not None:
        since_ms = outbox.disk_full_since_ms
        for_s = None if since_ms is None else max(0.0, time.time() - since_ms / 1000)
        disk_full = {
            "messages": outbox.disk_full,
            "readings": outbox.disk_full_readings,
            "for_s": None if for_s is None else round(for_s, 3),
        }
        if for_s is not None:
            problems.append(
                f"outbox disk full for {for_s:.0f} s: readings are dropped "
                f"({outbox.disk_full} messages, {outbox.disk_full_readings} readings so far)"
            )
    return HealthReport(
        ok=not problems,
        problems=problems,
        uplink_down_s=uplink_down_s,
        devices_down=down,
        devices=len(units),
        devices_fault=fault,
        outbox_disk_full=disk_full,
    )

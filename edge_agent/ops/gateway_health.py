"""The gateway's own health as a data series: outbox depth, uplink, devices up.

Every `interval_s` the agent publishes a data message (schema v1) for the pseudo-device
`_gateway` on `{prefix}/{site}/{gateway}/_gateway/data`, through the outbox like any
reading. The ingest stores it like a meter's points, so dashboards read outbox depth and
age from the time-series store: a backlog that grows during an outage shows up there once
it is replayed, with the original timestamps.

The samples are taken at multiples of `interval_s` on the loop's clock (runtime/wake_grid.py),
where the polls also start: the sample rides a wake-up the pollers make anyway. The first
comes a whole interval after the start at least, as it always has.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edge_agent.delivery.outbox import OutboxStats
from edge_agent.runtime.wake_grid import next_multiple, sleep_to_multiple

if TYPE_CHECKING:
    from edge_agent.runtime.agent import Agent

GATEWAY_DEVICE = "_gateway"  # a leading underscore: no configured device can be named so
INTERVAL_S = 10.0


def gateway_doc(
    box: OutboxStats, *, mqtt_connected: bool, devices_up: int, devices: int
) -> dict[str, Any]:
    """The data message body (without the outlet's envelope) for one health sample."""

    def good(value: float | int | bool, unit: str | None = None) -> dict[str, Any]:
        return {"value": value, "unit": unit, "quality": "good"}

    return {
        "schema_version": 1,
        "device": GATEWAY_DEVICE,
        "points": {
            "outbox_messages": good(box.messages),
            "outbox_readings": good(box.readings),
            "outbox_bytes": good(box.bytes, "B"),
            "outbox_oldest_age_s": good(round(box.oldest_age_s() or 0.0, 3), "s"),
            "outbox_dropped": good(box.dropped),
            "mqtt_connected": good(mqtt_connected),
            "devices_up": good(devices_up),
            "devices": good(devices),
        },
    }


class GatewayHealth:
    """A stage that only ticks: it samples the agent, it does not look at polls."""

    name = "gateway-health"

    def __init__(self, agent: Agent, *, interval_s: float = INTERVAL_S) -> None:
        self.agent = agent
        self.interval_s = interval_s

    def observe(self, poll: object) -> None:
        """Nothing to do per poll."""

    async def run(self) -> None:
        """Publish one sample per interval until cancelled."""
        loop = asyncio.get_running_loop()
        first = next_multiple(loop.time() + self.interval_s, self.interval_s)
        await asyncio.sleep(first - loop.time())
        while True:
            agent = self.agent
            units = agent.units
            doc = gateway_doc(
                agent.outbox.stats,
                mqtt_connected=agent.sink.connected,
                devices_up=sum(1 for u in units if u.stats.up),
                devices=len(units),
            )
            agent.outlet.send(f"{GATEWAY_DEVICE}/data", doc, device=GATEWAY_DEVICE, readings=8)
            await sleep_to_multiple(self.interval_s)

"""Stages: what runs on every poll between the drivers and the uplink.

    driver ─► Poll ─┬─► every Stage.observe(poll)      (energy, alarms: see ALL readings)
                    └─► UplinkFilter.select(poll)      (report by exception: thins only
                          └─► data message ─► outbox     what goes up as data messages)

Stages see every reading, good and bad, before any uplink thinning, so a deadband on the
uplink can never change an energy total or hide an alarm. A stage publishes what it
derives through the `Outlet`: durable messages go through the outbox (QoS 1, sequence
numbered, replayed after an outage), retained state (e.g. the set of active alarms) is
published directly. A stage that needs time of its own (interval boundaries, stale-data
timers, shelving expiry) does it in `run()`, which the agent starts in its task group.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from drivers.reading import Poll
from edge_agent.delivery.forwarder import Forwarder
from edge_agent.mqtt.sink import MqttSink


class Stage(Protocol):
    """Sees every poll of every device, in poll order, on the agent's loop."""

    name: str

    def observe(self, poll: Poll) -> None:
        """Take one poll; must not block (no I/O beyond the outlet)."""

    async def run(self) -> None:
        """Timers of the stage; returns only when cancelled (may just wait forever)."""


class UplinkFilter(Protocol):
    """Decides what of a poll goes up as a data message."""

    def select(self, poll: Poll) -> Poll | None:
        """The poll to publish (possibly with fewer points), or None to publish nothing."""


class Outlet:
    """How stages publish: durable through the outbox, or retained state directly."""

    def __init__(
        self, *, base_topic: str, gateway: str, forwarder: Forwarder, sink: MqttSink
    ) -> None:
        self.base_topic = base_topic  # {prefix}/{site}/{gateway}
        self.gateway = gateway
        self._forwarder = forwarder
        self._sink = sink

    def send(
        self, suffix: str, doc: Mapping[str, Any], *, device: str = "", readings: int = 1
    ) -> int:
        """Publish `doc` as JSON on {base}/{suffix} through the outbox; returns its seq.

        The outlet adds "seq", "gateway", "historical": false and, when missing, "ts_ms",
        so derived messages carry the same envelope as data messages.
        """
        forwarder = self._forwarder
        seq = forwarder.next_seq()
        body = {
            "gateway": self.gateway,
            "seq": seq,
            "ts_ms": time.time_ns() // 1_000_000,
            "historical": False,
            **doc,
        }
        body["seq"] = seq
        payload = orjson.dumps(body)
        forwarder.submit(
            seq, f"{self.base_topic}/{suffix}", payload, device=device or suffix, readings=readings
        )
        return seq

    def retain(self, suffix: str, doc: Mapping[str, Any]) -> None:
        """Publish current state, retained, on {base}/{suffix} (not stored: the latest wins)."""
        self._sink.publish(f"{self.base_topic}/{suffix}", orjson.dumps(dict(doc)), retain=True)

"""The local status page: one HTML file and the JSON document it polls.

    GET /             static/status.html (inline CSS and script: no build step, nothing
                      fetched from elsewhere)
    GET /status.json  `status_doc`: gateway, uplink, outbox, health, every device with its
                      state and last values with their quality, active alarms, the
                      能耗在线监测 platform endpoints

The page fetches /status.json once a second and redraws its tables in place, so it stays
live without reloading; when the agent stops answering it says so and keeps trying.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from drivers.reading import Quality
from edge_agent import __version__
from edge_agent.ops.health import HealthReport
from edge_agent.ops.metrics import alarm_stage, platform_uplink
from edge_agent.runtime.poller import Unit
from edge_agent.uplink.platform import PlatformUplink

if TYPE_CHECKING:
    from edge_agent.runtime.agent import Agent


def page_html() -> bytes:
    """The status page, as shipped in the package."""
    return resources.files("edge_agent").joinpath("static/status.html").read_bytes()


def _device(unit: Unit, now: float) -> dict[str, Any]:
    s = unit.stats
    state = "starting" if s.up is None else ("down" if not s.up else "fault" if s.fault else "up")
    doc: dict[str, Any] = {
        "name": unit.driver.name,
        "state": state,
        "reason": s.reason,
        "down_s": round(now - unit.down_since, 1) if s.up is False else None,
        "interval_s": unit.interval_s,
        "polls": s.polls,
        "failures": s.failures,
        "overruns": s.overruns,
        "ts_ms": None,
        "points": [],
    }
    poll = s.last_poll
    if poll is not None:
        doc["ts_ms"] = poll.ts_ns // 1_000_000
        issues = poll.issues
        points = []
        for i, (spec, value) in enumerate(zip(poll.points, poll.values, strict=True)):
            quality, reason = issues.get(i, (Quality.GOOD, None))
            points.append(
                {
                    "name": spec.name,
                    "value": value,
                    "unit": spec.unit,
                    "quality": str(quality),
                    "reason": reason,
                }
            )
        doc["points"] = points
    return doc


def _endpoints(uplink: PlatformUplink, now: float) -> list[dict[str, Any]]:
    out = []
    for sender in uplink.senders:
        s = sender.stats
        name = sender.endpoint.name
        out.append(
            {
                "name": name,
                "state": "failing" if s.failing else "ok",
                # An HTTP status, a socket/TLS error or the platform's refusal (token
                # redacted); kept after a recovery, so it says what went wrong last.
                "last_error": s.last_error or None,
                "failing_s": None if s.failing_since is None else round(now - s.failing_since, 1),
                "queue_depth": uplink.store.depth(name),
                "requests": s.sent_requests,
                "acked": s.acked_records,
                "failures": s.failures,
                "last_ack_ms": s.last_ack_ms,
            }
        )
    return out


def status_doc(agent: Agent, *, health: HealthReport) -> dict[str, Any]:
    """What the status page shows, as one JSON-ready document."""
    site = agent.loaded.site
    now = asyncio.get_running_loop().time()
    box = agent.outbox.stats
    age = box.oldest_age_s()
    stage = alarm_stage(agent)
    # Every alarm not in the normal state (active, unacknowledged, shelved...), as retained
    # on .../alarms/active.
    alarms: list[dict[str, Any]] | None = None if stage is None else stage.active_doc()["alarms"]
    sink = agent.sink
    uplink = platform_uplink(agent)
    return {
        "site": site.site,
        "gateway": site.gateway,
        "version": __version__,
        "ts_ms": time.time_ns() // 1_000_000,
        "mqtt": {
            "url": sink.url,
            "connected": sink.connected,
            "down_s": None if health.uplink_down_s is None else round(health.uplink_down_s, 1),
            "published": sink.stats.published,
            "acked": sink.stats.acked,
            "pending": sink.stats.pending,
        },
        "outbox": {
            "messages": box.messages,
            "readings": box.readings,
            "bytes": box.bytes,
            "oldest_age_s": None if age is None else round(age, 1),
            "inflight": agent.forwarder.inflight,
            "dropped": box.dropped,
            "dropped_readings": box.dropped_readings,
            "disk_full": box.disk_full,  # messages that could not be stored
            "disk_full_readings": box.disk_full_readings,
            "disk_full_now": box.disk_full_since_ms is not None,
        },
        "health": health.as_dict(),
        "devices": [_device(u, now) for u in agent.units],
        "alarms": alarms,  # None: no device has an alarm rule
        # None: no `uplink:` block
        "platform_uplink": None if uplink is None else _endpoints(uplink, now),
    }

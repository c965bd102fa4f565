"""Helpers of the alarm tests: a site with alarm rules, driven by scripted polls.

`StageBench` builds a real Agent from a site file (real loader, real outbox, real alarm
store) without running it: the test feeds polls to the alarm stage itself, on a virtual
clock (looptime) where it wants exact times, and reads the transition messages back
from the outbox rows, where the stage put them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from drivers.reading import Poll, Quality, Value
from edge_agent.alarms.stage import AlarmStage
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent

EPOCH_NS = 1_780_000_000 * 10**9  # polls carry wall-clock stamps; these start here


def site_yaml(devices: str, *, extra: str = "", url: str = "mqtt://127.0.0.1:1") -> str:
    """A site file around a `devices:` block (indented by two spaces)."""
    return (
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{url}", prefix: t}}\n'
        "outbox: {path: var/outbox.sqlite}\n"
        f"{extra}"
        f"devices:\n{devices}"
    )


class FakeWall:
    """A wall clock in ms the test moves by hand (shelving expiry, operator stamps)."""

    def __init__(self) -> None:
        self.ms = EPOCH_NS // 1_000_000

    def __call__(self) -> int:
        return self.ms


class StageBench:
    """A site's alarm stage, fed by hand."""

    def __init__(self, tmp_path: Path, devices: str, *, extra: str = "") -> None:
        self.site = tmp_path / "site.yaml"
        if not self.site.exists():
            self.site.write_text(site_yaml(devices, extra=extra))
        self.wall = FakeWall()
        self.agent = Agent(load_config(self.site))
        stages = [s for s in self.agent.stages if isinstance(s, AlarmStage)]
        assert len(stages) == 1
        self.stage = stages[0]
        self.stage.wall_ms = self.wall
        self.points = {u.driver.name: u.driver.points for u in self.agent.units}

    def start(self) -> AlarmStage:
        """Open the outbox and restore the stage (what Agent.run and the stage's run do)."""
        self.agent.outbox.open()
        self.agent.forwarder.start()
        self.stage.restore()
        return self.stage

    def close(self) -> None:
        """Close the store and the outbox (a clean stop)."""
        self.stage.store.close()
        self.agent.forwarder.close()

    def poll(
        self,
        device: str,
        values: dict[str, Value],
        *,
        bad: dict[str, str] | None = None,
        uncertain: dict[str, str] | None = None,
    ) -> None:
        """One poll at the loop's (virtual) time; unnamed points read 0.0 and good."""
        points = self.points[device]
        row: list[Value] = []
        issues: dict[int, tuple[Quality, str]] = {}
        for i, p in enumerate(points):
            if bad and p.name in bad:
                row.append(None)
                issues[i] = (Quality.BAD, bad[p.name])
                continue
            row.append(values.get(p.name, 0.0))
            if uncertain and p.name in uncertain:
                issues[i] = (Quality.UNCERTAIN, uncertain[p.name])
        now = asyncio.get_running_loop().time()
        self.wall.ms = (EPOCH_NS + int(now * 1e9)) // 1_000_000
        self.stage.observe(Poll(device, EPOCH_NS + int(now * 1e9), points, row, issues))

    def all_bad(self, device: str, reason: str = "timeout") -> None:
        """The poll a poller emits when the device does not answer."""
        now = asyncio.get_running_loop().time()
        self.wall.ms = (EPOCH_NS + int(now * 1e9)) // 1_000_000
        self.stage.observe(
            Poll.all_bad(
                device, self.points[device], ts_ns=EPOCH_NS + int(now * 1e9), reason=reason
            )
        )

    def messages(self) -> list[dict[str, Any]]:
        """Every transition message in the outbox (nothing is acknowledged: no broker)."""
        box = self.agent.outbox
        box.flush()
        rows = box.rows_after(0, before_id=box.reserve_id(), limit=100_000)
        return [orjson.loads(r.payload) for r in rows if r.topic.endswith("/alarms")]

    def events(self, alarm_id: str | None = None) -> list[tuple[str, str]]:
        """(event, state) of the transitions so far, of one alarm or all."""
        return [
            (m["event"], m["state"])
            for m in self.messages()
            if alarm_id is None or m["id"] == alarm_id
        ]

    def command(self, **fields: Any) -> dict[str, Any]:
        """Apply a command as if it came from the broker; returns the reply."""
        fields.setdefault("operator", "li.wei")
        return self.stage.on_command("t/cmd", orjson.dumps(fields))


async def settle(seconds: float) -> None:
    """Let virtual time pass (looptime) without anything else happening."""
    await asyncio.sleep(seconds)


def monotonic_deadline(timeout_s: float) -> float:
    """A real-time deadline for polling a condition in end-to-end tests."""
    return time.monotonic() + timeout_s

"""Cost of the agent's metrics: per poll (the driver wrapper) and per scrape of /metrics.

    .venv/bin/python -m bench.metrics_run [--devices 500] [--polls 200000]

Per poll: a driver that answers at once, read through `MeteredDriver` and directly; the
difference is what observing latency, jitter and wire bytes adds to every poll. Per scrape:
an agent of N Modbus devices (never run, so no broker is needed) whose units carry
counters, rendered to the text format, and the size of the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from drivers.reading import PointSpec, Poll
from edge_agent.config.site import load_config
from edge_agent.ops.metrics import AgentMetrics, MeteredDriver
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poller import UnitStats


class _Instant:
    name = "d"
    points: tuple[PointSpec, ...] = (PointSpec("v"),)

    def __init__(self) -> None:
        self.poll = Poll("d", 0, self.points, [1.0])

    async def read(self) -> Poll:
        return self.poll

    async def close(self) -> None:
        return None


async def _per_poll(polls: int, metrics: AgentMetrics) -> tuple[float, float]:
    bare = _Instant()
    stats = UnitStats(jitter_s=[0.0001])
    wrapped = MeteredDriver(_Instant(), stats, metrics)
    timings = []
    for driver in (bare, wrapped):
        started = time.perf_counter()
        for _ in range(polls):
            await driver.read()
        timings.append((time.perf_counter() - started) / polls * 1e6)
    return timings[0], timings[1]


async def main(devices: int, polls: int) -> None:
    with TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yaml"
        lines = [
            "site: s", "gateway: g", 'mqtt: {url: "mqtt://127.0.0.1:1"}', "devices:",
            *(
                f"  - {{name: m{i}, driver: modbus, url: 'tcp://127.0.0.1:{10000 + i}', "
                "profile: chint-dtsu666}"
                for i in range(devices)
            ),
        ]  # fmt: skip
        site.write_text("\n".join(lines) + "\n")
        agent = Agent(load_config(site))
        metrics = AgentMetrics(agent, uplink_down_for=lambda: None)
        for n, unit in enumerate(agent.units):
            unit.stats.polls = unit.stats.good_polls = 1000 + n
            unit.stats.up = True
            metrics.latency.labels(unit.driver.name).observe(0.004)
        bare_us, wrapped_us = await _per_poll(polls, metrics)
        renders = 20
        started = time.perf_counter()
        for _ in range(renders):
            metrics.instrument()
            body = metrics.render()
        render_ms = (time.perf_counter() - started) / renders * 1e3
        print("| measure | value |\n|---|---:|")
        print(f"| read() of an instant driver, bare, µs | {bare_us:.2f} |")
        print(f"| read() through MeteredDriver, µs | {wrapped_us:.2f} |")
        print(f"| added per poll, µs | {wrapped_us - bare_us:.2f} |")
        print(f"| /metrics render, {devices} devices, ms | {render_ms:.1f} |")
        print(f"| /metrics size, {devices} devices, kB | {len(body) / 1000:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--polls", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.polls))

"""A device added by a config reload is measured from its first poll, without a timer.

simulators -> agent (with its HTTP port) -> real Mosquitto; the reload goes through
Agent.reload_file(), the metrics through a real scrape of /metrics.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.http_server import serving_http
from edge_agent.ops.metrics import MeteredDriver
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

PROFILE = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))


def _site(path: Path, broker: Mosquitto, prefix: str, urls: dict[str, str]) -> None:
    devices = "".join(
        f'  - {{name: {name}, driver: modbus, url: "{url}", device_id: {i + 1}, '
        "profile: chint-dtsu666, interval_s: 0.05}\n"
        for i, (name, url) in enumerate(urls.items())
    )
    path.write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}\n'
        f"outbox: {{path: outbox.sqlite}}\ndevices:\n{devices}"
    )


def _scrape(base: str, device: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels == {"device": device}
    }


async def test_a_device_added_by_a_reload_is_measured_from_its_first_poll(
    mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    specs = [
        SimDeviceSpec(name=n, url="tcp://127.0.0.1:0", profile=PROFILE, device_id=i + 1)
        for i, n in enumerate("ab")
    ]
    async with serve(specs) as sim:
        url = {n: sim.device(n).url for n in "ab"}
        site = tmp_path / "site.yaml"
        _site(site, mosquitto, unique_prefix, {"a": url["a"]})
        agent = Agent(load_config(site))
        async with serving_http(agent, "127.0.0.1", 0) as http:
            base = f"http://127.0.0.1:{http.server.address[1]}"
            task = asyncio.create_task(agent.run(), name="agent")
            try:
                await until(lambda: agent.units[0].stats.polls >= 3, what="a polled")
                _site(site, mosquitto, unique_prefix, {"a": url["a"], "b": url["b"]})
                plan = await agent.reload_file()
                assert plan is not None and plan.added == ("b",)
                # Wrapped when the reload returns: b's line started after the hook ran.
                assert [type(u.driver) for u in agent.units] == [MeteredDriver, MeteredDriver]
                b = next(u for u in agent.units if u.driver.name == "b")
                await until(lambda: b.stats.good_polls >= 5, what="b polled after the reload")
                m = await asyncio.to_thread(_scrape, base, "b")
                polls = m["edge_agent_polls_total"]
                assert polls >= 5
                # Every poll of b measured, its first one too (the line may be mid-poll).
                assert m["edge_agent_poll_jitter_seconds_count"] == polls
                assert polls - m["edge_agent_poll_latency_seconds_count"] in (0, 1)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # Closed: the HTTP side no longer hooks the agent's reloads.
        assert agent.on_units_changed == []

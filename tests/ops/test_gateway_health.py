"""The gateway's health series reaches the broker as an ordinary, schema-valid data message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.gateway_health import GATEWAY_DEVICE, GatewayHealth
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_text())


async def test_outbox_depth_and_devices_up_are_published_as_data(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    profile = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))
    spec = SimDeviceSpec(name="m1", url="tcp://127.0.0.1:0", profile=profile)
    async with serve([spec]) as sim:
        site = tmp_path / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            "outbox: {path: outbox.sqlite}\n"
            f"devices:\n  - {{name: m1, driver: modbus, url: '{sim.device('m1').url}', "
            "profile: chint-dtsu666, interval_s: 0.2}\n"
        )
        agent = Agent(load_config(site))
        (health,) = [s for s in agent.stages if isinstance(s, GatewayHealth)]
        health.interval_s = 0.2
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        topic = f"{unique_prefix}/plant-a/gw-01/{GATEWAY_DEVICE}/data"
        task = asyncio.create_task(agent.run())
        try:
            await until(
                lambda: any(
                    orjson.loads(m.payload)["points"]["devices_up"]["value"] == 1
                    for m in sub.messages
                    if m.topic == topic
                ),
                what="a health sample with the device up",
            )
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=15)
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic == topic]
    for doc in docs:
        jsonschema.validate(doc, SCHEMA)
        assert doc["device"] == GATEWAY_DEVICE and doc["gateway"] == "gw-01"
        assert set(doc["points"]) == {
            "outbox_messages",
            "outbox_readings",
            "outbox_bytes",
            "outbox_oldest_age_s",
            "outbox_dropped",
            "mqtt_connected",
            "devices_up",
            "devices",
        }
        assert doc["points"]["devices"]["value"] == 1
        assert doc["points"]["mqtt_connected"]["value"] is True
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(seqs)  # through the outbox, numbered with the data messages


@pytest.mark.looptime
async def test_samples_are_taken_at_multiples_of_the_interval_on_the_loop_clock(
    tmp_path: Path,
) -> None:
    """Where the polls wake (runtime/wake_grid.py), whenever the agent started; the first
    a whole interval after the start at least."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: plant-a\ngateway: gw-01\nmqtt: {url: 'mqtt://127.0.0.1:1', prefix: t}\n"
        "outbox: {path: outbox.sqlite}\n"
        "devices:\n  - {name: m1, driver: modbus, url: 'tcp://127.0.0.1:1', "
        "profile: chint-dtsu666, interval_s: 10}\n"
    )
    agent = Agent(load_config(site))
    (health,) = [s for s in agent.stages if isinstance(s, GatewayHealth)]
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, str]] = []

    def send(suffix: str, doc: dict[str, Any], **kw: Any) -> int:
        sent.append((loop.time(), doc["device"]))
        return 0

    agent.outlet.send = send  # type: ignore[method-assign]
    await asyncio.sleep(3.7)  # the agent starts off the grid
    task = asyncio.create_task(health.run())
    await asyncio.sleep(40)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sent == [(20.0, GATEWAY_DEVICE), (30.0, GATEWAY_DEVICE), (40.0, GATEWAY_DEVICE)]

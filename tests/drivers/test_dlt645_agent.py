"""DL/T 645 meters through the whole agent: config file -> agent -> real Mosquitto.

Two meters share one RTU-over-TCP line (a transparent serial converter); the values in
each data message must be exactly what the simulated meters serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import shipped_demo
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.dlt645.site import Dlt645MeterSpec, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

POINTS = [
    {"name": "import_kwh", "di": "00010000", "unit": "kWh"},
    {"name": "voltage_a", "di": "02010100", "unit": "V"},
]


def _data(sub: Subscriber, device: str) -> list[dict[str, Any]]:
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]
    return [d for d in docs if d["device"] == device]


async def test_two_meters_on_one_line_publish_what_they_serve(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    specs = [
        Dlt645MeterSpec(name="m1", url="rtu+tcp://127.0.0.1:0", address="000000123456", seed=1),
        Dlt645MeterSpec(name="m2", url="rtu+tcp://127.0.0.1:0", address="000000123457", seed=2),
    ]
    async with serve(specs) as sim:
        for name in ("m1", "m2"):
            sim.meter(name).freeze()
        url = sim.meter("m1").url
        assert url == sim.meter("m2").url  # one converter, one line
        devices = "\n".join(
            f"  - {orjson.dumps(d).decode()}"
            for d in (
                {
                    "name": "m1",
                    "driver": "dlt645",
                    "url": url,
                    "address": "000000123456",
                    "interval_s": 0.2,
                    "points": POINTS,
                },
                {
                    "name": "m2",
                    "driver": "dlt645",
                    "url": url,
                    "address": "000000123457",
                    "interval_s": 0.2,
                    "points": POINTS,
                },
            )
        )
        site = tmp_path / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            f"outbox: {{path: outbox.sqlite}}\ndevices:\n{devices}\n"
        )
        agent = Agent(load_config(site))
        assert [len(line.units) for line in agent.lines] == [2]
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        task = asyncio.create_task(agent.run())
        try:
            await until(
                lambda: len(_data(sub, "m1")) >= 2 and len(_data(sub, "m2")) >= 2, what="data"
            )
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=15)
        for name in ("m1", "m2"):
            meter = sim.meter(name)
            for doc in _data(sub, name):
                assert doc["points"] == {
                    "import_kwh": {
                        "value": meter.served(0x00010000),
                        "unit": "kWh",
                        "quality": "good",
                    },
                    "voltage_a": {
                        "value": meter.served(0x02010100),
                        "unit": "V",
                        "quality": "good",
                    },
                }


def test_simulated_meters_follow_the_site_tou_calendar() -> None:
    """`simulate` gives DL/T 645 meters the tariff of the demo's calendar (issue 10, item 4)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from edge_agent.cli.simulation import specs

    loaded = load_config(shipped_demo())
    (spec,) = specs(loaded, "dlt645")
    assert spec.tariff_at is not None
    shanghai = ZoneInfo("Asia/Shanghai")
    # example-tou, July: 03:00 valley (4), 08:30 flat (3), 10:00 peak (2), 21:00 sharp (1)
    at = {
        h: spec.tariff_at(dt.datetime(2026, 7, 15, h, m, tzinfo=shanghai))
        for h, m in ((3, 0), (8, 30), (10, 0), (21, 0))
    }
    assert at == {3: 4, 8: 3, 10: 2, 21: 1}
    # The same instant seen from UTC gives the same tariff: the calendar is local time.
    utc = dt.datetime(2026, 7, 15, 13, 0, tzinfo=dt.UTC)  # 21:00 in Shanghai
    assert spec.tariff_at(utc) == 1

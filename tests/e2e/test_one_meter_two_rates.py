"""One meter polled at two rates: two entries on one URL and unit id (issue 18 item 2).

Power every 0.2 s and counters every second from the same simulated unit, through the
agent and a real Mosquitto: each entry publishes at its own rate, both share one TCP
connection, and the simulator never sees a second request before the first is answered.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import ConfigError, load_config
from edge_agent.runtime.agent import Agent
from simulators.common.faults import FaultKind
from simulators.modbus.server import TcpListener
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running
from tests.waiting import until

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]

FAST = [
    {"name": "h_int16_abcd", "address": 2, "type": "int16"},
    {"name": "h_uint16_abcd", "address": 6, "type": "uint16"},
]
SLOW = [{"name": "h_int16_badc", "address": 3, "type": "int16", "order": "BADC"}]


def _data(sub: Subscriber, device: str) -> list[dict[str, Any]]:
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]
    return [d for d in docs if d["device"] == device]


def _median_gap_s(docs: list[dict[str, Any]]) -> float:
    stamps = [d["ts_ms"] for d in docs]
    return statistics.median(b - a for a, b in itertools.pairwise(stamps)) / 1000


async def test_two_entries_on_one_unit_poll_at_their_own_rates_over_one_connection(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    spec = SimDeviceSpec(
        name="plc",
        url="tcp://127.0.0.1:0",
        device_id=3,
        profile=load_profile(shipped(Kind.PROFILES) / "test-plc.yaml"),
        seed=7,
    )
    async with serve([spec]) as sim:
        device = sim.device("plc")
        device.freeze()
        # Each answer takes 50 ms: requests of the two entries would overlap if they could.
        device.faults.set(FaultKind.SLOW, delay_s=0.05)
        entries = [
            {"name": "meter-power", "points": FAST, "interval_s": 0.2},
            {"name": "meter-energy", "points": SLOW, "interval_s": 1.0},
        ]
        lines = [
            "site: plant-a",
            "gateway: gw-01",
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}',
            "devices:",
        ]
        for e in entries:
            e.update(driver="modbus", url=device.url, device_id=3)
            lines.append(f"  - {json.dumps(e)}")
        site = tmp_path / "site.yaml"
        site.write_text("\n".join(lines) + "\n")
        loaded = load_config(site)
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        agent = Agent(loaded)
        assert len(agent.lines) == 1 and len(agent.lines[0].units) == 2
        async with running(agent):
            await until(lambda: len(_data(sub, "meter-energy")) >= 4, what="4 slow polls")
        (listener,) = sim.listeners
        assert isinstance(listener, TcpListener)
        assert listener.accepted == 1
        assert listener.max_outstanding == 1

    served = device.served_values()
    fast, slow = _data(sub, "meter-power"), _data(sub, "meter-energy")
    for docs, points in ((fast, FAST), (slow, SLOW)):
        for doc in docs:
            got = {name: p["value"] for name, p in doc["points"].items()}
            assert got == {p["name"]: served[str(p["name"])] for p in points}
    assert len(fast) >= 4 * (len(slow) - 1)
    assert 0.15 <= _median_gap_s(fast) <= 0.25
    assert 0.9 <= _median_gap_s(slow) <= 1.1


def test_the_same_points_twice_on_one_unit_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    entry = {"driver": "modbus", "url": "tcp://10.0.0.7:502", "device_id": 3, "points": FAST}
    site.write_text(
        "site: plant-a\ngateway: gw-01\ndevices:\n"
        + "".join(f"  - {json.dumps({**entry, 'name': n})}\n" for n in ("a", "b"))
    )
    with pytest.raises(ConfigError) as info:
        load_config(site)
    (issue,) = info.value.issues
    assert issue.line == 5 and issue.path == "devices[1].device_id"
    assert "'a', which also reads holding register 2 (0x0002) of 'h_int16_abcd'" in issue.message

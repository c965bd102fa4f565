"""`edge-agent simulate` serving issue 22's S7 block -> the agent -> real Mosquitto.

The site file holds the block of issue 22 exactly as written, with only the URL pointed at
a free loopback port. The simulator runs as the user runs it (a child process, faults
through its HTTP control API); the agent runs in-process. Data messages must carry the
five points good; a deleted DB must make its points bad with the PLC's reason while MW20
stays good; STOP must make them uncertain; an unreachable CPU must show as the device down.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.server_process import free_port
from tests.running_agent import running

pytestmark = pytest.mark.timeout(60)

ISSUE_BLOCK = """\
- name: press-plc
  driver: s7
  url: s7://192.168.1.20         # port 102 unless given
  rack: 0                        # defaults per family are fine; these keys must exist
  slot: 1
  interval_s: 1.0
  points:                        # STEP 7 absolute addresses, as TIA Portal shows them
    - {name: oil_temp, address: DB1.DBD0, type: REAL, unit: degC}
    - {name: strokes, address: DB1.DBD4, type: DINT}
    - {name: pressure_raw, address: DB1.DBW8, type: INT}
    - {name: running, address: DB1.DBX10.0}
    - {name: mode, address: MW20, type: WORD}
"""


@pytest.fixture
def simulated(tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str) -> Iterator[Any]:
    port, control = free_port(), f"127.0.0.1:{free_port()}"
    block = ISSUE_BLOCK.replace("s7://192.168.1.20", f"s7://127.0.0.1:{port}")
    block = block.replace("interval_s: 1.0", "interval_s: 0.1\n  backoff_max_s: 0.3")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
        f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
        "devices:\n" + block
    )
    log = tmp_path / "simulate.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "simulate", str(site), "--control", control],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "serving press-plc" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"simulate did not start:\n{log.read_text()}")
            time.sleep(0.05)  # polling a file the child writes: no event to wait on
        yield site, control, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()


def fault(control: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{control}/devices/press-plc/fault", data=json.dumps(body).encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def data(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/press-plc/data")]


def states(sub: Subscriber) -> list[str]:
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/press-plc/status")]
    return [d["state"] for d in docs]


async def until(predicate: Callable[[], Any], *, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def test_issue_block_through_simulate_and_the_agent(
    simulated: Any,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
) -> None:
    site, control, log = simulated
    assert "serving press-plc (S7 CPU, DB1 (11 bytes))" in log.read_text()
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with running(Agent(load_config(site))):
        await until(lambda: len(data(sub)) >= 2, what="2 data messages")
        points = data(sub)[-1]["points"]
        assert list(points) == ["oil_temp", "strokes", "pressure_raw", "running", "mode"]
        assert {p["quality"] for p in points.values()} == {"good"}
        assert points["oil_temp"]["unit"] == "degC"
        assert isinstance(points["oil_temp"]["value"], float)
        assert isinstance(points["strokes"]["value"], int)
        assert isinstance(points["running"]["value"], bool)

        status = fault(control, {"fault": "missing_db", "db": 1})
        assert status["active_faults"] == ["missing_db 1"]
        await until(
            lambda: data(sub)[-1]["points"]["oil_temp"]["quality"] == "bad", what="DB1 gone"
        )
        points = data(sub)[-1]["points"]
        reason = "PLC item code 0x0A (object does not exist)"
        for name in ("oil_temp", "strokes", "pressure_raw", "running"):
            assert points[name] == {"value": None, "unit": points[name]["unit"],
                                    "quality": "bad", "reason": reason}  # fmt: skip
        assert points["mode"]["quality"] == "good"

        fault(control, {"fault": "none"})
        fault(control, {"fault": "stop"})
        await until(
            lambda: data(sub)[-1]["points"]["mode"]["quality"] == "uncertain",
            what="STOP seen",
            timeout_s=20,  # the CPU state is read every 10 s while running
        )
        assert data(sub)[-1]["points"]["mode"]["reason"] == "PLC in STOP (values are not updated)"
        fault(control, {"fault": "run"})
        await until(lambda: data(sub)[-1]["points"]["mode"]["quality"] == "good", what="RUN")

        fault(control, {"fault": "unreachable"})
        await until(lambda: states(sub)[-1:] == ["down"], what="device down")
        fault(control, {"fault": "none"})
        await until(lambda: states(sub)[-1:] == ["up"], what="device up again")

"""S7 writes (issue 22 item 4): through the same checked command path as Modbus writes.

The driver writes one variable with an S7 write-var job (bytes, or one bit for a BOOL),
reads it back and answers the value read; the simulated CPU stores what was written and
keeps it (a set-point the simulated process does not overwrite). End to end: a JSON request
on `.../press-plc/cmd` through a real Mosquitto, the reply with the value read back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.contract import WriteFailed, WriteRefused
from drivers.s7.config import S7Device
from drivers.s7.driver import S7Driver
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.s7.plc import SimPlc
from simulators.s7.server import S7Listener
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.running_agent import running
from tests.waiting import until

pytestmark = pytest.mark.timeout(30)

POINTS: list[dict[str, Any]] = [
    {"name": "setpoint", "address": "DB1.DBD0", "type": "REAL", "write": {"min": 0, "max": 100}},
    {"name": "count", "address": "DB1.DBW4", "type": "INT", "scale": 0.5, "write": {}},
    {"name": "enable", "address": "DB1.DBX6.3", "write": {}},
    {"name": "lamp", "address": "Q0.1", "write": {}},
    {"name": "recipe", "address": "DB2.DBB0", "type": "STRING[8]", "write": {}},
    {"name": "level", "address": "DB1.DBD8", "type": "REAL"},
]


def _device(port: int) -> S7Device:
    return S7Device.model_validate(
        {"name": "press-plc", "driver": "s7", "url": f"s7://127.0.0.1:{port}", "points": POINTS}
    )


@pytest.fixture
async def cpu() -> AsyncIterator[S7Listener]:
    listener = S7Listener(SimPlc.for_device(_device(102), seed=3), "127.0.0.1", 0)
    await listener.start()
    yield listener
    await listener.stop()


async def test_write_and_read_back_every_kind(cpu: S7Listener) -> None:
    driver = S7Driver(_device(cpu.port))
    try:
        assert await driver.write("setpoint", 42.5) == 42.5
        assert await driver.write("count", -7.5) == -7.5  # raw -15 at scale 0.5
        assert await driver.write("enable", True) is True
        assert await driver.write("lamp", True) is True
        assert await driver.write("recipe", "BATCH-7") == "BATCH-7"
        # The CPU keeps what was written: the next polls read it, and the other bits of the
        # byte that holds `enable` are untouched (a bit write, not a byte write).
        before = cpu.plc.memory[(0x84, 1)][6]
        assert await driver.write("enable", False) is False
        assert cpu.plc.memory[(0x84, 1)][6] == before & ~(1 << 3)
        poll = await driver.read()
        values = dict(zip([p.name for p in poll.points], poll.values, strict=True))
        assert values["setpoint"] == 42.5 and values["count"] == -7.5
        assert values["lamp"] is True and values["recipe"] == "BATCH-7"
        # Refused before anything is sent.
        for point, value, code in (
            ("count", 0.25, "out_of_range"),  # not a whole number of 0.5
            ("count", 20000, "out_of_range"),  # raw 40000 does not fit an INT
            ("enable", 1, "wrong_type"),
            ("setpoint", "1", "wrong_type"),
            ("level", 1.0, "not_writable"),
            ("nothing", 1.0, "unknown_point"),
        ):
            with pytest.raises(WriteRefused) as refused:
                await driver.write(point, value)
            assert refused.value.code == code, (point, value)
        # The CPU refuses: a missing DB is the PLC's return code, not a traceback.
        cpu.plc.missing.add(1)
        with pytest.raises(WriteFailed, match="object does not exist"):
            await driver.write("setpoint", 1.0)
    finally:
        await driver.close()


def test_inputs_are_not_writable() -> None:
    with pytest.raises(ValueError, match="inputs"):
        S7Device.model_validate(
            {
                "name": "p",
                "driver": "s7",
                "url": "s7://127.0.0.1",
                "points": [{"name": "i", "address": "I0.1", "write": {}}],
            }
        )


@pytest.mark.e2e
async def test_a_request_over_mqtt_is_written_and_answered(
    cpu: S7Listener,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
        "outbox: {path: outbox.sqlite}\nwrites: {enabled: true}\n"
        "devices:\n"
        f"  - name: press-plc\n    driver: s7\n    url: s7://127.0.0.1:{cpu.port}\n"
        "    interval_s: 0.2\n    points:\n" + "".join(f"      - {json.dumps(p)}\n" for p in POINTS)
    )
    base = f"{unique_prefix}/plant-a/gw-01/press-plc"
    replies = subscribe(mosquitto.host, mosquitto.port, f"{base}/cmd/reply")
    data = subscribe(mosquitto.host, mosquitto.port, f"{base}/data")
    async with running(Agent(load_config(tmp_path / "site.yaml"))):
        # The agent subscribes to its command topics before its first data goes up.
        await until(lambda: len(data.messages) >= 1, what="the first data message")
        for request in (
            {"id": "w-1", "point": "setpoint", "value": 55.5},
            {"id": "w-2", "point": "setpoint", "value": 155.0},
            {"id": "w-3", "point": "lamp", "value": True},
        ):
            publish_once(
                mosquitto.host, mosquitto.port, f"{base}/cmd", json.dumps(request).encode()
            )
        await until(lambda: len(replies.messages) >= 3, what="three replies")
    answers = {d["id"]: d for d in (json.loads(m.payload) for m in replies.messages)}
    assert answers["w-1"] == {"id": "w-1", "result": "done", "value": 55.5}
    assert answers["w-2"]["result"] == "rejected" and answers["w-2"]["reason"] == "above max 100"
    assert answers["w-3"] == {"id": "w-3", "result": "done", "value": True}
    # The CPU holds what was written: the simulated process no longer moves those points.
    assert "setpoint" in cpu.plc.held and "lamp" in cpu.plc.held

"""Simulated OPC UA PLC -> agent -> real Mosquitto -> a test subscriber.

The site file holds the device of issue 3 as written (subscription with deadband, poll by
numeric id), with the URL pointed at the session's simulated PLC. Every data message must
match the v1 schema and carry what the PLC serves; a bad status must arrive as quality
bad with the status name; a PLC restart must show as the device going down and up on its
retained status topic, with data flowing again afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.runtime.agent import Agent
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.opcua import PlcThread
from tests.opcua_support import epoch_ms, read_back
from tests.running_agent import running

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "edge_agent/schemas/data-v1.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

pytestmark = pytest.mark.timeout(40)

ISSUE_DEVICE = """\
  - name: plc-1
    driver: opcua
    url: {url}
    security: {security}   # or {{mode: None}}
    interval_s: 1.0
    points:
      - {{name: tank_temp, node: "nsu=urn:plant:plc;s=Tank1.Temperature", mode: subscribe,
         deadband: {{abs: 0.5}}, unit: degC}}
      - {{name: pump_run, node: "nsu=urn:plant:plc;i=1002", mode: poll}}
"""


def site(
    tmp_path: Path, broker: Mosquitto, prefix: str, device: str, **overrides: Any
) -> LoadedConfig:
    text = (
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}\n'
        f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
        "devices:\n" + device
    )
    for old, new in overrides.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path)


def data(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/plc-1/data")]


def states(sub: Subscriber) -> list[str]:
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/plc-1/status")]
    return [d["state"] for d in docs]


async def until(predicate: Callable[[], Any], *, timeout_s: float = 15.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def test_issue_device_through_the_agent_to_mosquitto(
    opcua_plc: PlcThread,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    await opcua_plc.call(plc.write, "s=Tank1.Temperature", 61.25)
    served = await opcua_plc.call(plc.values)
    loaded = site(
        tmp_path,
        mosquitto,
        unique_prefix,
        ISSUE_DEVICE.format(url=opcua_plc.url, security="{mode: None}"),
        **{"interval_s: 1.0": "interval_s: 0.1\n    backoff_max_s: 0.3"},
    )
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with running(Agent(loaded)):
        await until(lambda: len(data(sub)) >= 3, what="3 messages")
        for doc in data(sub):
            VALIDATOR.validate(doc)
        doc = data(sub)[-1]
        assert doc["points"] == {
            "tank_temp": {"value": 61.25, "unit": "degC", "quality": "good"},
            "pump_run": {
                "value": served["nsu=urn:plant:plc;i=1002"],
                "unit": None,
                "quality": "good",
            },
        }
        # The first message carried the times the PLC stamped the values (frozen: older
        # than the message); the later ones repeat them at the read time, as above.
        held = await read_back(opcua_plc.url, ["s=Tank1.Temperature", "i=1002"])
        temp_at = held["s=Tank1.Temperature"].SourceTimestamp
        pump_at = held["i=1002"].SourceTimestamp
        assert temp_at is not None and pump_at is not None
        assert {name: p.get("ts_ms") for name, p in data(sub)[0]["points"].items()} == {
            "tank_temp": epoch_ms(temp_at),
            "pump_run": epoch_ms(pump_at),
        }

        await opcua_plc.call(plc.set_status, "i=1002", "BadDeviceFailure")
        await until(
            lambda: data(sub)[-1]["points"]["pump_run"]["quality"] == "bad", what="bad status"
        )
        assert data(sub)[-1]["points"]["pump_run"] == {
            "value": None,
            "unit": None,
            "quality": "bad",
            "reason": "BadDeviceFailure",
        }
        assert data(sub)[-1]["points"]["tank_temp"]["quality"] == "good"
        await opcua_plc.call(plc.set_status, "i=1002", None)

        await opcua_plc.call(plc.restart)
        await until(lambda: states(sub)[-2:] == ["down", "up"], what="down, then up")
        mark = len(data(sub))
        await opcua_plc.call(plc.write, "s=Tank1.Temperature", 70.0)
        await until(
            lambda: any(d["points"]["tank_temp"]["value"] == 70.0 for d in data(sub)[mark:]),
            what="a new value after the restart",
        )
    down = [d for d in data(sub) if d["points"]["tank_temp"]["quality"] == "bad"]
    assert down and down[0]["points"]["tank_temp"]["reason"] == "connection lost"
    seqs = [d["seq"] for d in data(sub)]
    assert seqs == sorted(seqs)


async def test_sign_and_encrypt_device_through_the_agent(
    opcua_plc: PlcThread,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    """The issue's SignAndEncrypt line as written; trust set up as an engineer would."""
    server_der = opcua_plc.plc.server_certificate
    assert server_der is not None
    trusted = tmp_path / "pki" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "plc-1.der").write_bytes(server_der)
    loaded = site(
        tmp_path,
        mosquitto,
        unique_prefix,
        ISSUE_DEVICE.format(
            url=opcua_plc.url, security="{mode: SignAndEncrypt, policy: Basic256Sha256}"
        ),
        **{"interval_s: 1.0": "interval_s: 0.1\n    backoff_max_s: 0.2"},
    )
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with running(Agent(loaded)):
        # The gateway made its certificate; the PLC refuses it until it is trusted there.
        await until(lambda: states(sub)[-1:] == ["down"], what="refused first")
        status = [
            orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/plc-1/status")
        ]
        assert status[-1]["reason"] == "BadCertificateUntrusted"
        opcua_plc.trust(tmp_path / "pki" / "own" / "cert.der")
        await until(lambda: states(sub)[-1:] == ["up"], what="up once trusted")
        mark = len(data(sub))
        await until(lambda: len(data(sub)) >= mark + 2, what="data")
    good = data(sub)[-1]
    assert {p["quality"] for p in good["points"].values()} == {"good"}

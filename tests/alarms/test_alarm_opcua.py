"""The simulated PLC's gas detector -> agent alarms -> real Mosquitto -> ingest -> SQLite.

One site file runs both the agent (an OPC UA device whose gas point carries the GB/T 50493
`gas_lel` preset) and the ingest (embedded store). The test freezes the simulated PLC and
serves the detector's %LEL itself: above 25 %LEL raises `lel_1`; an operator acknowledges
it over MQTT; the gas goes away (the preset latches) and the operator resets it. Every
transition must reach the broker, be answered where it was a command, and be ingested
with its operator and comment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.config.site import load_config
from edge_agent.ingest.embedded_store import read_alarms
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.runtime.agent import Agent
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.fixtures.opcua import PlcThread
from tests.ingest_support import running, until
from tests.running_agent import running as agent_running

pytestmark = pytest.mark.timeout(60)

LEL_NODE = "s=GasDetector1.LEL"
LEL_1 = "plc-1/gas/lel_1"
SITE = """\
site: plant-a
gateway: gw-01
mqtt: {{url: "{broker}", prefix: "{prefix}"}}
outbox: {{path: {tmp}/outbox.sqlite}}
ingest: {{store: {tmp}/edge.sqlite, flush_interval_s: 0.05}}
devices:
  - name: plc-1
    driver: opcua
    url: {url}
    security: {{mode: None}}
    interval_s: 0.1
    backoff_max_s: 0.3
    points:
      - {{name: gas, node: "nsu=urn:plant:plc;s=GasDetector1.LEL", mode: poll, unit: "%LEL",
         alarms: [{{preset: gas_lel}}]}}
"""


def docs(sub: Subscriber, suffix: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(suffix)]


def stored(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [(r["alarm_id"], r["event"], r["state"]) for r in read_alarms(path)]


async def command(
    broker: Mosquitto, sub: Subscriber, base: str, request_id: str, **fields: str
) -> dict[str, Any]:
    """Send one operator command over MQTT and return its reply."""
    body = {"id": LEL_1, "operator": "zhang.min", "request_id": request_id, **fields}
    publish_once(broker.host, broker.port, f"{base}/alarms/cmd", orjson.dumps(body))
    await until(
        lambda: any(d.get("request_id") == request_id for d in docs(sub, "/alarms/cmd/reply")),
        f"the reply to {request_id}",
    )
    return next(d for d in docs(sub, "/alarms/cmd/reply") if d["request_id"] == request_id)


async def test_gas_detector_alarm_is_ingested_acknowledged_and_reset_over_mqtt(
    opcua_plc: PlcThread,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    plc = opcua_plc.plc
    await opcua_plc.call(plc.freeze)
    await opcua_plc.call(plc.write, LEL_NODE, 2.0)
    path = tmp_path / "site.yaml"
    path.write_text(
        SITE.format(broker=mosquitto.url, prefix=unique_prefix, tmp=tmp_path, url=opcua_plc.url)
    )
    loaded = load_config(path)
    db = store_path(loaded)
    base = f"{unique_prefix}/plant-a/gw-01"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{base}/#")
    ingest = Ingest(loaded, worker="gas")
    async with running(ingest), agent_running(Agent(loaded)):
        await until(
            lambda: any(d["points"]["gas"]["value"] == 2.0 for d in docs(sub, "/plc-1/data")),
            "a reading of 2 %LEL",
        )
        assert docs(sub, "/alarms") == []

        await opcua_plc.call(plc.write, LEL_NODE, 30.0)  # over level 1 (25), under level 2 (50)
        await until(lambda: stored(db) == [(LEL_1, "raise", "active_unack")], "raise ingested")
        raised = docs(sub, "/alarms")[0]
        assert (raised["id"], raised["value"], raised["unit"], raised["priority"]) == (
            LEL_1,
            30.0,
            "%LEL",
            2,
        )

        reply = await command(mosquitto, sub, base, "c-1", cmd="ack", comment="evacuated bay 3")
        assert (reply["ok"], reply["cmd"], reply["id"]) == (True, "ack", LEL_1)
        assert (reply["alarm"]["state"], reply["alarm"]["acked"]) == ("active_ack", True)
        await until(lambda: len(stored(db)) == 2, "ack ingested")

        # The preset latches: once the gas is gone it waits for a reset.
        await opcua_plc.call(plc.write, LEL_NODE, 1.5)
        await until(lambda: len(stored(db)) == 3, "clear ingested")
        reply = await command(mosquitto, sub, base, "c-2", cmd="reset", comment="sensor bumped")
        assert (reply["ok"], reply["alarm"]["state"]) == (True, "normal")
        await until(lambda: len(stored(db)) == 4, "reset ingested")
        await until(lambda: ingest.stats.unacked == 0, "every transition acknowledged")

    assert stored(db) == [
        (LEL_1, "raise", "active_unack"),
        (LEL_1, "ack", "active_ack"),
        (LEL_1, "clear", "latched"),
        (LEL_1, "reset", "normal"),
    ]
    rows = read_alarms(db)
    # What the broker carried is what the store holds, in the gateway's order.
    published = docs(sub, "/alarms")
    assert [r["seq"] for r in rows] == [d["seq"] for d in published]
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert [(r["operator"], r["comment"]) for r in rows] == [
        (None, None),
        ("zhang.min", "evacuated bay 3"),
        (None, None),
        ("zhang.min", "sensor bumped"),
    ]
    assert (rows[0]["value"], rows[2]["value"]) == (30.0, 1.5)
    assert {(r["site"], r["device"], r["point"], r["alarm"], r["priority"]) for r in rows} == {
        ("plant-a", "plc-1", "gas", "lel_1", 2)
    }
    assert rows[0]["message"] and rows[0]["unit"] == "%LEL"
    assert ingest.rejects.total == 0

"""OPC UA writes: the driver against the simulated PLC, and a request over MQTT end to end.

The simulated PLC (tests/fixtures/opcua.py) has writable set-points with AccessLevel
CurrentRead|CurrentWrite, read-only process values, and answers a Write as a PLC's server
does: BadNotWritable, BadUserAccessDenied, BadTypeMismatch, BadOutOfRange (outside the
node's EURange), BadWriteNotSupported (a DataValue with timestamps). Line2.Flow follows
Line2.FlowSetpoint while Pump2 runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from asyncua import ua
from asyncua.client.client import Client

from drivers.contract import WriteFailed, WriteRefused
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver
from drivers.reading import DeviceUnreachable
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.common.contract import SimulatedDevice
from simulators.opcua.server import serve_opcua
from simulators.opcua.simulator import SIMULATOR
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.fixtures.opcua import PlcThread, TcpProxy
from tests.running_agent import running

pytestmark = pytest.mark.timeout(45)

NS = "urn:plant:plc"
SCHEMA = orjson.loads(
    (Path(__file__).resolve().parents[2] / "edge_agent/schemas/command-v1.schema.json").read_bytes()
)
REPLY = jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/reply"})
AUDIT = jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/audit"})

POINTS: list[dict[str, Any]] = [
    {"name": "flow_sp", "node": f"nsu={NS};s=Line2.FlowSetpoint", "write": {"min": 0, "max": 40}},
    {"name": "flow", "node": f"nsu={NS};s=Line2.Flow"},
    {"name": "pump_run", "node": f"nsu={NS};i=1004", "write": {}},
    {"name": "speed", "node": f"nsu={NS};s=Mixer1.Speed", "write": {"max": 1500}},
    {"name": "ratio", "node": f"nsu={NS};s=Dosing1.Ratio", "type": "Float", "write": {}},
    {"name": "recipe", "node": f"nsu={NS};s=PLC1.Recipe", "write": {}},
    {"name": "recipe_by_path", "path": "PLC1/Recipe", "namespace": NS, "write": {}},
    {"name": "interval", "node": f"nsu={NS};s=Dosing1.Interval", "write": {}},  # Duration
    {"name": "profile", "node": f"nsu={NS};s=Line2.Profile", "write": {}},  # Double[]
    {"name": "speed_hz", "node": f"nsu={NS};s=Mixer1.Speed", "scale": 0.1, "write": {}},
    {"name": "speed_sub", "node": f"nsu={NS};s=Mixer1.Speed", "mode": "subscribe", "write": {}},
    {"name": "missing", "path": "PLC1/Nothing", "namespace": NS, "write": {}},
    # The config claims these writable; the PLC knows better.
    {"name": "flow_w", "node": f"nsu={NS};s=Line2.Flow", "write": {}},
    {"name": "flow_limit", "node": f"nsu={NS};s=Line2.FlowLimit", "write": {}},
    {"name": "speed_wide", "node": f"nsu={NS};s=Mixer1.Speed", "write": {}},
    {"name": "status", "node": f"nsu={NS};s=PLC1.Status", "type": "Int32", "write": {}},
    {"name": "counter", "node": f"nsu={NS};i=1001", "scale": 0.5, "write": {}},
]


def _device(url: str, points: list[dict[str, Any]] = POINTS, **kw: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {"name": "plc-1", "driver": "opcua", "url": url, **kw, "points": points}
    )


async def _until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


async def _setpoints(plc: PlcThread) -> dict[str | int, object]:
    return dict(await plc.call(lambda: plc.plc.setpoints))


async def test_every_kind_is_written_to_the_node_type_and_read_back(opcua_plc: PlcThread) -> None:
    driver = OpcUaDriver(_device(opcua_plc.url))
    try:
        assert await driver.write("flow_sp", 32.5) == 32.5
        assert await driver.write("flow_sp", 30) == 30.0  # a JSON 30 to a Double node
        assert await driver.write("speed", 900) == 900
        assert await driver.write("ratio", 42.5) == 42.5  # a Float node
        assert await driver.write("recipe_by_path", "BATCH-6") == "BATCH-6"
        assert await driver.write("recipe", "BATCH-7") == "BATCH-7"
        assert await driver.write("interval", 2000) == 2000.0  # Duration: a Double
        assert await driver.write("speed_hz", 65.5) == 65.5  # raw 655 at scale 0.1
        assert (await _setpoints(opcua_plc))["Mixer1.Speed"] == 655
        # A subscribed point's cache follows through the server's notification.
        assert await driver.write("speed_sub", 901) == 901
        await read_until(driver, lambda values: values["speed_sub"] == 901)
        assert await driver.write("pump_run", False) is False
        held = await _setpoints(opcua_plc)
        assert held == {
            "Line2.FlowSetpoint": 30.0,
            "Mixer1.Speed": 901,
            "Dosing1.Ratio": 42.5,
            "PLC1.Recipe": "BATCH-7",
            "Dosing1.Interval": 2000.0,
            1004: False,
        }
        # The types on the server are the nodes' own: a Write of another type would have
        # been refused (BadTypeMismatch), so the conversion is what made these land.
        assert type(held["Mixer1.Speed"]) is int and type(held["Line2.FlowSetpoint"]) is float
        # The next poll reads what was written.
        poll = await driver.read()
        values = dict(zip([p.name for p in poll.points], poll.values, strict=True))
        assert (values["flow_sp"], values["speed"], values["ratio"]) == (30.0, 901, 42.5)
        assert (values["recipe"], values["pump_run"]) == ("BATCH-7", False)
    finally:
        await driver.close()


async def read_until(driver: OpcUaDriver, predicate: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 5
    while True:
        poll = await driver.read()
        if predicate(dict(zip([p.name for p in poll.points], poll.values, strict=True))):
            return
        assert time.monotonic() < deadline, f"no poll matched; last: {poll.values}"
        await asyncio.sleep(0.02)  # polling the driver, bounded by the deadline


async def test_the_flow_follows_its_set_point(opcua_plc: PlcThread) -> None:
    driver = OpcUaDriver(_device(opcua_plc.url))

    async def flow() -> float:
        poll = await driver.read()
        value = poll.values[[p.name for p in poll.points].index("flow")]
        assert isinstance(value, float)
        return value

    try:
        assert await driver.write("pump_run", True) is True
        for target in (35.0, 8.0):
            assert await driver.write("flow_sp", target) == target
            deadline = time.monotonic() + 5
            while abs(await flow() - target) > 0.006 * target:
                assert time.monotonic() < deadline, f"the flow did not follow {target}"
                await asyncio.sleep(0.02)  # polling the simulated process, bounded
        assert await driver.write("pump_run", False) is False
        deadline = time.monotonic() + 5
        while await flow() != 0.0:
            assert time.monotonic() < deadline, "the flow did not stop with the pump"
            await asyncio.sleep(0.02)
    finally:
        await driver.close()


async def test_values_the_node_cannot_hold_are_refused_before_sending(
    opcua_plc: PlcThread,
) -> None:
    driver = OpcUaDriver(_device(opcua_plc.url))
    try:
        for point, value, code, reason in (
            ("speed", 3.5, "wrong_type", "3.5 cannot be written exactly"),
            ("speed", 2**31, "out_of_range", "2147483648 is outside the range of Int32"),
            ("pump_run", 2, "wrong_type", "pump_run takes true or false"),
            ("flow_sp", "42", "wrong_type", "flow_sp takes a number"),
            ("ratio", 1e39, "out_of_range", "outside the range of Float"),
            ("recipe", 7, "wrong_type", "recipe takes text"),
            ("counter", 0.25, "wrong_type", "steps of 0.5"),
            ("status", 1, "wrong_type", "the config says status is Int32, the node is String"),
            ("profile", 1.0, "wrong_type", "profile is an array node: arrays are not written"),
            ("flow", 1.0, "not_writable", "'flow' has no write: in the config"),
            ("nothing", 1.0, "unknown_point", "no point 'nothing'"),
        ):
            with pytest.raises(WriteRefused) as refused:
                await driver.write(point, value)
            assert refused.value.code == code, (point, value)
            assert reason in refused.value.reason, (point, value)
        # The declared type is checked offline too (the command path asks before queueing).
        with pytest.raises(WriteRefused, match="outside the range of Float"):
            driver.check_write("ratio", 1e39)
        assert await _setpoints(opcua_plc) == {}
    finally:
        await driver.close()


async def test_the_plc_refusal_is_the_failure_reason(opcua_plc: PlcThread) -> None:
    driver = OpcUaDriver(_device(opcua_plc.url))
    try:
        for point, value, status in (
            ("flow_w", 1.0, "BadNotWritable"),  # read-only node (AccessLevel CurrentRead)
            ("flow_limit", 10.0, "BadUserAccessDenied"),  # UserAccessLevel read-only
            ("speed_wide", 2000, "BadOutOfRange"),  # beyond the node's EURange 0-1500
            ("missing", 1.0, "node not resolved: BadNoMatch"),  # nothing at that path
        ):
            with pytest.raises(WriteFailed) as failed:
                await driver.write(point, value)
            assert failed.value.reason == status
        assert await _setpoints(opcua_plc) == {}
        # The session survives a refusal: the next write goes through on it.
        assert await driver.write("speed_wide", 1500) == 1500
        assert driver.stats.sessions == 1
    finally:
        await driver.close()


async def test_a_user_without_write_rights_is_refused_by_the_server(
    opcua_plc: PlcThread, tmp_path: Path
) -> None:
    from tests.fixtures.opcua import OPCUA_PASSWORD, OPCUA_USER

    security = {
        "mode": "SignAndEncrypt",
        "cert_file": str(tmp_path / "pki/own/cert.der"),
        "key_file": str(tmp_path / "pki/own/key.pem"),
        "trust_dir": str(tmp_path / "pki/trusted"),
        "rejected_dir": str(tmp_path / "pki/rejected"),
        "server_cert": str(opcua_plc.plc.certificate_file),
    }
    device = _device(
        opcua_plc.url,
        [POINTS[3]],
        security=security,
        username=OPCUA_USER,
        password=OPCUA_PASSWORD,
    )
    driver = OpcUaDriver(device)
    try:
        with pytest.raises(DeviceUnreachable, match="BadCertificateUntrusted"):
            await driver.read()  # makes the client certificate, which the PLC must trust
        opcua_plc.trust(tmp_path / "pki/own/cert.der")
        assert await driver.write("speed", 700) == 700
        await opcua_plc.call(lambda: opcua_plc.plc.read_only_users.add(OPCUA_USER))
        with pytest.raises(WriteFailed) as failed:
            await driver.write("speed", 800)
        assert failed.value.reason == "BadUserAccessDenied"
        assert (await _setpoints(opcua_plc))["Mixer1.Speed"] == 700
    finally:
        await opcua_plc.call(lambda: opcua_plc.plc.read_only_users.clear())
        await driver.close()


async def test_the_write_carries_the_value_alone(opcua_plc: PlcThread) -> None:
    """What a careless client sends is refused by the PLC; the driver's write is not."""
    client = Client(opcua_plc.url, timeout=5)
    await client.connect()
    try:
        ns = await client.get_namespace_index(NS)
        node = client.get_node(ua.NodeId("Mixer1.Speed", ns))
        with pytest.raises(ua.uaerrors.BadWriteNotSupported):
            await node.write_value(ua.Variant(700, ua.VariantType.Int32))  # adds a timestamp
        bare: Any = None
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await node.write_value(
                ua.DataValue(ua.Variant(700.0, ua.VariantType.Double), StatusCode=bare)
            )
        await node.write_value(ua.DataValue(ua.Variant(700, ua.VariantType.Int32), StatusCode=bare))
        assert await node.read_value() == 700
    finally:
        await client.disconnect()
    driver = OpcUaDriver(_device(opcua_plc.url))
    try:
        assert await driver.write("speed", 650) == 650
    finally:
        await driver.close()


async def test_no_answer_is_a_timeout_failure(
    opcua_plc: PlcThread, tcp_proxy: Callable[..., Any]
) -> None:
    proxy: TcpProxy = await tcp_proxy("127.0.0.1", opcua_plc.plc.port)
    driver = OpcUaDriver(_device(proxy.url(), timeout_s=0.5))
    try:
        await driver.read()
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(DeviceUnreachable) as unreachable:
            await driver.write("speed", 700)
        assert unreachable.value.reason == "timeout"
        assert time.monotonic() - started < 5
        proxy.restore()
        # The session was dropped; the next write opens a new one.
        assert await driver.write("speed", 710) == 710
        assert driver.stats.sessions == 2
    finally:
        await driver.close()


SITE = """\
site: plant-a
gateway: gw-01
mqtt: {{url: "{broker}", prefix: "{prefix}"}}
outbox: {{path: outbox.sqlite}}
writes: {{enabled: true}}
devices:
  - name: plc-1
    driver: opcua
    url: {url}
    interval_s: 0.2
    timeout_s: 1.0
    points:
"""


@pytest.mark.e2e
async def test_a_request_over_mqtt_is_written_read_back_answered_and_audited(
    opcua_plc: PlcThread,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "site.yaml").write_text(
        SITE.format(broker=mosquitto.url, prefix=unique_prefix, url=opcua_plc.url)
        + "".join(f"      - {json.dumps(p)}\n" for p in POINTS)
    )
    base = f"{unique_prefix}/plant-a/gw-01/plc-1"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{base}/cmd/#")
    data = subscribe(mosquitto.host, mosquitto.port, f"{base}/data")

    def docs(suffix: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(suffix)]

    requests: list[dict[str, Any]] = [
        {"id": "o-1", "point": "flow_sp", "value": 25.5, "by": "li.wei"},
        {"id": "o-2", "point": "flow_sp", "value": 45},
        {"id": "o-3", "point": "flow", "value": 1.0},
        {"id": "o-4", "point": "speed", "value": 3.5},
        {"id": "o-5", "point": "flow_w", "value": 1.0},
        {"id": "o-6", "point": "flow_limit", "value": 10.0},
        {"id": "o-7", "point": "pump_run", "value": True},
    ]
    async with running(Agent(load_config(tmp_path / "site.yaml"))):
        await _until(lambda: len(data.messages) >= 1, what="the first data message")
        for request in requests:
            publish_once(mosquitto.host, mosquitto.port, f"{base}/cmd", orjson.dumps(request))
        await _until(lambda: len(docs("/cmd/reply")) >= len(requests), what="every reply")
        await _until(lambda: len(docs("/cmd/audit")) >= 2 * len(requests), what="the audits")
    replies = {d["id"]: d for d in docs("/cmd/reply")}
    for reply in replies.values():
        REPLY.validate(reply)
    assert replies["o-1"] == {"id": "o-1", "result": "done", "value": 25.5}
    assert replies["o-2"]["result"] == "rejected" and replies["o-2"]["reason"] == "above max 40"
    assert (replies["o-3"]["result"], replies["o-3"]["code"]) == ("rejected", "not_writable")
    assert (replies["o-4"]["result"], replies["o-4"]["code"]) == ("rejected", "wrong_type")
    assert "3.5 cannot be written exactly" in replies["o-4"]["reason"]
    assert replies["o-5"] == {"id": "o-5", "result": "failed", "reason": "BadNotWritable"}
    assert replies["o-6"] == {"id": "o-6", "result": "failed", "reason": "BadUserAccessDenied"}
    assert replies["o-7"] == {"id": "o-7", "result": "done", "value": True}
    # Requests for one device run in arrival order; each has its request and result audit.
    audits = docs("/cmd/audit")
    for audit in audits:
        AUDIT.validate(audit)
    results = [a for a in audits if a["event"] == "result"]
    assert sorted(a["id"] for a in results) == [r["id"] for r in requests]
    done = next(a for a in results if a["id"] == "o-1")
    assert (done["by"], done["point"], done["result"]) == ("li.wei", "flow_sp", "done")
    assert (done["old_value"], done["new_value"]) == (20.0, 25.5)
    failed = next(a for a in results if a["id"] == "o-5")
    assert (failed["result"], failed["reason"]) == ("failed", "BadNotWritable")
    held = await _setpoints(opcua_plc)
    assert held == {"Line2.FlowSetpoint": 25.5, 1004: True}


async def test_simulate_makes_the_nodes_a_config_writes_writable(tmp_path: Path) -> None:
    """`edge-agent simulate` for a site whose own nodes the PLC model lacks: the ones the
    config writes take writes and hold them; the others stay read-only."""
    points: list[dict[str, Any]] = [
        {"name": "tank_sp", "node": "nsu=urn:site:own;s=Tank9.Setpoint", "write": {}},
        {"name": "tank_level", "node": "nsu=urn:site:own;s=Tank9.Level", "write": {}},
        {"name": "tank_temp", "node": "nsu=urn:site:own;s=Tank9.Temp"},
    ]
    device = _device("opc.tcp://127.0.0.1:4840", points)
    (spec,) = SIMULATOR.specs(
        [SimulatedDevice(device, None, "")], site_dir=tmp_path, tariff_at=None
    )
    assert [str(ref) for ref in spec.writable_nodes] == [
        "nsu=urn:site:own;s=Tank9.Setpoint",
        "nsu=urn:site:own;s=Tank9.Level",
    ]
    # As if the config wrote only the set-point (and on a free port).
    spec = dataclasses.replace(
        spec, url="opc.tcp://127.0.0.1:0", writable_nodes=spec.writable_nodes[:1]
    )
    async with serve_opcua([spec]) as site:
        sim = site.device("plc-1")
        driver = OpcUaDriver(_device(sim.url, points))
        try:
            assert await driver.write("tank_sp", 61.5) == 61.5
            with pytest.raises(WriteFailed, match=r"^BadNotWritable$"):
                await driver.write("tank_level", 1.0)
            poll = await driver.read()
            assert poll.values[0] == 61.5  # held, no longer moving
            assert sim.setpoints == {"Tank9.Setpoint": 61.5}
        finally:
            await driver.close()

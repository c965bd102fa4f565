"""Sparkplug from the host's side: a plant that runs only Sparkplug still fills the store
(issue 23 item 6), and a host's DCMD writes take the checked command path (item 4).

The agent is a Sparkplug edge node with `json: false` (no JSON data messages at all), polling
two simulated devices (a meter and the test PLC, whose signed 16-bit points go negative)
through a real Mosquitto; the ingest reads the node's DBIRTH and DDATA from the same broker
into the embedded store. Every reading a Sparkplug host saw in DDATA is stored under the
site's site and gateway, the device and the metric name, with the same value, the unit the
birth declared and the poll's time; no JSON data message was published.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ingest.embedded_store import read_points
from edge_agent.ingest.service import Ingest
from edge_agent.runtime.agent import Agent
from edge_agent.sparkplug.datatypes import FLOAT, INT16
from edge_agent.sparkplug.payload import decode, pb
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.ingest_support import running as ingesting
from tests.running_agent import running
from tests.waiting import until

pytestmark = pytest.mark.timeout(90)

SIGNED = {1: 32, 2: 32, 3: 32, 4: 64}  # Int8/16/32 in int_value, Int64 in long_value


def _value(metric: Any, datatype: int) -> Any:
    if metric.is_null:
        return None
    value = getattr(metric, metric.WhichOneof("value"))
    bits = SIGNED.get(datatype)
    if bits and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


async def test_ddata_is_stored_as_readings_of_the_site(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    group = unique_prefix.split("/")[-1]
    specs = [
        SimDeviceSpec(
            name="meter",
            url="tcp://127.0.0.1:0",
            device_id=1,
            profile=load_profile(shipped(Kind.PROFILES, "chint-dtsu666")),
            seed=3,
        ),
        SimDeviceSpec(
            name="plc",
            url="tcp://127.0.0.1:0",
            device_id=2,
            profile=load_profile(shipped(Kind.PROFILES, "test-plc")),
            seed=4,
        ),
    ]
    async with serve(specs) as sim:
        sparkplug = {"group_id": group, "edge_node_id": "gw-01", "json": False}
        devices = "\n".join(
            f"  - {{name: {n}, driver: modbus, url: '{sim.device(n).url}', "
            f"device_id: {sim.device(n).device_id}, profile: {p}, interval_s: 0.2}}"
            for n, p in (("meter", "chint-dtsu666"), ("plc", "test-plc"))
        )
        (tmp_path / "site.yaml").write_text(
            f"site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            f"outbox: {{path: outbox.sqlite}}\n"
            f"sparkplug: {json.dumps(sparkplug)}\n"
            f"devices:\n{devices}\n"
        )
        loaded = load_config(tmp_path / "site.yaml")
        host = subscribe(mosquitto.host, mosquitto.port, f"spBv1.0/{group}/#", qos=0)
        json_data = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        ingest = Ingest(loaded, worker="sparkplug")
        assert ingest.sparkplug is not None
        async with ingesting(ingest), running(Agent(loaded)):

            def ddata() -> list[Any]:
                return [m for m in host.messages if m.topic.split("/")[2] == "DDATA"]

            await until(
                lambda: (
                    {m.topic.rsplit("/", 1)[-1] for m in ddata()} == {"meter", "plc"}
                    and len(ddata()) >= 6
                ),
                what="data of both devices",
            )
            seen = list(ddata())
            await until(
                lambda: (
                    ingest.stats.stored_points >= sum(len(decode(m.payload).metrics) for m in seen)
                ),
                what="the ingest to store them",
            )
        # The types and units of each device's metrics, from its birth.
        births: dict[str, dict[str, Any]] = {}
        for m in host.messages:
            if m.topic.split("/")[2] == "DBIRTH":
                births[m.topic.rsplit("/", 1)[-1]] = {x.name: x for x in decode(m.payload).metrics}
        stored = {
            (p.device, p.point, p.ts_ms): p
            for p in read_points(tmp_path / "edge-data.sqlite", site="plant-a")
        }
        checked = negative = 0
        for message in seen:
            device = message.topic.rsplit("/", 1)[-1]
            payload = decode(message.payload)
            for metric in payload.metrics:
                birth = births[device][metric.name]
                row = stored[(device, metric.name, metric.timestamp or payload.timestamp)]
                expected = _value(metric, birth.datatype)
                got = row.text if isinstance(expected, str) else row.value
                if isinstance(expected, bool):
                    got = bool(got)
                assert got == pytest.approx(expected), (device, metric.name)
                assert row.gateway == "gw-01"
                unit = {
                    k: v.string_value
                    for k, v in zip(birth.properties.keys, birth.properties.values, strict=False)
                }.get("engUnit")
                assert row.unit == (unit or None), (device, metric.name)
                checked += 1
                negative += isinstance(expected, (int, float)) and expected < 0
        assert checked >= 6 * 5 and negative >= 1  # signed values went through as signed
        assert [m.topic for m in json_data.messages if m.topic.endswith("/data")] == []
        assert ingest.stats.deadlettered == 0


PLC = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="temp_sp", address=102, type=PointType.INT16),
    ),
)


async def test_dcmd_metric_writes_take_the_checked_command_path(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    """Issue 23 item 4: a host's DCMD sets points through the same path as a JSON request:
    limits apply, the device is written and read back, the reply and the audit are the
    command contract's, and the host sees the new value in the next DDATA."""
    group = unique_prefix.split("/")[-1]
    spec = SimDeviceSpec(name="plc-1", url="tcp://127.0.0.1:0", profile=PLC, seed=1)
    async with serve([spec]) as sim:
        sim.device("plc-1").image.store({"flow_setpoint": 12.5, "temp_sp": 20})
        sparkplug = {"group_id": group, "edge_node_id": "gw-01", "json": False}
        (tmp_path / "site.yaml").write_text(
            f"site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n'
            f"outbox: {{path: outbox.sqlite}}\n"
            f"sparkplug: {json.dumps(sparkplug)}\n"
            "writes: {enabled: true}\n"
            "devices:\n"
            f"  - {{name: plc-1, driver: modbus, url: '{sim.device('plc-1').url}', "
            "interval_s: 0.2, points: [\n"
            "      {name: flow_setpoint, address: 100, type: float32, write: {min: 0, max: 50}},\n"
            "      {name: temp_sp, address: 102, type: int16, write: {}}]}\n"
        )
        loaded = load_config(tmp_path / "site.yaml")
        host = subscribe(mosquitto.host, mosquitto.port, f"spBv1.0/{group}/#", qos=0)
        replies = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/+/+/+/cmd/+")
        async with running(Agent(loaded)):
            await until(
                lambda: any("/DBIRTH/" in m.topic for m in host.messages), what="the DBIRTH"
            )
            command = pb.Payload()
            command.metrics.add(name="flow_setpoint", datatype=FLOAT, float_value=42.5)
            command.metrics.add(name="temp_sp", datatype=INT16, int_value=(1 << 32) - 55)
            command.metrics.add(name="flow_setpoint", datatype=FLOAT, float_value=99.0)
            topic = f"spBv1.0/{group}/DCMD/gw-01/plc-1"
            publish_once(mosquitto.host, mosquitto.port, topic, command.SerializeToString())

            def docs(suffix: str) -> list[dict[str, Any]]:
                return [json.loads(m.payload) for m in replies.messages if m.topic.endswith(suffix)]

            await until(lambda: len(docs("/cmd/reply")) >= 3, what="three replies")
            await until(
                lambda: any(
                    {x.name: x.float_value for x in decode(m.payload).metrics}.get("flow_setpoint")
                    == 42.5
                    for m in host.messages
                    if "/DDATA/" in m.topic
                ),
                what="the new set-point in a DDATA",
            )
        by_id = {d["id"]: d for d in docs("/cmd/reply")}
        assert by_id["sparkplug-1"] == {"id": "sparkplug-1", "result": "done", "value": 42.5}
        # An Int16 travels as 32-bit two's complement: -55, not 4294967241.
        assert by_id["sparkplug-2"] == {"id": "sparkplug-2", "result": "done", "value": -55}
        assert by_id["sparkplug-3"]["result"] == "rejected"
        assert by_id["sparkplug-3"]["reason"] == "above max 50"
        assert sim.device("plc-1").served_values()["flow_setpoint"] == 42.5
        assert sim.device("plc-1").served_values()["temp_sp"] == -55
        audits = [d for d in docs("/cmd/audit") if d.get("event") == "result"]
        assert sorted(d["result"] for d in audits) == ["done", "done", "rejected"]

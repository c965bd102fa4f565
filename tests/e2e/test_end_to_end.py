"""Simulators -> agent -> real Mosquitto -> a test subscriber, over TCP, RTU and RTU over TCP.

Every device is served from the same profile file the agent reads; the simulators are
frozen so the values on the wire stay put, and each message must carry exactly what the
simulator serves. Fault cases switch a simulator's fault while the agent runs and check
that the other devices keep their polls.
"""

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
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poller import Unit
from simulators.common.faults import FaultKind
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running
from tests.waiting import until

PROFILES = shipped(Kind.PROFILES)
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "edge_agent/schemas/data-v1.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

pytestmark = pytest.mark.timeout(60)


def _spec(name: str, url: str, profile: str, device_id: int = 1, **kw: Any) -> SimDeviceSpec:
    return SimDeviceSpec(
        name=name,
        url=url,
        device_id=device_id,
        profile=load_profile(PROFILES / f"{profile}.yaml"),
        seed=hash(name) & 0xFFFF,
        **kw,
    )


def _site_yaml(
    path: Path, *, broker: Mosquitto, prefix: str, devices: list[dict[str, Any]]
) -> LoadedConfig:
    lines = [
        "site: plant-a",
        "gateway: gw-01",
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}',
        "devices:",
    ]
    for d in devices:
        lines.append(f"  - {json.dumps(d)}")
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def _data(sub: Subscriber, device: str | None = None) -> list[dict[str, Any]]:
    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]
    return [d for d in docs if device is None or d["device"] == device]


def _expect_served(doc: dict[str, Any], sim: SimSite) -> None:
    served = sim.device(doc["device"]).served_values()
    got = {name: p["value"] for name, p in doc["points"].items()}
    assert got == served
    assert {p["quality"] for p in doc["points"].values()} == {"good"}


async def test_tcp_every_profile_decodes_exactly(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    names = ["chint-dtsu666", "eastron-sdm630", "acrel-adl400", "acrel-adl400-float", "test-plc"]
    # Port 0 devices share one simulated listener, so each gets a unit id of its own.
    specs = [_spec(n, "tcp://127.0.0.1:0", n, i + 1) for i, n in enumerate(names)]
    async with serve(specs) as sim:
        for n in names:
            sim.device(n).freeze()
        loaded = _site_yaml(
            tmp_path / "site.yaml",
            broker=mosquitto,
            prefix=unique_prefix,
            devices=[
                {
                    "name": n,
                    "driver": "modbus",
                    "url": sim.device(n).url,
                    "device_id": sim.device(n).device_id,
                    "profile": n,
                    "interval_s": 0.2,
                }
                for n in names
            ],
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        async with running(Agent(loaded)):
            await until(
                lambda: all(
                    [d["historical"] for d in _data(sub, n)][-2:] == [False, False] for n in names
                ),
                what="2 live polls per device",
            )
        base = f"{unique_prefix}/plant-a/gw-01"
        for n in names:
            docs = _data(sub, n)
            # A poll answered before the broker's CONNACK went up as backlog (historical);
            # only such first polls may be.
            backlog = [doc["seq"] for doc in docs if doc["historical"]]
            live = [doc["seq"] for doc in docs if not doc["historical"]]
            assert len(live) >= 2 and all(seq < min(live) for seq in backlog)
            for doc in docs:
                VALIDATOR.validate(doc)
                _expect_served(doc, sim)
                assert doc["gateway"] == "gw-01"
            units = {p["unit"] for p in docs[0]["points"].values()}
            assert n == "test-plc" or "V" in units
        seqs = [d["seq"] for d in _data(sub)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seqs[0] >= 1
        status = [orjson.loads(m.payload) for m in sub.messages if m.topic == f"{base}/status"]
        assert status[0]["state"] == "online"
        assert status[-1] == {
            "state": "offline",
            "reason": "stopped",
            "version": status[0]["version"],
            "schema_version": 1,
        }


async def test_rtu_bus_over_a_pty_pair_and_rtu_over_tcp(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    serial_pair: tuple[str, str],
) -> None:
    """Two units share one pty line (8N1: Linux ptys refuse parity on reconfigure, EINVAL)."""
    server_end, agent_end = serial_pair
    specs = [
        _spec("m1", f"rtu://{server_end}?baudrate=19200", "chint-dtsu666", 1),
        _spec("m2", f"rtu://{server_end}?baudrate=19200", "acrel-adl400", 2),
        _spec("plc", "rtu+tcp://127.0.0.1:0", "test-plc", 7),
    ]
    async with serve(specs) as sim:
        for name in ("m1", "m2", "plc"):
            sim.device(name).freeze()
        rtu = f"rtu://{agent_end}?baudrate=19200"
        loaded = _site_yaml(
            tmp_path / "site.yaml",
            broker=mosquitto,
            prefix=unique_prefix,
            devices=[
                {
                    "name": "m1",
                    "driver": "modbus",
                    "url": rtu,
                    "device_id": 1,
                    "profile": "chint-dtsu666",
                    "interval_s": 0.2,
                },
                {
                    "name": "m2",
                    "driver": "modbus",
                    "url": rtu,
                    "device_id": 2,
                    "profile": "acrel-adl400",
                    "interval_s": 0.2,
                    "frame_gap_s": 0.005,
                },
                {
                    "name": "plc",
                    "driver": "modbus",
                    "url": sim.device("plc").url,
                    "device_id": 7,
                    "profile": "test-plc",
                    "interval_s": 0.2,
                },
            ],
        )
        agent = Agent(loaded)
        # Both serial units share one line (one connection); the RTU-over-TCP PLC has its own.
        assert sorted(len(line.units) for line in agent.lines) == [1, 2]
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        async with running(agent):
            await until(
                lambda: all(len(_data(sub, n)) >= 3 for n in ("m1", "m2", "plc")),
                what="3 polls of each RTU unit",
            )
        for name in ("m1", "m2", "plc"):
            for doc in _data(sub, name):
                VALIDATOR.validate(doc)
                _expect_served(doc, sim)


def _unit(agent: Agent, name: str) -> Unit:
    return next(u for u in agent.units if u.driver.name == name)


async def test_faults_are_data_and_never_delay_other_devices(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    names = ["a", "b", "c"]
    specs = [_spec(n, "tcp://127.0.0.1:0", "chint-dtsu666", i + 1) for i, n in enumerate(names)]
    async with serve(specs) as sim:
        for n in names:
            sim.device(n).freeze()
        devices: list[dict[str, Any]] = [
            {
                "name": n,
                "driver": "modbus",
                "url": sim.device(n).url,
                "device_id": sim.device(n).device_id,
                "profile": "chint-dtsu666",
                "interval_s": 0.1,
                "timeout_s": 0.5,
                "backoff_max_s": 1.0,
            }
            for n in names
        ]
        # "a" also reads a register its meter does not have: only that point goes bad.
        devices[0] = {**devices[0], "profile": None}
        devices[0].pop("profile")
        devices[0]["points"] = [
            {"name": "voltage_a", "address": 0x2006, "type": "float32", "scale": 0.1, "unit": "V"},
            {"name": "missing", "address": 0x3000, "type": "uint16"},
        ]
        loaded = _site_yaml(
            tmp_path / "site.yaml", broker=mosquitto, prefix=unique_prefix, devices=devices
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        agent = Agent(loaded)
        base = f"{unique_prefix}/plant-a/gw-01"
        async with running(agent):
            await until(lambda: all(len(_data(sub, n)) >= 3 for n in names), what="first polls")

            # 1. Exception answer: only the affected point is bad; the device stays up.
            doc = _data(sub, "a")[-1]
            VALIDATOR.validate(doc)
            assert doc["points"]["missing"] == {
                "value": None,
                "unit": None,
                "quality": "bad",
                "reason": "exception 02 (illegal data address)",
            }
            assert doc["points"]["voltage_a"]["quality"] == "good"
            assert (
                doc["points"]["voltage_a"]["value"] == sim.device("a").served_values()["voltage_a"]
            )
            assert _unit(agent, "a").stats.up is True

            # 2. No answer from b: bad once, "down" once, and a and c keep their rate.
            polls_before = {n: _unit(agent, n).stats.polls for n in ("a", "c")}
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sim.device("b").faults.set(FaultKind.NO_ANSWER)
            await until(lambda: _unit(agent, "b").stats.failures >= 4, what="b to time out 4x")
            window = loop.time() - t0
            for n in ("a", "c"):
                made = _unit(agent, n).stats.polls - polls_before[n]
                assert made >= window / 0.1 - 3, (n, made, window)
                assert _unit(agent, n).stats.overruns == 0
            bad_b = [d for d in _data(sub, "b") if d["points"]["voltage_a"]["quality"] == "bad"]
            assert len(bad_b) == 1
            assert {p["reason"] for p in bad_b[0]["points"].values()} == {"timeout"}
            VALIDATOR.validate(bad_b[0])

            # 3. b answers again: up once more, good values again.
            sim.device("b").faults.clear()
            n_b = len(_data(sub, "b"))
            await until(lambda: len(_data(sub, "b")) >= n_b + 2, what="b to answer again")
            _expect_served(_data(sub, "b")[-1], sim)

            # 4. Dropped connection: c reconnects by itself.
            sim.device("c").faults.set(FaultKind.DROP)
            await until(lambda: _unit(agent, "c").stats.up is False, what="c to drop")
            sim.device("c").faults.clear()
            await until(lambda: _unit(agent, "c").stats.up is True, what="c to reconnect")
            n_c = len(_data(sub, "c"))
            await until(lambda: len(_data(sub, "c")) >= n_c + 1, what="c's next good poll")
            _expect_served(_data(sub, "c")[-1], sim)

        states = {
            n: [
                orjson.loads(m.payload)["state"]
                for m in sub.messages
                if m.topic == f"{base}/{n}/status"
            ]
            for n in names
        }
        assert states["a"] == ["up"]
        assert states["b"] == ["up", "down", "up"]
        assert states["c"] == ["up", "down", "up"]

"""Simulators' energy counters -> agent -> energy stage -> outbox -> real Mosquitto.

Two simulated meters (CHINT DTSU666, float32 kWh; Acrel ADL400, uint32 x 0.01 kWh with a
demand register) are polled by the agent; their profiles mark the counters `energy:`.
Waiting for real 15-minute intervals is out of the question, so the simulators' clock and
the energy stage's clock both run 600 times faster (1 s = 10 min), and the stage's clock
starts at 2026-10-31 23:40 local, so the run crosses midnight and the month. Everything
else is real: Modbus over TCP, the agent, the durable outbox, Mosquitto, a subscriber.

The reference is computed from the data messages on the broker: the counter values the
agent published, interpolated at each boundary.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.energy.stage import EnergyStage, build_energy_stages
from edge_agent.ingest.schema import Source, decode_data
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.energy_reference import local_ms
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running

PROFILES = shipped(Kind.PROFILES)
SCALE = 600.0
MIN = 60_000

pytestmark = pytest.mark.timeout(60)


async def test_simulated_meters_publish_energy_through_mosquitto(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    t0 = time.monotonic()

    def fast_clock() -> float:
        return t0 + (time.monotonic() - t0) * SCALE

    specs = [
        SimDeviceSpec(
            name=name,
            url="tcp://127.0.0.1:0",
            device_id=i + 1,
            profile=load_profile(PROFILES / f"{profile}.yaml"),
            seed=i + 7,
            update_interval_s=0.0,
        )
        for i, (name, profile) in enumerate(
            [("incomer", "chint-dtsu666"), ("feeder", "acrel-adl400")]
        )
    ]
    async with serve(specs, clock=fast_clock) as sim:
        devices = [
            {
                "name": s.name,
                "driver": "modbus",
                "url": sim.device(s.name).url,
                "device_id": s.device_id,
                "profile": "chint-dtsu666" if s.name == "incomer" else "acrel-adl400",
                "interval_s": 0.1,
            }
            for s in specs
        ]
        site = tmp_path / "site.yaml"
        site.write_text(
            "\n".join(
                [
                    "site: plant-a",
                    "gateway: gw-01",
                    f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}',
                    "energy:",
                    "  tariff: example-tou",
                    "  virtual_meters:",
                    '    - {name: rest, formula: "incomer - feeder"}',
                    "devices:",
                    *[f"  - {json.dumps(d)}" for d in devices],
                ]
            )
            + "\n"
        )
        loaded = load_config(site)
        agent = Agent(loaded)
        assert [s.name for s in agent.stages if isinstance(s, EnergyStage)] == ["energy"]
        # The same stage, on a clock 600x faster that starts at 2026-10-31 23:40 local.
        stage = build_energy_stages(
            loaded,
            agent.outlet,
            time_scale=SCALE,
            time_origin_ms=local_ms(2026, 10, 31, 23, 40),
        )[0]
        agent.stages[:] = [s for s in agent.stages if not isinstance(s, EnergyStage)] + [stage]
        energy_topic = f"{unique_prefix}/plant-a/gw-01/energy"
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        async with running(agent):
            deadline = time.monotonic() + 30
            while not any(
                m.topic == energy_topic and b'"type":"month"' in m.payload for m in sub.messages
            ):
                assert time.monotonic() < deadline, "no month total within 30 s"
                await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
            # One more interval after midnight, for every meter.
            target = local_ms(2026, 11, 1, 0, 15)
            while (
                sum(
                    1
                    for m in sub.messages
                    if m.topic == energy_topic
                    and b'"type":"interval"' in m.payload
                    and orjson.loads(m.payload)["ts_ms"] == target
                )
                < 3
            ):
                assert time.monotonic() < deadline, "no 00:15 intervals within 30 s"
                await asyncio.sleep(0.05)
    messages = sub.messages
    energy = [orjson.loads(m.payload) for m in messages if m.topic == energy_topic]
    assert energy, "nothing on the energy topic"
    assert not [
        m.topic for m in messages if m.topic.endswith("/energy") and m.topic != energy_topic
    ]

    # The reference: counter readings from the data messages, on the stage's clock.
    readings: dict[str, tuple[list[int], list[float]]] = {}
    registers: dict[str, list[tuple[int, float]]] = {}
    for m in messages:
        if not m.topic.endswith("/data"):
            continue
        doc = orjson.loads(m.payload)
        point = doc["points"]["energy_import"]
        if point["quality"] != "good":
            continue
        ts = stage.virtual_ms(doc["ts_ms"])
        times, values = readings.setdefault(doc["device"], ([], []))
        times.append(ts)
        values.append(point["value"])
        if "demand_import" in doc["points"]:
            registers.setdefault(doc["device"], []).append(
                (ts, doc["points"]["demand_import"]["value"])
            )

    def at(device: str, t: int) -> float:
        times, values = readings[device]
        i = bisect.bisect_left(times, t)
        if times[i] == t:
            return values[i]
        return values[i - 1] + (values[i] - values[i - 1]) * (t - times[i - 1]) / (
            times[i] - times[i - 1]
        )

    def ref(device: str, a: int, b: int) -> float:
        """Energy in [a, b), from the first whole minute the device was seen on."""
        times, _ = readings[device]
        return at(device, b) - at(device, max(a, -(-times[0] // MIN) * MIN))

    intervals = [d for d in energy if d["type"] == "interval"]
    checked = 0
    for doc in intervals:
        if doc["device"] not in readings or doc["counter"] != "energy_import":
            continue
        a = doc["ts_ms"]
        expected = ref(doc["device"], a, a + 15 * MIN)
        assert doc["points"]["interval.energy_import"]["value"] == pytest.approx(expected, abs=2e-4)
        assert doc["points"]["interval.energy_import"]["unit"] == "kWh"
        checked += 1
    assert checked >= 6  # 23:45, 00:00 (and 23:40 partial) for two meters
    rest = [d for d in intervals if d["device"] == "rest" and d["kind"] == "electricity"]
    assert rest and rest[0]["node"]["of"] == "incomer - feeder"
    for doc in rest:
        a = doc["ts_ms"]
        expected = ref("incomer", a, a + 15 * MIN) - ref("feeder", a, a + 15 * MIN)
        assert doc["points"]["interval.electricity"]["value"] == pytest.approx(expected, abs=4e-4)
    # Demand every (virtual) minute once 15 minutes are in, with the meter's register beside.
    demand = [d for d in energy if d["type"] == "demand" and d["device"] == "feeder"]
    assert demand
    for doc in demand:
        t = doc["ts_ms"]
        kw = doc["points"]["demand.energy_import"]["value"]
        assert kw == pytest.approx(ref("feeder", t - 15 * MIN, t) * 4, abs=1e-3)
        first_after = next(v for ts, v in registers["feeder"] if ts >= t)
        assert doc["points"]["demand.meter"]["value"] == pytest.approx(first_after, abs=1e-9)
    # October closed at local midnight, with coefficients and their versions.
    months = {d["counter"]: d for d in energy if d["type"] == "month" and d["device"] == "feeder"}
    assert set(months) == {"energy_import", "energy_export", "reactive_energy_import"}
    month = months["energy_import"]
    assert month["period"] == "2026-10"
    assert month["end"] == "2026-11-01T00:00:00+08:00"
    assert month["coefficients"]["standard_coal"] == "gbt2589-2020-equivalent"
    kwh = month["points"]["month.energy_import"]["value"]
    kvarh = months["reactive_energy_import"]["points"]["month.reactive_energy_import"]["value"]
    assert kwh == pytest.approx(
        ref("feeder", local_ms(2026, 10, 31, 23, 40), local_ms(2026, 11, 1)), abs=2e-4
    )
    assert month["points"]["month.pf"]["value"] == pytest.approx(
        kwh / (kwh**2 + kvarh**2) ** 0.5, abs=1e-4
    )
    # Energy messages are data messages to the ingest: they validate as such.
    for doc in energy[:50]:
        source = Source(energy_topic, "plant-a", "gw-01", doc["device"])
        decoded = decode_data(
            source, orjson.dumps(doc), now_ms=time.time_ns() // 10**6, max_future_ms=0
        )
        assert decoded.ts_ms == doc["ts_ms"] and decoded.points

"""What a write costs the other units of a shared RS-485 line (issue 21 item 3).

    .venv/bin/python -m bench.write_line [--seconds 10] [--units 4] [--answer-ms 20]

Mosquitto (Debian) on a free port, a socat pty pair as the line, `units` simulated PLCs on
it whose every answer takes `answer_ms` (the simulator's `slow` fault: about the wire time
of a short read at 9600 baud, which a pty does not have), and the whole agent in this
process polling them. Two lines are measured, each in two phases of `seconds`: no writes,
then one write request every 0.5 s to the second unit (through `WriteCommands.submit`, the
path an MQTT request takes after its topic). Printed per phase:

- transactions on the line per write, from the simulator's line journal (a regular poll
  reads the unit's block; anything else is the write's own: the write, a read-back);
- read-backs run at once (a dedicated read of the set-point) and served by the next poll;
- the other units' poll start lateness (p50, p99, max, in ms) from the poller's stats;
- the request-to-reply time of the writes (p50, max).

Nothing here asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.modbus.device import LineRequest
from simulators.modbus.site import SimDeviceSpec, serve
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.serial_pair import _socat_pair

PROFILE = ModbusProfile(
    name="plc",
    points=(
        ModbusPoint(name="flow_setpoint", address=100, type=PointType.FLOAT32),
        ModbusPoint(name="level", address=102),
    ),
)
POLL = (3, 100, 3)
READ_BACK = (3, 100, 2)


def _site(url: str, line: str, units: int, interval_s: float) -> str:
    devices = "".join(
        f"""  - name: plc-{n}
    driver: modbus
    url: "{line}"
    device_id: {n}
    interval_s: {interval_s}
    timeout_s: 1.0
    points:
      - {{name: flow_setpoint, address: 100, type: float32, write: {{min: 0, max: 50}}}}
      - {{name: level, address: 102}}
"""
        for n in range(1, units + 1)
    )
    return f"""\
site: plant-a
gateway: gw-01
mqtt: {{url: "{url}", prefix: bench}}
outbox: {{path: var/outbox.sqlite}}
writes: {{enabled: true, per_point_per_min: 1000}}
devices:
{devices}"""


def _ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _phase(
    agent: Agent, journal: list[LineRequest], seconds: float, *, writes: bool
) -> dict[str, Any]:
    others = [u for u in agent.units if u.driver.name != "plc-2"]
    for u in others:
        u.stats.jitter_s.clear()
    journal.clear()
    commands = agent.commands
    latencies: list[float] = []
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if writes:
            answered = sum(commands.counters.results.values())
            began = time.monotonic()
            value = 10.0 + sent % 20
            commands.submit(
                "plc-2", orjson.dumps({"id": f"b-{sent}", "point": "flow_setpoint", "value": value})
            )
            sent += 1
            # WriteCommands has no reply hook but MQTT; its counters are the reply here.
            while sum(commands.counters.results.values()) == answered:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            latencies.append(time.monotonic() - began)
        await asyncio.sleep(0.5 - (time.monotonic() - (end - seconds)) % 0.5)
    lateness = [s for u in others for s in u.stats.jitter_s]
    extra = [r for r in journal if (r.fc, r.address, r.count) != POLL]
    return {
        "writes": sent,
        "line transactions per write": round(len(extra) / sent, 2) if sent else 0,
        "read-backs at once": sum((r.fc, r.address, r.count) == READ_BACK for r in extra),
        "others' polls": len(lateness),
        "others' lateness p50/p99/max ms": [
            round(_ms(lateness, q), 1) for q in (0.5, 0.99, 1.0 - 1e-9)
        ],
        "reply p50/max ms": [
            round(1000 * statistics.median(latencies), 1) if latencies else None,
            round(1000 * max(latencies), 1) if latencies else None,
        ],
        "results": {"/".join(k): v for k, v in agent.commands.counters.results.items()},
    }


async def _line(
    broker: Mosquitto, tmp: Path, units: int, interval_s: float, answer_s: float, seconds: float
) -> dict[str, Any]:
    pair = _socat_pair(tmp)
    server_end, agent_end = next(pair)
    try:
        specs = [
            SimDeviceSpec(
                name=f"plc-{n}",
                url=f"rtu://{server_end}?baudrate=19200",
                profile=PROFILE,
                device_id=n,
            )
            for n in range(1, units + 1)
        ]
        async with serve(specs) as sim:
            journal: list[LineRequest] = []
            for n in range(1, units + 1):
                device = sim.device(f"plc-{n}")
                device.faults.set("slow", delay_s=answer_s)
                device.journal = journal
            path = tmp / "site.yaml"
            path.write_text(
                _site(broker.url, f"rtu://{agent_end}?baudrate=19200", units, interval_s)
            )
            agent = Agent(load_config(path))
            task = asyncio.create_task(agent.run())
            try:
                while not all(u.stats.good_polls > 2 for u in agent.units):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                quiet = await _phase(agent, journal, seconds, writes=False)
                busy = await _phase(agent, journal, seconds, writes=True)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return {"interval_s": interval_s, "no writes": quiet, "writes": busy}
    finally:
        pair.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--answer-ms", type=float, default=20.0)
    args = parser.parse_args()
    answer_s = args.answer_ms / 1000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "broker")
        broker.start()
        try:
            # Busy: the polls fill ~75 % of the line; idle: ~20 %.
            busy_interval = round(args.units * (answer_s + 0.003) / 0.75, 3)
            for interval_s in (busy_interval, round(busy_interval * 3.75, 3)):
                (tmp / str(interval_s)).mkdir()
                result = await _line(
                    broker, tmp / str(interval_s), args.units, interval_s, answer_s, args.seconds
                )
                print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        finally:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())

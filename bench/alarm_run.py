"""Alarm latency: a reading crossing a limit -> the alarm message at a subscriber, at load.

    .venv/bin/python -m bench.alarm_run [--devices 500] [--points 50] [--seconds 60]
                                        [--probe-interval 0.1] [--flip-s 0.35]

Processes: Mosquitto (Debian) on a free port; the load simulators (bench/sim_process.py,
`devices` x `points` float32 at 1 s polls, no alarm rules: the steady bench load); the
agent (this module with --worker) polling the load plus one probe device whose point
`p000` has a high alarm at 50; and this process, which serves the probe (our simulator,
values frozen), flips p000 between 0 and 100 every `flip-s`, and subscribes to .../alarms.

Latency of one transition = time the subscriber received it - its `ts_ms`, which is the
time the agent had the device's answer (drivers stamp a poll when the answer arrived): it
covers evaluation, the alarm store and outbox commits, MQTT and the broker. `ts_ms` has
millisecond resolution, so each sample reads up to 1 ms high. One machine, one clock.
Nothing here asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.run import _first_json, _spawn, _stop
from bench.site_model import bench_profile
from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.options.alarms import AlarmRule
from simulators.modbus.site import SimDeviceSpec, serve
from tests.fixtures.mosquitto import Mosquitto

PROBE_PROFILE = ModbusProfile(
    name="probe",
    points=(
        ModbusPoint(
            name="p000",
            address=0,
            type=PointType.FLOAT32,
            unit="bar",
            alarms=(AlarmRule(kind="high", limit=50.0),),
        ),
    ),
)


async def _worker(args: argparse.Namespace, urls: list[str]) -> None:
    """The agent: load devices at 1 s polls, plus the probe device."""
    from edge_agent.config.site import DeviceSetup, LoadedConfig, SiteConfig
    from edge_agent.delivery.outbox import OutboxConfig
    from edge_agent.mqtt.config import MqttConfig
    from edge_agent.runtime.agent import Agent

    load = bench_profile(args.points)
    setups = [
        DeviceSetup(
            ModbusDevice(
                name=f"m{i:04d}", driver="modbus", url=url, timeout_s=2.0, profile="bench"
            ),
            load,
            "bench",
        )
        for i, url in enumerate(urls[:-1])
    ]
    probe = ModbusDevice(
        name="probe", driver="modbus", url=urls[-1], interval_s=args.probe_interval, profile="probe"
    )
    setups.append(DeviceSetup(probe, PROBE_PROFILE, "probe"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-alarms-"))
    site = SiteConfig(
        site="bench",
        gateway="gw",
        outbox=OutboxConfig(path=workdir / "outbox.sqlite"),
        devices=tuple(s.device for s in setups),
        mqtt=MqttConfig(
            url=f"mqtt://127.0.0.1:{args.mqtt_port}", prefix="bench", qos=1, max_inflight=1000
        ),
    )
    agent = Agent(LoadedConfig(workdir / "site.yaml", site, tuple(setups)))
    task = asyncio.create_task(agent.run())
    await agent.sink.wait_connected(10)
    await asyncio.sleep(args.warmup)
    c0 = time.process_time()
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()  # the runner says stop
    cpu = time.process_time() - c0
    polls = sum(u.stats.polls for u in agent.units)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sys.stdout.write(json.dumps({"cpu_s": cpu, "polls": polls}) + "\n")
    sys.stdout.flush()


class _Subscriber:
    """Records (receive time ns, message) for every alarm transition."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"alarm-sub-{time.time_ns()}")
        client.on_connect = lambda c, *_a: c.subscribe("bench/+/+/alarms", qos=1)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the subscriber could not subscribe")
        self.client = client

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        with self._lock:
            self.received.append((now, orjson.loads(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _run(args: argparse.Namespace, broker: Mosquitto, tmp: Path) -> dict[str, Any]:
    sim = _spawn(
        ["bench.sim_process", "--devices", str(args.devices), "--points", str(args.points)]
    )
    worker = None
    sub = None
    try:
        urls = _first_json(sim, "simulator")["urls"]
        spec = SimDeviceSpec(name="probe", url="tcp://127.0.0.1:0", profile=PROBE_PROFILE)
        async with serve([spec]) as probe_site:
            probe = probe_site.device("probe")
            probe.freeze()
            probe.image.store({"p000": 0.0})
            urls_file = tmp / "urls.json"
            urls_file.write_text(json.dumps([*urls, probe.url]))
            sub = _Subscriber(broker.port)
            worker = _spawn(
                [
                    "bench.alarm_run",
                    "--worker",
                    "--urls-file",
                    str(urls_file),
                    "--mqtt-port",
                    str(broker.port),
                    "--points",
                    str(args.points),
                    "--probe-interval",
                    str(args.probe_interval),
                    "--warmup",
                    str(args.warmup),
                ]
            )
            await asyncio.to_thread(_first_json, worker, "agent worker")
            t_end = time.monotonic() + args.seconds
            high = False
            flips = 0
            while time.monotonic() < t_end:
                high = not high
                probe.image.store({"p000": 100.0 if high else 0.0})
                flips += 1
                await asyncio.sleep(args.flip_s)
            probe.image.store({"p000": 0.0})
            await asyncio.sleep(1.0)  # the last transitions arrive
            worker.send_signal(signal.SIGTERM)
            stats = await asyncio.to_thread(_first_json, worker, "agent worker result")
    finally:
        if sub is not None:
            sub.close()
        if worker is not None:
            _stop(worker)
        _stop(sim)
    samples = [
        (recv_ns - doc["ts_ms"] * 1_000_000) / 1e6
        for recv_ns, doc in (sub.received if sub else [])
        if doc.get("id") == "probe/p000/high" and doc["event"] in ("raise", "clear")
    ]
    transitions = [d["transition"] for _, d in (sub.received if sub else [])]
    q = (
        statistics.quantiles(samples, n=100, method="inclusive")
        if len(samples) >= 2
        else [float("nan")] * 99
    )
    return {
        "flips": flips,
        "transitions": len(samples),
        "in_order": transitions == sorted(transitions),
        "p50_ms": q[49],
        "p99_ms": q[98],
        "max_ms": max(samples, default=float("nan")),
        "agent_cpu_share": stats["cpu_s"] / args.seconds,
        "polls": stats["polls"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--probe-interval", type=float, default=0.1)
    p.add_argument("--flip-s", type=float, default=0.35)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--urls-file", help=argparse.SUPPRESS)
    p.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        asyncio.run(_worker(args, json.loads(Path(args.urls_file).read_text())))
        return 0
    with tempfile.TemporaryDirectory(prefix="edge-alarm-bench-") as tmpdir:
        tmp = Path(tmpdir)
        broker = Mosquitto(tmp / "broker")
        broker.start()
        try:
            result = asyncio.run(_run(args, broker, tmp))
        finally:
            broker.stop()
    print(
        f"alarm latency, {args.devices}x{args.points} at 1 s + probe at {args.probe_interval} s: "
        f"{result['transitions']} transitions ({result['flips']} flips), "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms, in order: {result['in_order']}, "
        f"agent CPU {result['agent_cpu_share']:.0%}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark worker processes: the agent, and the bare pymodbus + paho baseline loop.

Each worker warms up, then measures its own CPU time over a window on the system-wide
monotonic clock, and prints one JSON line with the result; the runner lines that window up
with the subscriber's delivered counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from bench.site_model import bench_profile
from drivers.modbus.config import ModbusDevice
from edge_agent.config.site import DeviceSetup, LoadedConfig, SiteConfig
from edge_agent.delivery.outbox import OutboxConfig
from edge_agent.mqtt.config import MqttConfig
from edge_agent.runtime.agent import Agent


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quantile_ms(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return float("nan")
    return statistics.quantiles(samples, n=100)[q - 1] * 1000


def _voluntary_switches() -> int:
    """Times any thread of this process went to sleep: its wake-ups, as the kernel counts."""
    total = 0
    for status in Path("/proc/self/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


class _LoopTurns:
    """Counts the event loop's selector calls (one per loop iteration)."""

    def __init__(self) -> None:
        self.count = 0
        loop = asyncio.get_running_loop()
        selector = loop._selector  # type: ignore[attr-defined]
        select = selector.select

        def counted(timeout: float | None = None) -> object:
            self.count += 1
            return select(timeout)

        selector.select = counted


class _Latency:
    """Poll answer (submit) to PUBACK, in seconds, for messages answered in the window."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.samples: list[float] = []
        self.recording = False

    def start(self, key: int) -> None:
        if self.recording:
            self.started[key] = time.perf_counter()

    def done(self, key: int) -> None:
        t = self.started.pop(key, None)
        if t is not None:
            self.samples.append(time.perf_counter() - t)

    def summary(self) -> dict[str, float]:
        return {
            "latency_p50_ms": _quantile_ms(self.samples, 50),
            "latency_p99_ms": _quantile_ms(self.samples, 99),
            "latency_samples": len(self.samples),
        }


async def _measure(
    warmup_s: float,
    seconds: float,
    count: callable,  # type: ignore[valid-type]
    latency: _Latency | None = None,
) -> dict[str, float]:
    turns = _LoopTurns()
    await asyncio.sleep(warmup_s)
    if latency is not None:
        latency.recording = True
    t0, c0, n0 = time.monotonic(), time.process_time(), count()
    w0, l0 = _voluntary_switches(), turns.count
    await asyncio.sleep(seconds)
    t1, c1, n1 = time.monotonic(), time.process_time(), count()
    w1, l1 = _voluntary_switches(), turns.count
    if latency is not None:
        latency.recording = False
        await asyncio.sleep(0.5)  # the acks of the window's last messages
    return {
        "t0": t0,
        "t1": t1,
        "cpu_s": c1 - c0,
        "points": n1 - n0,
        "wakeups_per_s": (w1 - w0) / (t1 - t0),
        "loop_turns_per_s": (l1 - l0) / (t1 - t0),
        **(latency.summary() if latency is not None else {}),
    }


async def run_agent(args: argparse.Namespace, urls: list[str]) -> dict[str, object]:
    profile = bench_profile(args.points)
    devices = tuple(
        DeviceSetup(
            # Built unvalidated: saturation polls below the 0.01 s floor a site file has.
            ModbusDevice.model_construct(
                name=f"m{i:04d}",
                driver="modbus",
                url=url,
                interval_s=args.interval,
                timeout_s=2.0,
                profile="bench",
            ),
            profile,
            "bench",
        )
        for i, url in enumerate(urls)
    )
    outbox = OutboxConfig(path=Path(tempfile.mkdtemp(prefix="bench-outbox-")) / "outbox.sqlite")
    site = SiteConfig(
        site="bench",
        gateway="gw",
        outbox=outbox,
        devices=tuple(d.device for d in devices),
        mqtt=MqttConfig(
            url=f"mqtt://127.0.0.1:{args.mqtt_port}",
            prefix="bench",
            qos=1,
            max_inflight=1000,
            payload=args.payload,
        ),
    )
    agent = Agent(LoadedConfig(Path("<bench>"), site, devices))

    def polled_points() -> int:
        return sum(u.stats.good_polls for u in agent.units) * args.points

    latency = _Latency()
    forwarder = agent.forwarder
    # Agent.emit calls one of them right after the answer (the encode is ~10 µs).
    name = "submit_now" if hasattr(forwarder, "submit_now") else "submit"
    submit = getattr(forwarder, name)

    def timed_submit(seq: int, *a: object, **kw: object) -> None:
        latency.start(seq)
        submit(seq, *a, **kw)

    setattr(forwarder, name, timed_submit)
    forwarder._on_acked = latency.done

    commits = [0]
    write = agent.outbox._write

    def counted_write(*a: object) -> object:
        commits[0] += 1  # one transaction of inserts and deletions
        return write(*a)  # type: ignore[arg-type]

    agent.outbox._write = counted_write  # type: ignore[method-assign]
    appended = [0, 0]  # commits, messages

    def messages() -> int:
        return agent.outbox.stats.appended

    task = asyncio.create_task(agent.run())
    await asyncio.sleep(args.warmup)
    c0, m0 = commits[0], messages()
    result = await _measure(0.0, args.seconds, polled_points, latency)
    appended[:] = [commits[0] - c0, messages() - m0]
    jitter = [
        j for u in agent.units for j in u.stats.jitter_s[-int(args.seconds / args.interval) - 1 :]
    ]
    overruns = sum(u.stats.overruns for u in agent.units)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        **result,
        "rss_mb": _rss_mb(),
        "jitter_p50_ms": _quantile_ms(jitter, 50),
        "jitter_p99_ms": _quantile_ms(jitter, 99),
        "overruns": overruns,
        "commits_per_message": appended[0] / max(1, appended[1]),
        "published": agent.sink.stats.published,
        "acked": agent.sink.stats.acked,
    }


async def run_bare(args: argparse.Namespace, urls: list[str]) -> dict[str, object]:
    """The baseline: pymodbus read + struct decode + json + one paho publish per poll, each
    device at fixed phase (like the agent's poller) when the interval is 0.1 s or more."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    latency = _Latency()
    client.on_publish = lambda _c, _u, mid, _rc, _p: latency.done(mid)
    paced = args.interval >= 0.1
    loop = asyncio.get_running_loop()
    origin = loop.time()
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_start()
    names = [f"p{i:03d}" for i in range(args.points)]
    fmt = struct.Struct(f">{args.points}f")
    regs = struct.Struct(f">{2 * args.points}H")
    polled = [0]

    async def device_loop(i: int, url: str) -> None:
        host, port = url.removeprefix("tcp://").split(":")
        mb = AsyncModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        await mb.connect()
        topic = f"bench/bench/gw/m{i:04d}/data"
        due = origin + args.interval * i / len(urls)
        while True:
            if paced:
                now = loop.time()
                while due <= now:
                    due += args.interval
                await asyncio.sleep(due - now)
            rr = await mb.read_holding_registers(0, count=2 * args.points, device_id=1)
            answered = time.perf_counter()
            values = fmt.unpack(regs.pack(*rr.registers))
            payload = json.dumps(
                {
                    "device": f"m{i:04d}",
                    "ts": time.time_ns() // 1_000_000,
                    "points": dict(zip(names, values, strict=True)),
                }
            )
            info = client.publish(topic, payload, qos=1)
            if latency.recording:
                latency.started[info.mid] = answered
            polled[0] += args.points

    tasks = [asyncio.create_task(device_loop(i, u)) for i, u in enumerate(urls)]
    result = await _measure(args.warmup, args.seconds, lambda: polled[0], latency)
    for t in tasks:
        t.cancel()
    client.loop_stop()
    return {**result, "rss_mb": _rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["agent", "bare"])
    p.add_argument("--urls-file", type=Path, required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--interval", type=float, default=0.001)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--payload", choices=["json", "compact"], default="json")  # mqtt.payload
    args = p.parse_args()
    urls = json.loads(args.urls_file.read_text())
    import logging

    logging.basicConfig(level=logging.WARNING)
    runner = run_agent if args.kind == "agent" else run_bare
    result = asyncio.run(runner(args, urls))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

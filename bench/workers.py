"""Benchmark worker processes: the agent, and the bare pymodbus + paho baseline loop.

Each worker warms up, then measures its own CPU time over a window on the system-wide
monotonic clock, and prints one JSON line with the result; the runner lines that window up
with the subscriber's delivered counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from bench.site_model import bench_profile, inline_site_yaml
from drivers.modbus.config import ModbusDevice
from edge_agent.cli.main import start_agent
from edge_agent.config.site import DeviceSetup, LoadedConfig, SiteConfig, load_config
from edge_agent.delivery.outbox import OutboxConfig
from edge_agent.mqtt.config import MqttConfig
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poll_slots import PollingConfig, slot_start, slot_width, slotted_phase


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_rss_mb() -> float:
    """The resident set now (ru_maxrss is the peak, start-up included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class GcPauses:
    """How long each collection of the cyclic garbage collector took, by generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        for samples in self.pauses.values():
            samples.clear()

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for generation, samples in self.pauses.items():
            out[f"gc{generation}_count"] = len(samples)
            out[f"gc{generation}_max_ms"] = max(samples, default=0.0) * 1000
        return out


def _inline_site(args: argparse.Namespace, urls: list[str]) -> LoadedConfig:
    """The site as `edge-agent run` reads it: a file of inline points, load_config."""
    folder = Path(tempfile.mkdtemp(prefix="bench-site-"))
    site = folder / "site.yaml"
    text = inline_site_yaml(urls, args.points, interval_s=args.interval, mqtt_port=args.mqtt_port)
    if args.slot is not None:
        text += f"polling:\n  slot_s: {args.slot}\n"
    site.write_text(text)
    return load_config(site, environ={})


def _quantile_ms(samples: Sequence[float], q: int) -> float:
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
        # C doubles: a float object a sample was ~1 MB a minute of the worker's RSS at
        # 500 devices, counted as the agent's.
        self.samples = array("d")
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
    t0, c0, n0, o0 = time.monotonic(), time.process_time(), count(), os.times()
    w0, l0 = _voluntary_switches(), turns.count
    await asyncio.sleep(seconds)
    t1, c1, n1, o1 = time.monotonic(), time.process_time(), count(), os.times()
    w1, l1 = _voluntary_switches(), turns.count
    if latency is not None:
        latency.recording = False
        await asyncio.sleep(0.5)  # the acks of the window's last messages
    vm_rss_mb = _vm_rss_mb()  # before the quantiles sort copies of the samples
    return {
        "vm_rss_mb": vm_rss_mb,
        "t0": t0,
        "t1": t1,
        "cpu_s": c1 - c0,
        "user_s": o1.user - o0.user,
        "sys_s": o1.system - o0.system,
        "points": n1 - n0,
        "wakeups_per_s": (w1 - w0) / (t1 - t0),
        "loop_turns_per_s": (l1 - l0) / (t1 - t0),
        **(latency.summary() if latency is not None else {}),
    }


async def run_agent(args: argparse.Namespace, urls: list[str]) -> dict[str, object]:
    pauses = GcPauses()
    if args.inline_site:
        started = time.process_time()
        loaded = _inline_site(args, urls)
        load_s = time.process_time() - started
        agent = start_agent(loaded)  # as `edge-agent run` builds it
    else:
        load_s = float("nan")
        agent = _profile_agent(args, urls)

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

    def messages() -> int:
        return agent.outbox.stats.appended

    task = asyncio.create_task(agent.run())
    await asyncio.sleep(args.warmup)
    pauses.reset()
    c0, m0 = commits[0], messages()
    result = await _measure(0.0, args.seconds, polled_points, latency)
    appended = [commits[0] - c0, messages() - m0]
    jitter = array("d")
    for u in agent.units:
        jitter.extend(u.stats.jitter_s[-int(args.seconds / args.interval) - 1 :])
    overruns = sum(u.stats.overruns for u in agent.units)
    frozen = gc.get_freeze_count()
    tracked = len(gc.get_objects())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        **result,
        "rss_mb": _rss_mb(),
        "load_s": load_s,
        "jitter_p50_ms": _quantile_ms(jitter, 50),
        "jitter_p99_ms": _quantile_ms(jitter, 99),
        "jitter_max_ms": max(jitter, default=float("nan")) * 1000,
        "overruns": overruns,
        "commits_per_message": appended[0] / max(1, appended[1]),
        "published": agent.sink.stats.published,
        "acked": agent.sink.stats.acked,
        "frozen_objects": frozen,
        "tracked_objects": tracked,
        **pauses.summary(),
    }


def _profile_agent(args: argparse.Namespace, urls: list[str]) -> Agent:
    """Devices built in Python around one shared profile (the saturation scenario)."""
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
        polling=PollingConfig() if args.slot is None else PollingConfig(slot_s=args.slot),
        mqtt=MqttConfig(
            url=f"mqtt://127.0.0.1:{args.mqtt_port}",
            prefix="bench",
            qos=1,
            max_inflight=1000,
            payload=args.payload,
        ),
    )
    return Agent(LoadedConfig(Path("<bench>"), site, devices), settle_heap=True)


async def run_bare(args: argparse.Namespace, urls: list[str]) -> dict[str, object]:
    """The baseline: pymodbus read + struct decode + json + one paho publish per poll, each
    device at fixed phase (like the agent's poller) when the interval is 0.1 s or more."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    latency = _Latency()
    client.on_publish = lambda _c, _u, mid, _rc, _p: latency.done(mid)
    paced = args.interval >= 0.1
    loop = asyncio.get_running_loop()
    # `--slot`: the agent's poll slots (runtime/poll_slots.py) in the bare loop too.
    width = 0.0 if args.slot is None else slot_width(len(urls), args.interval, args.slot)
    origin = slot_start(loop.time(), width)
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_start()
    names = [f"p{i:03d}" for i in range(args.points)]
    fmt = struct.Struct(f">{args.points}f")
    regs = struct.Struct(f">{2 * args.points}H")
    polled = [0]
    chunks = range(0, 2 * args.points, 120)  # 60 float32 points per request

    async def device_loop(i: int, url: str) -> None:
        host, port = url.removeprefix("tcp://").split(":")
        mb = AsyncModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        await mb.connect()
        topic = f"bench/bench/gw/m{i:04d}/data"
        due = origin + slotted_phase(args.interval * i / len(urls), args.interval, width)
        while True:
            if paced:
                now = loop.time()
                while due <= now:
                    due += args.interval
                await asyncio.sleep(due - now)
            registers: list[int] = []
            for start in chunks:  # a request holds at most 125 registers
                rr = await mb.read_holding_registers(
                    start, count=min(120, 2 * args.points - start), device_id=1
                )
                registers += rr.registers
            answered = time.perf_counter()
            values = fmt.unpack(regs.pack(*registers))
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
    result.pop("vm_rss_mb")  # the agent rows report it (bench/run.py)
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
    p.add_argument("--inline-site", action="store_true", help="agent: load a site file")
    p.add_argument(
        "--slot", type=float, help="polling.slot_s (agent default: the site's; bare: none)"
    )
    args = p.parse_args()
    urls = json.loads(args.urls_file.read_text())
    import logging

    logging.basicConfig(level=logging.WARNING)
    runner = run_agent if args.kind == "agent" else run_bare
    result = asyncio.run(runner(args, urls))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

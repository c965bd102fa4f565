"""Ingest benchmark: points/s and CPU per point of one worker, into VictoriaMetrics and SQLite.

    .venv/bin/python -m bench.ingest_run [--messages 10000] [--points 50] [--devices 100]
                                         [--stores victoria,sqlite] [--runs 3]

Each store gets the same run, against a real Mosquitto and (for the first) a real
VictoriaMetrics, both started on free loopback ports:
1. the worker subscribes once (persistent session) and goes away;
2. `messages` data messages of `points` float points (`devices` devices, rendered by the
   agent's own encoder) are published and queued by the broker for the worker's session;
3. the worker comes back and drains the backlog: the clock runs from its start until every
   message is written and acknowledged. points/s = points / wall time; CPU µs per point =
   the worker process's CPU time (all threads: paho's network thread, the event loop, the
   SQLite thread) / points. The broker and VictoriaMetrics run in their own processes.
Also prints the pure decode and line-protocol encode cost per point. Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drivers.reading import PointSpec, Poll
from edge_agent.config.site import load_config
from edge_agent.ingest.embedded_store import count_readings
from edge_agent.ingest.schema import LineEncoder, Source, decode_data
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.pipeline.payload import DeviceEncoder
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.victoria import Victoria

PREFIX = "bench"
SITE = "bench-site"


def _payloads(messages: int, points: int, devices: int) -> list[tuple[str, bytes]]:
    specs = tuple(PointSpec(f"p{i:03d}", "V") for i in range(points))
    encoders = [
        DeviceEncoder(gateway="gw-01", device=f"m{d:04d}", points=specs) for d in range(devices)
    ]
    start_ms = time.time_ns() // 1_000_000 - messages * 10
    out = []
    for k in range(messages):
        d = k % devices
        ts_ms = start_ms + k * 10
        values: list[Any] = [230.0 + i / 7 + k / 1000 for i in range(points)]
        poll = Poll(f"m{d:04d}", ts_ms * 1_000_000, specs, values)
        topic = f"{PREFIX}/{SITE}/gw-01/m{d:04d}/data"
        out.append((topic, encoders[d].encode(poll, seq=k + 1)))
    return out


def _publish(port: int, payloads: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    done = threading.Event()
    client.on_disconnect = lambda *_: done.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, p, qos=1) for t, p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    done.wait(10)
    client.loop_stop()


def _site(tmp: Path, broker: Mosquitto, victoria: Victoria | None, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    lines = [
        f"site: {SITE}",
        "gateway: gw-01",
        f'mqtt: {{url: "{broker.url}", prefix: {PREFIX}}}',
        f"ingest: {{store: {name}.sqlite, batch_size: 5000, max_inflight: 2000}}",
        "devices:",
        "  - {name: unused, driver: modbus, url: 'tcp://127.0.0.1:1', profile: chint-dtsu666}",
    ]
    if victoria is not None:
        lines.insert(3, f'influx: {{url: "{victoria.url}", org: plant, bucket: edge}}')
    path.write_text("\n".join(lines) + "\n")
    return path


async def _subscribe_once(site_file: Path, worker: str) -> None:
    """Create the worker's persistent session, then go away (DISCONNECT keeps it)."""
    first = Ingest(load_config(site_file), worker=worker)
    task = asyncio.create_task(first.run())
    if not await first.wait_ready(10):
        raise RuntimeError("the ingest did not subscribe")
    task.cancel()
    await asyncio.wait({task})


async def _timed(loaded: Any, worker: str, messages: int) -> dict[str, float]:
    ingest = Ingest(loaded, worker=worker)
    cpu0, t0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(ingest.run())
    while not (ingest.stats.stored_messages >= messages and ingest.stats.unacked == 0):
        if task.done():
            task.result()
            raise RuntimeError("the ingest stopped")
        await asyncio.sleep(0.002)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    task.cancel()
    await asyncio.wait({task})
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "points": float(ingest.stats.stored_points),
        "batches": float(ingest.stats.batches),
        "write_s": ingest.stats.write_seconds,
    }


def run_store(kind: str, *, messages: int, points: int, devices: int, run: int) -> dict[str, Any]:
    """One measured drain into `kind` ("victoria" or "sqlite")."""
    with tempfile.TemporaryDirectory(prefix="edge-ingest-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # Unlimited queue for the offline session (Mosquitto's default keeps 1000).
        broker = Mosquitto(tmp / "broker", listeners="max_queued_messages 0\nset_tcp_nodelay true")
        broker.start()
        victoria = Victoria(tmp / "vm") if kind == "victoria" else None
        try:
            if victoria is not None:
                victoria.start()
            site_file = _site(tmp, broker, victoria, kind)
            asyncio.run(_subscribe_once(site_file, f"bench{run}"))
            _publish(broker.port, _payloads(messages, points, devices))
            result: dict[str, Any] = asyncio.run(
                _timed(load_config(site_file), f"bench{run}", messages)
            )
            if kind == "sqlite":
                result["rows"] = count_readings(store_path(load_config(site_file)))
            return result
        finally:
            if victoria is not None:
                victoria.stop()
            broker.stop()


def pure_costs(points: int, rounds: int = 2000) -> dict[str, float]:
    """decode_data and LineEncoder µs per point, no I/O."""
    topic, payload = _payloads(1, points, 1)[0]
    source = Source(topic, SITE, "gw-01", "m0000")
    now = time.time_ns() // 1_000_000
    t0 = time.process_time()
    decoded = [
        decode_data(source, payload, now_ms=now, max_future_ms=300_000) for _ in range(rounds)
    ]
    t1 = time.process_time()
    lines: list[str] = []
    encoder = LineEncoder()
    for message in decoded:
        encoder.encode(message, lines)
    t2 = time.process_time()
    n = rounds * points
    return {"decode_us": (t1 - t0) / n * 1e6, "encode_us": (t2 - t1) / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--stores", default="victoria,sqlite")
    p.add_argument("--runs", type=int, default=3, help="runs per store; the table shows the median")
    args = p.parse_args(argv)
    for binary in ("mosquitto", "victoria-metrics"):
        if shutil.which(binary) is None and shutil.which(binary, path="/usr/sbin") is None:
            print(f"{binary} is not installed: run scripts/test once (or apt-get install)")
            return 1

    costs = pure_costs(args.points)
    header = "| store | points/s | CPU µs/pt | CPU share | batches | wall s | runs (points/s) |"
    rows = [header, "|---|---:|---:|---:|---:|---:|---|"]
    for kind in [k.strip() for k in args.stores.split(",") if k.strip()]:
        results = []
        for run in range(args.runs):
            print(f"{kind} run {run + 1}/{args.runs} ...", file=sys.stderr)
            results.append(
                run_store(
                    kind,
                    messages=args.messages,
                    points=args.points,
                    devices=args.devices,
                    run=run,
                )
            )
        rates = [r["points"] / r["wall_s"] for r in results]
        best = sorted(results, key=lambda r: r["points"] / r["wall_s"])[len(results) // 2]
        rows.append(
            f"| {kind} | {statistics.median(rates):,.0f} | "
            f"{best['cpu_s'] / best['points'] * 1e6:.2f} | {best['cpu_s'] / best['wall_s']:.0%} | "
            f"{best['batches']:.0f} | {best['wall_s']:.2f} | "
            f"{', '.join(f'{r:,.0f}' for r in rates)} |"
        )
    print(
        f"\n{args.messages:,} messages x {args.points} float points "
        f"({args.messages * args.points:,} points) from {args.devices} devices, one worker:\n"
    )
    print("\n".join(rows))
    print(
        f"\npure per point: decode {costs['decode_us']:.2f} µs, "
        f"line protocol {costs['encode_us']:.2f} µs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

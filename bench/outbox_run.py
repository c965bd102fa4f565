"""Outbox benchmark: store throughput, and replay of an outage backlog under live load.

    .venv/bin/python -m bench.outbox_run [--backlog-s 600] [--devices 500] [--points 50]

1. write: messages of a `points`-float device appended and flushed as the agent does
   (one transaction per flush interval), readings/s;
2. replay: the outbox holds the messages of a `backlog-s` outage at the bench load
   (`devices` messages per second), the broker comes back, and live data keeps arriving at
   that load; measures how fast the backlog drains (messages/s and as a multiple of the
   live rate; the issue asks for >= 5x) and the live messages' publish-to-ack latency
   during the catch-up. Runs against a real Mosquitto started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers.reading import PointSpec, Poll
from edge_agent.delivery.forwarder import Forwarder
from edge_agent.delivery.outbox import Outbox, OutboxConfig
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.sink import MqttSink
from edge_agent.pipeline.payload import DeviceEncoder
from tests.fixtures.mosquitto import Mosquitto


def _message(points: int) -> tuple[DeviceEncoder, Poll]:
    specs = tuple(PointSpec(f"p{i:03d}", "V") for i in range(points))
    encoder = DeviceEncoder(gateway="gw", device="m0000", points=specs)
    return encoder, Poll("m0000", time.time_ns(), specs, [230.0 + i / 7 for i in range(points)])


def bench_write(tmp: Path, *, points: int, messages: int) -> dict[str, float]:
    """Append + flush throughput of the store alone."""
    box = Outbox(tmp / "write.sqlite", OutboxConfig(max_bytes=10**10))
    box.open()
    encoder, poll = _message(points)
    t0, c0 = time.perf_counter(), time.process_time()
    batch = 100  # ~ one flush interval's worth at 5k messages/s
    for start in range(0, messages, batch):
        for _ in range(min(batch, messages - start)):
            seq = box.reserve_id()
            box.append(
                seq, "bench/d", encoder.encode(poll, seq=seq), device="m0000", readings=points
            )
        box.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    box.close()
    return {
        "messages_per_s": messages / wall,
        "readings_per_s": messages * points / wall,
        "cpu_us_per_reading": cpu / (messages * points) * 1e6,
    }


async def bench_replay(
    tmp: Path, broker: Mosquitto, *, points: int, live_per_s: int, backlog: int
) -> dict[str, Any]:
    """Drain a stored backlog while live messages keep coming."""
    config = OutboxConfig(path=tmp / "replay.sqlite", max_bytes=10**10)
    box = Outbox(config.path, config)
    box.open()
    encoder, poll = _message(points)
    for start in range(0, backlog, 1000):
        for _ in range(min(1000, backlog - start)):
            seq = box.reserve_id()
            box.append(
                seq, "bench/backlog", encoder.encode(poll, seq=seq), device="m0000", readings=points
            )
        box.flush()
    latencies: list[float] = []
    sent_at: dict[int, float] = {}

    def on_acked(msg_id: int) -> None:
        t = sent_at.pop(msg_id, None)
        if t is not None:
            latencies.append(time.perf_counter() - t)

    sink = MqttSink(
        MqttConfig(url=broker.url, max_inflight=100),
        client_id="bench-outbox",
        on_state=lambda up: forwarder.on_connection(up),
    )
    forwarder = Forwarder(
        box, sink, window=100, flush_interval_s=config.flush_interval_s, on_acked=on_acked
    )
    forwarder.start()
    task = asyncio.create_task(sink.run())
    await sink.wait_connected(10)
    t0, c0 = time.perf_counter(), time.process_time()
    live = 0
    while forwarder.backlog_pending or box.stats.messages > live_per_s:
        await asyncio.sleep(1 / live_per_s * 10)
        for _ in range(10):  # live data at the bench load, in small bursts
            seq = forwarder.next_seq()
            sent_at[seq] = time.perf_counter()
            forwarder.submit(
                seq, "bench/live", encoder.encode(poll, seq=seq), device="m0001", readings=points
            )
            live += 1
        if time.perf_counter() - t0 > 600:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    replayed = forwarder.replayed
    await sink.close(grace_s=5)
    task.cancel()
    forwarder.close()
    return {
        "backlog": backlog,
        "replayed": replayed,
        "replay_per_s": replayed / wall,
        "live_per_s": live / wall,
        "drain_x_live": (replayed / wall) / live_per_s,
        "live_ack_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "live_ack_p99_ms": (
            statistics.quantiles(latencies, n=100)[98] * 1000
            if len(latencies) > 2
            else float("nan")
        ),
        "cpu_us_per_message": cpu / max(1, replayed + live) * 1e6,
        "seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--devices", type=int, default=500, help="live messages per second")
    p.add_argument("--backlog-s", type=float, default=600, help="outage length to replay")
    p.add_argument("--write-messages", type=int, default=50_000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-bench-outbox-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"outbox write: {args.write_messages} messages ...", file=sys.stderr)
        write = bench_write(tmp, points=args.points, messages=args.write_messages)
        backlog = int(args.backlog_s * args.devices)
        print(f"outbox replay: {backlog} messages backlog ...", file=sys.stderr)
        broker = Mosquitto(tmp / "broker")
        broker.start()
        try:
            replay = asyncio.run(
                bench_replay(
                    tmp, broker, points=args.points, live_per_s=args.devices, backlog=backlog
                )
            )
        finally:
            broker.stop()
    print(f"\noutbox ({args.points} readings per message)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| store write, messages/s | {write['messages_per_s']:,.0f} |")
    print(f"| store write, readings/s | {write['readings_per_s']:,.0f} |")
    print(f"| store write, CPU µs/reading | {write['cpu_us_per_reading']:.3f} |")
    print(
        f"| backlog ({args.backlog_s:.0f} s outage x {args.devices} msg/s) | "
        f"{replay['backlog']:,} messages |"
    )
    print(f"| replay, messages/s | {replay['replay_per_s']:,.0f} |")
    print(f"| replay, readings/s | {replay['replay_per_s'] * args.points:,.0f} |")
    print(f"| drain rate / live rate | {replay['drain_x_live']:.1f}x |")
    print(f"| drained in | {replay['seconds']:.0f} s |")
    print(
        f"| live publish-to-ack during catch-up, p50 / p99 | "
        f"{replay['live_ack_p50_ms']:.1f} / {replay['live_ack_p99_ms']:.1f} ms |"
    )
    print(f"| forwarder CPU µs/message | {replay['cpu_us_per_message']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost per point of a Sparkplug B DDATA beside the JSON data message, for the same polls.

    .venv/bin/python -m bench.sparkplug_run [--points 50] [--polls 20000]

Encoding on the hot path (what `Agent.emit` and `EdgeNode.observe` add per poll): the JSON
v1 message (`payload.DeviceEncoder.encode`) against the Sparkplug body
(`DeviceMetrics.data`) plus the send-time stamp (`payload.stamp`, done by the forwarder),
and the historical rewrite paid once per replayed message. CPU time of this process,
float values that change every poll, all points good.
"""

from __future__ import annotations

import argparse
import random
import time

from drivers.reading import PointSpec, Poll
from edge_agent.pipeline.payload import DeviceEncoder
from edge_agent.sparkplug import datatypes as dt
from edge_agent.sparkplug.payload import DeviceMetrics, historical, stamp


def _polls(points: tuple[PointSpec, ...], n: int) -> list[Poll]:
    rng = random.Random(1)
    t0 = time.time_ns()
    return [
        Poll("meter-1", t0 + i * 1_000_000, points, [rng.uniform(0, 500) for _ in points])
        for i in range(n)
    ]


def _per_point(seconds: float, polls: int, points: int) -> float:
    return seconds / (polls * points) * 1e6


def main() -> None:
    """Print µs of CPU and bytes per point for JSON and Sparkplug."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--polls", type=int, default=20_000)
    args = parser.parse_args()
    points = tuple(PointSpec(f"point_{i:02d}", "kW") for i in range(args.points))
    polls = _polls(points, args.polls)

    encoder = DeviceEncoder(gateway="gw-01", device="meter-1", points=points)
    start = time.process_time()
    json_bytes = sum(len(encoder.encode(p, seq=i)) for i, p in enumerate(polls))
    json_s = time.process_time() - start

    metrics = DeviceMetrics(points, [dt.DOUBLE] * len(points))
    start = time.process_time()
    bodies = [metrics.data(p) for p in polls]
    body_s = time.process_time() - start
    start = time.process_time()
    sp_bytes = sum(
        len(stamp(b, ts_ms=1_764_154_930_123, seq=i % 256)) for i, b in enumerate(bodies)
    )
    stamp_s = time.process_time() - start
    start = time.process_time()
    for body in bodies:
        historical(body)
    hist_s = time.process_time() - start

    n, k = args.polls, args.points
    print(f"{n} polls x {k} points (Double values, all good)")
    print(f"{'path':<36} {'CPU µs/pt':>10} {'bytes/pt':>9}")
    json_us = _per_point(json_s, n, k)
    print(f"{'JSON v1 DeviceEncoder.encode':<36} {json_us:>10.3f} {json_bytes / n / k:>9.1f}")
    sp = _per_point(body_s + stamp_s, n, k)
    print(f"{'Sparkplug DDATA body + stamp':<36} {sp:>10.3f} {sp_bytes / n / k:>9.1f}")
    print(f"{'  of which stamp (seq, time)':<36} {_per_point(stamp_s, n, k):>10.3f}")
    print(f"{'Sparkplug historical rewrite':<36} {_per_point(hist_s, n, k):>10.3f}")


if __name__ == "__main__":
    main()

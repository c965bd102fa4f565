"""The machine's own jitter: an idle asyncio loop waking at fixed ticks, beside the agent.

    python -m bench.loop_probe --seconds 60 [--interval 0.002] [--warmup 3]

Lateness of each wake-up past its tick, as the poller measures a poll's start; nothing
else runs in this loop, so what it sees is the machine (other processes on the cores, the
kernel), the floor under the agent's own jitter in the same run. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys


async def _probe(interval: float, warmup: float, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    late: list[float] = []
    k = 0
    while (now := loop.time()) < start + warmup + seconds:
        k += 1
        due = start + k * interval
        if due > now:
            await asyncio.sleep(due - now)
        if due >= start + warmup:
            late.append(loop.time() - due)
    q = statistics.quantiles(late, n=100)
    return {
        "probe_p50_ms": q[49] * 1000,
        "probe_p99_ms": q[98] * 1000,
        "probe_max_ms": max(late) * 1000,
        "probe_samples": len(late),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--interval", type=float, default=0.002)
    args = p.parse_args()
    result = asyncio.run(_probe(args.interval, args.warmup, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark simulator process: N devices of M float32 points, one TCP port each.

Runs in its own process so the agent's CPU is measured alone. Prints one JSON line with
the listening URLs once every listener is up, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from bench.site_model import bench_profile
from simulators.modbus.site import SimDeviceSpec, serve


async def _main(devices: int, points: int) -> None:
    profile = bench_profile(points)
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for i in range(devices):
            # One serve() per device: each gets its own listener on a free port.
            spec = SimDeviceSpec(name=f"m{i:04d}", url="tcp://127.0.0.1:0", profile=profile, seed=i)
            site = await stack.enter_async_context(serve([spec]))
            urls.append(site.device(spec.name).url)
        sys.stdout.write(json.dumps({"urls": urls}) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--points", type=int, required=True)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.devices, args.points))


if __name__ == "__main__":
    main()

"""OPC UA benchmark server process: the simulated PLC plus N bulk Double nodes.

Runs in its own process so the driver's CPU is measured alone. Every `--update-s` the
server writes a new value to every bulk node (s=Bulk.<i>), which is what a subscription
is notified of. Prints one JSON line {"url", "nodes", "setup_s"} once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from simulators.opcua.server import OpcUaSimSpec, serve_opcua


async def _main(nodes: int, update_s: float) -> None:
    began = time.monotonic()
    spec = OpcUaSimSpec(name="bench-plc", bulk_nodes=nodes, update_interval_s=update_s)
    async with serve_opcua([spec]) as site:
        sim = site.device("bench-plc")
        line = {"url": sim.url, "nodes": nodes, "setup_s": round(time.monotonic() - began, 1)}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--update-s", type=float, default=1.0)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.nodes, args.update_s))


if __name__ == "__main__":
    main()

"""Benchmark of the OPC UA driver: points/s and CPU per point, by polling and by subscription.

    scripts/bench --opcua [--nodes 1000 10000] [--seconds 10] [--update-s 1.0]

For each node count a server process (bench/opcua_sim_process.py: the simulated PLC with
N bulk Double nodes) is started, then this process runs the driver against it:

- poll: N poll-mode points, `read()` back to back (one batched Read per poll, split at
  max_items_per_request = 1000 nodes); points/s = polls x N / window.
- subscribe: N subscribe-mode points (publishing 0.5 s, queue 1); the server writes every
  node every --update-s; points/s = data-change notifications the driver stored / window;
  `read()` assembles one poll per second from the cache meanwhile.

CPU µs/pt is this process's CPU time (user + system) over the window divided by the points
counted in it: the driver, asyncua's client and its binary decoding, not the server. The
numbers go to bench/RESULTS.md; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver

ROOT = Path(__file__).resolve().parents[1]


def _spawn_server(nodes: int, update_s: float) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    args = ["bench.opcua_sim_process", "--nodes", str(nodes), "--update-s", str(update_s)]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the OPC UA bench server exited (code {proc.wait()})")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _device(url: str, nodes: int, mode: str) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "name": "bench",
            "driver": "opcua",
            "url": url,
            "interval_s": 1.0,
            "timeout_s": 30.0,
            "mode": mode,
            "publishing_interval_s": 0.5,
            "points": [
                {"name": f"b{i}", "node": f"nsu=urn:plant:plc;s=Bulk.{i}"} for i in range(nodes)
            ],
        }
    )


async def _poll(url: str, nodes: int, seconds: float, warmup: float) -> dict[str, Any]:
    driver = OpcUaDriver(_device(url, nodes, "poll"))
    try:
        first = await driver.read()
        bad = len(first.issues)
        end = time.monotonic() + warmup
        while time.monotonic() < end:
            await driver.read()
        polls = 0
        cpu0, t0 = time.process_time(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await driver.read()
            polls += 1
        cpu, window = time.process_time() - cpu0, time.monotonic() - t0
    finally:
        await driver.close()
    points = polls * nodes
    return {
        "points_per_s": points / window,
        "cpu_us_per_point": cpu / points * 1e6,
        "cpu_share": cpu / window,
        "polls_per_s": polls / window,
        "bad": bad,
    }


async def _subscribe(url: str, nodes: int, seconds: float, warmup: float) -> dict[str, Any]:
    driver = OpcUaDriver(_device(url, nodes, "subscribe"))
    try:
        first = await driver.read()  # opens the session, waits for the initial data
        bad = len(first.issues)
        await asyncio.sleep(warmup)  # a benchmark window, not a synchronisation
        n0 = driver.stats.notifications
        cpu0, t0 = time.process_time(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await driver.read()  # one poll per interval, from the cache
            await asyncio.sleep(1.0)
        cpu, window = time.process_time() - cpu0, time.monotonic() - t0
        points = driver.stats.notifications - n0
    finally:
        await driver.close()
    return {
        "points_per_s": points / window,
        "cpu_us_per_point": cpu / max(1, points) * 1e6,
        "cpu_share": cpu / window,
        "polls_per_s": None,
        "bad": bad,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--update-s", type=float, default=1.0, help="server update period")
    args = p.parse_args(argv)
    rows: list[tuple[str, dict[str, Any]]] = []
    for nodes in args.nodes:
        server, info = _spawn_server(nodes, args.update_s)
        try:
            print(f"{nodes} nodes: server up in {info['setup_s']} s", file=sys.stderr)
            rows.append(
                (f"poll {nodes}", asyncio.run(_poll(info["url"], nodes, args.seconds, args.warmup)))
            )
            rows.append(
                (
                    f"subscribe {nodes}",
                    asyncio.run(_subscribe(info["url"], nodes, args.seconds, args.warmup)),
                )
            )
        finally:
            _stop(server)
    print(
        f"OPC UA driver, {platform.python_implementation()} {platform.python_version()}, "
        f"server updates every {args.update_s:g} s, window {args.seconds:g} s\n"
    )
    print("| scenario | points/s | CPU µs/pt | CPU share | polls/s | bad in first poll |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        polls = "-" if r["polls_per_s"] is None else f"{r['polls_per_s']:.1f}"
        print(
            f"| {name} | {r['points_per_s']:,.0f} | {r['cpu_us_per_point']:.2f} | "
            f"{r['cpu_share']:.0%} | {polls} | {r['bad']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

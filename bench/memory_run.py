"""Benchmark: the agent's memory while it polls a large site at 1 s, and nothing else.

    python -m bench.memory_run [--devices 500] [--points 50] [--seconds 600] [--every 60]
                               [--tracemalloc] [--env NAME=VALUE ...]

The site of `bench.run --jitter-inline` (bench/site_model.py: one inline flow mapping per
point), served by bench/sim_process.py, published to a real Mosquitto that acknowledges
everything (no subscriber). The agent runs in a process of its own, as `edge-agent run`
builds it (load_config, start_agent), without the jitter worker's instruments: that
worker keeps every publish latency of its window as a float (32 bytes a message, ~1 MB a
minute at 500 devices), which a 10-minute RSS curve would count as the agent's.

Every `--every` seconds the agent's process prints VmRSS, what of it is anonymous, the
glibc heap (mallinfo2: in use, free inside the heap, mmapped), Python's small-object
allocator (arenas of 1 MiB, blocks in use, free blocks) and the polls so far;
`--tracemalloc` adds Python's own allocations and, at the end, the lines whose
allocations grew most from the start to the second sample and from there to the last
(tracing costs CPU and memory of its own: compare RSS only between runs without it).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, float]:
    """glibc's heap in MB (every arena): in use, free inside it, mmapped; {} elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError, TypeError):
        return {}
    fn.restype = _MallInfo2
    info = fn()
    mb = 1024 * 1024
    return {
        "malloc_in_use_mb": info.uordblks / mb,
        "malloc_free_mb": info.fordblks / mb,
        "malloc_mmapped_mb": info.hblkhd / mb,
    }


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator in MB: its arenas (1 MiB each), the blocks in use in
    them, and the free blocks of its partly used pools (what fragmentation leaves)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    found: dict[str, float] = {}
    for key, name in (
        ("# arenas allocated current", "pymalloc_arenas_mb"),
        ("# bytes in allocated blocks", "pymalloc_in_use_mb"),
        ("# bytes in available blocks", "pymalloc_free_mb"),
    ):
        match = re.search(re.escape(key) + r"\s*=\s*([\d,]+)", text)
        if match:
            value = int(match.group(1).replace(",", ""))
            found[name] = value if name == "pymalloc_arenas_mb" else value / 1024 / 1024
    return found


def _status() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


async def _child(args: argparse.Namespace) -> None:
    from bench.site_model import inline_site_yaml
    from edge_agent.cli.main import start_agent
    from edge_agent.config.site import load_config

    urls = json.loads(args.urls_file.read_text())
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    site = folder / "site.yaml"
    site.write_text(inline_site_yaml(urls, args.points, mqtt_port=args.mqtt_port))
    if args.tracemalloc:
        tracemalloc.start()
    agent = start_agent(load_config(site, environ={}))
    task = asyncio.create_task(agent.run())
    started = time.monotonic()
    snapshots: list[tracemalloc.Snapshot] = []
    for tick in range(int(args.seconds // args.every) + 1):
        await asyncio.sleep(max(0.0, started + tick * args.every - time.monotonic()))
        row: dict[str, Any] = {
            "t": round(time.monotonic() - started),
            "polls": sum(u.stats.good_polls for u in agent.units),
            **_status(),
            **_mallinfo(),
            **_pymalloc(),
        }
        if args.tracemalloc:
            row["traced_mb"] = tracemalloc.get_traced_memory()[0] / 1024 / 1024
            if tick < 2:
                snapshots.append(tracemalloc.take_snapshot())
        print(json.dumps(row), flush=True)
    if len(snapshots) == 2:
        last = tracemalloc.take_snapshot()
        # What connecting and the first polls added, then what polling added since.
        for span, (a, b) in (("start", snapshots), ("steady", (snapshots[1], last))):
            for stat in b.compare_to(a, "lineno")[:12]:
                frame = stat.traceback[0]
                where = f"{frame.filename}:{frame.lineno}"
                print(json.dumps({span: where, "grew_kb": round(stat.size_diff / 1024, 1)}))
    task.cancel()


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env=None if env is None else {**os.environ, **env},
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--every", type=float, default=60.0)
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--urls-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        asyncio.run(_child(args))
        return 0

    from tests.fixtures.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory(prefix="edge-memory-") as tmpdir:
        tmp = Path(tmpdir)
        broker = Mosquitto(tmp / "broker", listeners="set_tcp_nodelay true")
        broker.start()
        sim = _spawn(
            ["bench.sim_process", "--devices", str(args.devices), "--points", str(args.points)]
        )
        try:
            assert sim.stdout is not None
            urls_file = tmp / "urls.json"
            urls_file.write_text(json.dumps(json.loads(sim.stdout.readline())["urls"]))
            child_args = [
                "bench.memory_run",
                "--child",
                "--urls-file",
                str(urls_file),
                "--mqtt-port",
                str(broker.port),
                "--points",
                str(args.points),
                "--seconds",
                str(args.seconds),
                "--every",
                str(args.every),
                *(["--tracemalloc"] if args.tracemalloc else []),
            ]
            env = dict(x.split("=", 1) for x in args.env) or None
            agent = _spawn(child_args, env)
            try:
                assert agent.stdout is not None
                for line in agent.stdout:
                    print(line.rstrip(), flush=True)
            finally:
                _stop(agent)
        finally:
            _stop(sim)
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

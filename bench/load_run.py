"""Benchmark: loading a large site with inline points, and what stays in memory after.

    python -m bench.load_run [--devices 500 200] [--points 50] [--repeat 3] [--code DIR]

For each size, a fresh process reads the site file (bench/site_model.py's inline site:
one flow mapping per point, with unit, scale and description), times `read_yaml` and
`load_config` (CPU time of the process), then builds the agent's runtime (Agent: drivers,
plans, encoders; nothing started) and prints what is left: RSS (VmRSS) and its peak
(VmHWM), RSS once settled (heap.py: collected, frozen, trimmed, as `run` does before the
first poll), objects the garbage collector tracks, and how long one full collection takes,
before and after the agent's start-up freeze (edge_agent/runtime/heap.py). Medians of
`--repeat` processes.

`--code DIR` runs the same measurements against another checkout's packages (for example
`git archive <commit> | tar -x -C DIR`), for a before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.site_model import inline_site_yaml

ROOT = Path(__file__).resolve().parents[1]

# Run in the child, against whichever checkout is first on sys.path: public API only.
CHILD = r"""
import gc, json, sys, time
from pathlib import Path

def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out

def full_gc_ms():
    t = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t) * 1000

from edge_agent.config.document import read_yaml
from edge_agent.config.site import load_config
path = Path(sys.argv[1])
from edge_agent.runtime.agent import Agent
t = time.process_time()
loaded = load_config(path, environ={})
load_s = time.process_time() - t
gc.collect()
after_load = status()
agent = Agent(loaded)
gc.collect()
after_agent = status()
t = time.process_time()
read_yaml(path, environ={})  # last: its peak is not the agent's
read_s = time.process_time() - t
result = {
    "read_yaml_s": read_s,
    "load_config_s": load_s,
    "rss_loaded_mb": after_load["VmRSS"],
    "rss_agent_mb": after_agent["VmRSS"],
    "peak_mb": after_agent["VmHWM"],
    "objects": len(gc.get_objects()),
    "full_gc_ms": min(full_gc_ms() for _ in range(3)),
}
try:
    from edge_agent.runtime.heap import settle
except ImportError:  # a checkout from before the freeze
    settle = None
if settle is not None:
    settle()
    result["rss_settled_mb"] = status()["VmRSS"]
    result["objects_after_freeze"] = len(gc.get_objects())
    result["full_gc_after_freeze_ms"] = min(full_gc_ms() for _ in range(3))
print(json.dumps(result))
"""


def measure(site: Path, code: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(site)],
        cwd=code or ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, nargs="+", default=[500, 200])
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--code", type=Path, help="another checkout's packages to measure")
    args = p.parse_args(argv)
    columns = [
        "read_yaml_s",
        "load_config_s",
        "rss_loaded_mb",
        "rss_agent_mb",
        "rss_settled_mb",
        "peak_mb",
        "objects",
        "full_gc_ms",
        "objects_after_freeze",
        "full_gc_after_freeze_ms",
    ]
    print(f"| site | {' | '.join(columns)} |")
    print(f"|---|{'---:|' * len(columns)}")
    with tempfile.TemporaryDirectory(prefix="edge-load-") as tmp:
        for devices in args.devices:
            site = Path(tmp) / f"site-{devices}.yaml"
            urls = [f"tcp://10.0.{d // 250}.{d % 250 + 1}:502" for d in range(devices)]
            site.write_text(inline_site_yaml(urls, args.points))
            runs = [measure(site, args.code) for _ in range(args.repeat)]
            cells = []
            for column in columns:
                values = [r[column] for r in runs if column in r]
                cells.append(f"{statistics.median(values):,.2f}" if values else "-")
            print(f"| {devices} x {args.points} inline | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

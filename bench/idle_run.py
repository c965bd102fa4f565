"""Wake-ups of an idle agent: slow polls, with alarms, energy and the HTTP port configured.

    python -m bench.idle_run [--devices 5] [--interval 10] [--seconds 60] [--repeats 2]
                             [--before DIR]

Runs `edge-agent run` as a child process against simulated Modbus devices and a Mosquitto
on loopback, and reads from /proc, over `--seconds` after a warm-up: voluntary context
switches of all its threads (each is a thread going to sleep: its wake-ups, as the kernel
counts them) and its user + system CPU time. Between two polls an agent that only waits
for work should not wake at all; at 10 s polls every wake-up is overhead.

`--before DIR` also runs the agent from another source tree (e.g. `git archive` of an
earlier commit unpacked in DIR, put first on PYTHONPATH), interleaved with this one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.server_process import free_port

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
POINTS = ("--points", "10")  # what site_yaml reads


def site_yaml(urls: list[str], *, interval_s: float, mqtt_port: int) -> str:
    """Devices of 10 float32 points; an energy counter, a stale, a limit and a comm-loss
    alarm on each: every timed stage configured, nothing for it to do between polls."""
    lines = [
        "site: idle",
        "gateway: gw",
        f"mqtt: {{url: 'mqtt://127.0.0.1:{mqtt_port}', prefix: idle, qos: 1}}",
        "outbox: {path: var/outbox.sqlite}",
        "energy: {timezone: UTC, state_save_s: 60}",
        "devices:",
    ]
    for d, url in enumerate(urls):
        lines += [
            f"  - name: meter-{d:02d}",
            "    driver: modbus",
            f"    url: {url}",
            f"    interval_s: {interval_s:g}",
            "    alarms: [{kind: comm_loss, on_delay_s: 30}]",
            "    points:",
            "      - {name: p00, address: 0, type: float32, unit: kWh,"
            " energy: {kind: electricity, direction: import}}",
            "      - {name: p01, address: 2, type: float32, unit: V,"
            " alarms: [{kind: stale, intervals: 3}, {kind: high, limit: 1.0e9}]}",
        ]
        lines += [
            f"      - {{name: p{p:02d}, address: {2 * p}, type: float32, unit: V}}"
            for p in range(2, 10)
        ]
    return "\n".join(lines) + "\n"


def _sample(pid: int) -> tuple[int, float]:
    """(voluntary context switches of every thread, user + system CPU seconds)."""
    switches = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return switches, (int(fields[11]) + int(fields[12])) / TICKS


def measure(
    site: Path, *, source: Path | None, http_port: int, warmup_s: float, seconds: float
) -> dict[str, float]:
    """One agent run: wake-ups/s and CPU ms/s over `seconds` after `warmup_s`."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = f"{source}{os.pathsep}{env.get('PYTHONPATH', '')}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", str(site), "--http", f"127.0.0.1:{http_port}"],
        cwd=site.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(warmup_s)  # a benchmark's warm-up, not a synchronisation
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited: {agent.stderr.read() if agent.stderr else ''}")
        s0, c0 = _sample(agent.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        s1, c1 = _sample(agent.pid)
        t1 = time.monotonic()
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
    return {"wakeups_per_s": (s1 - s0) / (t1 - t0), "cpu_ms_per_s": 1000 * (c1 - c0) / (t1 - t0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=5)
    p.add_argument("--interval", type=float, default=10.0, help="poll period, s")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--before", type=Path, help="another source tree to compare, interleaved")
    args = p.parse_args(argv)
    trees: list[tuple[str, Path | None]] = [("this", None)]
    if args.before is not None:
        trees.insert(0, ("before", args.before.resolve()))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="edge-idle-") as tmpdir:
        tmp = Path(tmpdir)
        broker = Mosquitto(tmp / "broker", listeners="set_tcp_nodelay true")
        broker.start()
        sim = subprocess.Popen(
            [sys.executable, "-m", "bench.sim_process", "--devices", f"{args.devices}", *POINTS],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            assert sim.stdout is not None
            urls = json.loads(sim.stdout.readline())["urls"]
            for r in range(args.repeats):
                for name, source in trees:
                    run_dir = tmp / f"{name}-{r}"
                    run_dir.mkdir()
                    site = run_dir / "site.yaml"
                    site.write_text(
                        site_yaml(urls, interval_s=args.interval, mqtt_port=broker.port)
                    )
                    print(f"{name} #{r + 1} ...", file=sys.stderr)
                    row = measure(
                        site,
                        source=source,
                        http_port=free_port(),
                        warmup_s=args.warmup,
                        seconds=args.seconds,
                    )
                    print(f"  {json.dumps(row)}", file=sys.stderr)
                    results[name].append(row)
        finally:
            sim.terminate()
            sim.wait(10)
            broker.stop()
    print(f"{args.devices} devices x 10 points at {args.interval:g} s, {args.seconds:g} s each")
    print("| agent | wake-ups/s (runs) | median | CPU ms/s (runs) | median |")
    print("|---|---|---:|---|---:|")
    for name, rows in results.items():
        w = [r["wakeups_per_s"] for r in rows]
        c = [r["cpu_ms_per_s"] for r in rows]
        print(
            f"| {name} | {' / '.join(f'{x:.2f}' for x in w)} | {statistics.median(w):.2f} "
            f"| {' / '.join(f'{x:.2f}' for x in c)} | {statistics.median(c):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the agent against a bare pymodbus + paho loop, through a real Mosquitto.

    scripts/bench [--devices 50] [--points 50] [--seconds 10]
                  [--jitter-devices 500] [--jitter-seconds 15] [--skip-jitter]
                  [--jitter-inline] [--jitter-only] [--rss-every S] [--worker-env N=V]
                  [--skip-outbox] [--outbox-backlog-s 600]
                  [--skip-saturation] [--skip-1s] [--repeats 1]

Runs, each in its own processes (simulators, subscriber, worker), on this machine:
1. saturation: N devices x M float32 points polled back to back, by the agent and by the
   bare loop (pymodbus read + struct decode + json + one paho publish per device per poll);
2. 1 s polls: N devices x M points polled once a second (fixed phase per device), by the
   bare loop and by the agent, with publish latency (poll answer to PUBACK, p50/p99) and
   wake-ups: voluntary context switches of all the worker's threads per second (each is
   one sleep ended) and turns of its event loop per second;
3. steady: the jitter scenario, J devices x M points at 1 s polls, by the agent (with
   --jitter-inline, from a site file of inline points loaded by load_config, as
   `edge-agent run` does; --jitter-only runs this scenario alone; --rss-every samples
   the worker's VmRSS from /proc that often, --worker-env adds to its environment);
4. the outbox: store throughput, and the replay of a 10-minute outage backlog at the
   steady load while live data keeps flowing (bench/outbox_run.py).
It prints one table: points/s delivered to a QoS 1 subscriber, worker CPU µs per point,
RSS, poll jitter p50/p99. Nothing here asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.fixtures.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _first_json(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited before it was ready (code {proc.wait()})")
    return json.loads(line)  # type: ignore[no-any-return]


def _delivered(lines: list[dict[str, Any]], t0: float, t1: float) -> float:
    """Points the subscriber received between t0 and t1 (interpolated on its samples)."""

    def at(t: float) -> float:
        before = [x for x in lines if x["t"] <= t]
        after = [x for x in lines if x["t"] >= t]
        if not before or not after:
            raise RuntimeError("subscriber samples do not cover the measurement window")
        a, b = before[-1], after[0]
        if b["t"] == a["t"]:
            return float(a["points"])
        return a["points"] + (b["points"] - a["points"]) * (t - a["t"]) / (b["t"] - a["t"])

    return at(t1) - at(t0)


def scenario(
    kind: str,
    *,
    broker: Mosquitto,
    devices: int,
    points: int,
    interval: float,
    seconds: float,
    warmup: float,
    tmp: Path,
    worker_args: tuple[str, ...] = (),
    probe: bool = False,
    rss_every: float = 0.0,
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One worker run with its own simulators and subscriber; returns its row.

    `probe`: an idle asyncio loop beside the worker measures the machine's own jitter over
    the same window (bench/loop_probe.py), the floor under the agent's. `rss_every`: the
    worker's VmRSS sampled that often from its start (seconds; 0: not sampled).
    `worker_env`: variables added to the worker's environment (GLIBC_TUNABLES=..., say).
    """
    with ExitStack() as stack:
        sim = _spawn(["bench.sim_process", "--devices", str(devices), "--points", str(points)])
        stack.callback(_stop, sim)
        urls = _first_json(sim, "simulator")["urls"]
        urls_file = tmp / f"urls-{kind}.json"
        urls_file.write_text(json.dumps(urls))
        sub = _spawn(["bench.subscriber", "--port", str(broker.port), "--topic", "bench/#"])
        stack.callback(_stop, sub)
        _first_json(sub, "subscriber")
        # Read its samples as they come: a full pipe would stop it (4 lines a second fill
        # 64 KB in about four minutes).
        sub_lines: list[str] = []
        assert sub.stdout is not None
        reader = threading.Thread(target=sub_lines.extend, args=(sub.stdout,), daemon=True)
        reader.start()
        worker = _spawn(
            [
                "bench.workers",
                kind,
                "--urls-file",
                str(urls_file),
                "--mqtt-port",
                str(broker.port),
                "--points",
                str(points),
                "--interval",
                str(interval),
                "--warmup",
                str(warmup),
                "--seconds",
                str(seconds),
                *worker_args,
            ],
            env=worker_env,
        )
        stack.callback(_stop, worker)
        curve = RssCurve(worker.pid, rss_every) if rss_every > 0 else None
        if probe:
            prober = _spawn(
                ["bench.loop_probe", "--warmup", str(warmup), "--seconds", str(seconds)]
            )
            stack.callback(_stop, prober)
        result = _first_json(worker, f"{kind} worker")
        if curve is not None:
            result["rss_curve"] = curve.stop()
        if probe:
            result.update(_first_json(prober, "loop probe"))
        time.sleep(0.6)  # let the subscriber print a sample past the window's end
        _stop(sub)
        reader.join(5)
        samples = [json.loads(line) for line in sub_lines if line.strip()]
        try:
            delivered = _delivered(samples, result["t0"], result["t1"])
        except RuntimeError as exc:  # keep the worker's row: its jitter and memory stand
            print(f"{kind}: delivered points not counted: {exc}", file=sys.stderr)
            delivered = float("nan")
        window = result["t1"] - result["t0"]
        result["delivered_per_s"] = delivered / window
        result["cpu_us_per_point"] = result["cpu_s"] / max(1, result["points"]) * 1e6
        result["polled_per_s"] = result["points"] / window
        result["cpu_share"] = result["cpu_s"] / window
        return result


class RssCurve:
    """VmRSS of another process sampled every `every_s` seconds, from /proc, by a thread:
    how the worker's resident set moves while it polls (the worker itself is not touched)."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.every_s):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.monotonic() - start, int(line.split()[1]) / 1024))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--jitter-devices", type=int, default=500)
    p.add_argument("--jitter-seconds", type=float, default=15.0)
    p.add_argument("--skip-jitter", action="store_true")
    p.add_argument("--skip-saturation", action="store_true")
    p.add_argument("--skip-1s", action="store_true", help="skip the N x M rows at 1 s polls")
    p.add_argument(
        "--repeats", type=int, default=1, help="run the 1 s rows this many times, interleaved"
    )
    p.add_argument(
        "--jitter-inline", action="store_true", help="jitter: a site file of inline points"
    )
    p.add_argument("--jitter-only", action="store_true", help="only the jitter scenario")
    p.add_argument(
        "--rss-every",
        type=float,
        default=0.0,
        help="jitter: sample the worker's VmRSS every this many seconds (0: no)",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="jitter: add this to the agent worker's environment (repeatable)",
    )
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument(
        "--slot",
        type=float,
        help="agent: polling.slot_s (default: the site default; 0: every device its own phase)",
    )
    p.add_argument(
        "--bare-slot",
        type=float,
        help="the bare loop at 1 s polls in poll slots of this width too (default: no slots)",
    )
    p.add_argument("--skip-outbox", action="store_true", help="skip the outbox benchmark")
    p.add_argument(
        "--outbox-backlog-s",
        type=float,
        default=600.0,
        help="outage length the outbox replay benchmark drains (default 600)",
    )
    args = p.parse_args(argv)

    slot: tuple[str, ...] = () if args.slot is None else ("--slot", str(args.slot))
    bare_slot: tuple[str, ...] = () if args.bare_slot is None else ("--slot", str(args.bare_slot))
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # As deploy/mosquitto.conf: without it, PUBACKs wait on delayed ACKs (the 40 ms mode).
        broker = Mosquitto(tmp / "broker", listeners="set_tcp_nodelay true")
        broker.start()
        try:
            common = {"broker": broker, "points": args.points, "warmup": args.warmup, "tmp": tmp}
            for kind in () if args.skip_saturation or args.jitter_only else ("bare", "agent"):
                print(f"saturation: {kind}, {args.devices} x {args.points} ...", file=sys.stderr)
                rows.append(
                    (
                        f"{kind} saturation {args.devices}x{args.points}",
                        scenario(
                            kind,
                            devices=args.devices,
                            interval=0.001,
                            seconds=args.seconds,
                            worker_args=slot if kind == "agent" else (),
                            **common,
                        ),
                    )
                )
            for repeat in range(0 if args.skip_1s or args.jitter_only else args.repeats):
                for kind in ("bare", "agent"):
                    print(f"1 s polls: {kind}, {args.devices} x {args.points} ...", file=sys.stderr)
                    run = f" #{repeat + 1}" if args.repeats > 1 else ""
                    if kind == "bare" and bare_slot:
                        run = f" (slots {args.bare_slot} s){run}"
                    rows.append(
                        (
                            f"{kind} 1 s polls {args.devices}x{args.points}{run}",
                            scenario(
                                kind,
                                devices=args.devices,
                                interval=1.0,
                                seconds=args.seconds,
                                worker_args=slot if kind == "agent" else bare_slot,
                                **common,
                            ),
                        )
                    )
            if not args.skip_jitter:
                print(
                    f"steady: agent, {args.jitter_devices} x {args.points} at 1 s ...",
                    file=sys.stderr,
                )
                inline = " inline" if args.jitter_inline else ""
                rows.append(
                    (
                        f"agent 1 s polls {args.jitter_devices}x{args.points}{inline}",
                        scenario(
                            "agent",
                            devices=args.jitter_devices,
                            interval=1.0,
                            seconds=args.jitter_seconds,
                            worker_args=(("--inline-site",) if args.jitter_inline else ()) + slot,
                            probe=True,
                            rss_every=args.rss_every,
                            worker_env=dict(x.split("=", 1) for x in args.worker_env) or None,
                            **common,
                        ),
                    )
                )
        finally:
            broker.stop()

    header = (
        "| scenario | delivered pts/s | polled pts/s | CPU µs/pt | CPU share | RSS MB "
        "| jitter p50 ms | jitter p99 ms | jitter max ms | latency p50 ms | latency p99 ms "
        "| wake-ups/s | loop turns/s | commits/msg |"
    )
    print(
        f"\n{time.strftime('%Y-%m-%d')} on {platform.node() or 'this machine'}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, QoS 1 via Mosquitto\n"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {_fmt(r['delivered_per_s'], ',.0f')} | {_fmt(r['polled_per_s'], ',.0f')} "
            f"| {_fmt(r['cpu_us_per_point'], '.2f')} | {_fmt(r['cpu_share'], '.0%')} "
            f"| {_fmt(r['rss_mb'], '.0f')} | {_fmt(r.get('jitter_p50_ms'), '.2f')} "
            f"| {_fmt(r.get('jitter_p99_ms'), '.2f')} | {_fmt(r.get('jitter_max_ms'), '.2f')} "
            f"| {_fmt(r.get('latency_p50_ms'), '.2f')} | {_fmt(r.get('latency_p99_ms'), '.2f')} "
            f"| {_fmt(r.get('wakeups_per_s'), ',.0f')} "
            f"| {_fmt(r.get('loop_turns_per_s'), ',.0f')} "
            f"| {_fmt(r.get('commits_per_message'), '.2f')} |"
        )
        if "vm_rss_mb" in r:
            gc_text = ", ".join(f"{k} {v:.1f}" for k, v in r.items() if k.startswith("gc"))
            print(
                f"|   {name}: RSS now {r['vm_rss_mb']:.0f} MB (peak {r['rss_mb']:.0f}), "
                f"load {r['load_s']:.2f} s CPU, {r['overruns']} overruns, "
                f"{r['tracked_objects']:,} tracked + {r['frozen_objects']:,} frozen objects; "
                f"{gc_text} |"
            )
        if r.get("rss_curve"):
            curve_text = ", ".join(f"{t:.0f} s {mb:.1f}" for t, mb in r["rss_curve"])
            print(f"|   {name}: VmRSS (MB) since the worker started: {curve_text} |")
        if "probe_p99_ms" in r:
            print(
                f"|   machine (idle loop beside it): jitter p50 {r['probe_p50_ms']:.2f} ms, "
                f"p99 {r['probe_p99_ms']:.2f} ms, max {r['probe_max_ms']:.2f} ms |"
            )
    bare = dict(rows).get(f"bare saturation {args.devices}x{args.points}")
    agent = dict(rows).get(f"agent saturation {args.devices}x{args.points}")
    if bare and agent:
        print(
            f"\nagent/bare delivered points/s at saturation: "
            f"{agent['delivered_per_s'] / bare['delivered_per_s']:.2f}x"
        )
        print(
            f"agent/bare CPU µs per point at saturation: "
            f"{agent['cpu_us_per_point'] / bare['cpu_us_per_point']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(dict(rows), indent=2))
    if not args.skip_outbox and not args.jitter_only:
        from bench import outbox_run

        outbox_run.main(
            [
                "--points",
                str(args.points),
                "--devices",
                str(args.jitter_devices),
                "--backlog-s",
                str(args.outbox_backlog_s),
            ]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Platform uplink cost: the store, and draining a queue to real HTTPS platforms.

    .venv/bin/python -m bench.uplink_run [--drain 20000] [--meters 50] [--counters 3]

1. add: `UplinkStore.add` as the agent opens the store (WAL, synchronous=FULL: one fsync
   per call) with batches of 1, 10 and 100 records, for one and two endpoints (a record
   goes into the history and once into each endpoint's queue). The agent calls it once
   per event-loop turn with every record of that turn (PlatformUplink.record buffers
   them; a 15-minute boundary of a 50-meter x 3-counter site is one add of ~150).
2. drain: the queue holds `--drain` records (fewer for batch 1: one request per record)
   and the senders (PlatformUplink.run, the agent's code) post it to real HTTPS receivers
   (simulators/platform/receiver.py, one process per endpoint, self-signed certificate as
   the CA file, the example province template, `ack_json: {code: 0}`) with batches of 1,
   50 and 500 records, one and two endpoints; records/s per endpoint until every queue is
   empty. One more run drains the head of a queue 10x larger, to see whether the rate
   holds for a big backlog.
3. CPU: this process's CPU time (the senders' threads included, the receivers not) per
   record added or delivered to one endpoint.

The backlog of a long outage is extrapolated from the measured drain rate: `--meters` x
`--counters` interval series, 96 intervals a day, `--days` days (183: the six months the
history keeps). It is an extrapolation, not a measured drain of millions of records.
Nothing here asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.catalog import Kind, shipped
from edge_agent.uplink.config import UplinkConfig, UplinkEndpoint
from edge_agent.uplink.platform import PlatformUplink
from edge_agent.uplink.store import IntervalRecord, UplinkStore

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = shipped(Kind.TEMPLATES, "example-province")
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2026, 5, 1, tzinfo=SHANGHAI)
INTERVAL = dt.timedelta(minutes=15)


def records(n: int, *, first: int = 0, meters: int = 50) -> list[IntervalRecord]:
    """`n` distinct interval records: `meters` meters, then the next 15 minutes."""
    out = []
    for k in range(first, first + n):
        start = T0 + INTERVAL * (k // meters)
        end = start + INTERVAL
        out.append(
            IntervalRecord(
                "bench-site", "gw-01", f"m{k % meters:03d}", "energy_import", "electricity",
                start.isoformat(), end.isoformat(),
                int(start.timestamp() * 1000), int(end.timestamp() * 1000),
                12.345678 + k % 97, "kWh", "good", 1.0,
            )
        )  # fmt: skip
    return out


@dataclass
class AddResult:
    batch: int
    endpoints: int
    calls: int
    ms_per_call: float
    us_per_record: float
    cpu_us_per_record: float


def bench_add(tmp: Path, *, batch: int, endpoints: int, calls: int) -> AddResult:
    """`calls` x UplinkStore.add(batch records) on a fresh file, synchronous=FULL."""
    store = UplinkStore(
        tmp / f"add-{batch}-{endpoints}.sqlite", [f"e{i}" for i in range(endpoints)]
    )
    work = [records(batch, first=i * batch) for i in range(calls + 5)]
    for chunk in work[:5]:  # warm up: file grown, pages cached
        store.add(chunk)
    t0, c0 = time.perf_counter(), time.process_time()
    for chunk in work[5:]:
        store.add(chunk)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    n = calls * batch
    return AddResult(batch, endpoints, calls, wall / calls * 1e3, wall / n * 1e6, cpu / n * 1e6)


class Receiver:
    """simulators/platform/receiver.py in a process of its own (mode ok)."""

    def __init__(self, cert_dir: Path) -> None:
        command = ["-m", "simulators.platform.receiver", "--port", "0", "--cert-dir", str(cert_dir)]
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "<url>  (CA file <cert>)" once listening
        if not line:
            raise RuntimeError(f"the receiver exited at start (code {self.proc.wait()})")
        self.url = line.split()[0]
        self.cert = cert_dir / "cert.pem"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class DrainResult:
    batch: int
    endpoints: int
    queued: int
    drained: int  # per endpoint
    seconds: float
    requests: int
    cpu_us_per_record: float

    @property
    def per_endpoint_per_s(self) -> float:
        return self.drained / self.seconds


async def bench_drain(
    tmp: Path, *, batch: int, endpoints: int, queued: int, drain: int
) -> DrainResult:
    """Queue `queued` records, run the senders until each endpoint has `drain` acknowledged."""
    name = f"drain-{batch}-{endpoints}-{queued}"
    receivers = [Receiver(tmp / name / f"recv-{i}") for i in range(endpoints)]
    try:
        config = UplinkConfig(
            path=Path(f"{name}.sqlite"),
            endpoints=tuple(
                UplinkEndpoint(
                    name=f"platform-{i}",
                    url=r.url,
                    template=TEMPLATE,
                    ca_file=r.cert,
                    batch=batch,
                    ack_json={"code": 0},
                )
                for i, r in enumerate(receivers)
            ),
        )
        uplink = PlatformUplink(config, site="bench-site", gateway="gw-01", base=tmp)
        for first in range(0, queued, 2000):
            uplink.store.add(records(min(2000, queued - first), first=first))
        senders = uplink.senders
        t0, c0 = time.perf_counter(), time.process_time()
        task = asyncio.create_task(uplink.run())
        # Polled: the senders signal nothing; 10 ms is the resolution, <= 0.2 % of a run.
        while any(s.stats.acked_records < drain for s in senders) and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if any(s.stats.failures for s in senders):
            raise RuntimeError(f"failed requests: {[s.stats.last_error for s in senders]}")
        drained = min(s.stats.acked_records for s in senders)
        uplink.store.close()
    finally:
        for r in receivers:
            r.stop()
    return DrainResult(
        batch,
        endpoints,
        queued,
        drained,
        seconds,
        sum(s.stats.sent_requests for s in senders),
        cpu / (drained * endpoints) * 1e6,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--drain", type=int, default=20_000, help="records drained per run")
    p.add_argument("--drain-batch1", type=int, default=2_000, help="the same, batch 1")
    p.add_argument("--meters", type=int, default=50, help="for the 6-month extrapolation")
    p.add_argument("--counters", type=int, default=3, help="interval series per meter")
    p.add_argument("--days", type=int, default=183)
    p.add_argument("--add-seconds", type=float, default=1.5, help="about, per add row")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-bench-uplink-") as tmpdir:
        tmp = Path(tmpdir)
        print("uplink store add ...", file=sys.stderr)
        probe = bench_add(tmp, batch=1, endpoints=1, calls=50)  # sizes the runs below
        adds = []
        for endpoints in (1, 2):
            for batch in (1, 10, 100):
                per_call_s = probe.ms_per_call / 1e3 + batch * 40e-6 * endpoints
                calls = max(20, int(args.add_seconds / per_call_s))
                adds.append(bench_add(tmp, batch=batch, endpoints=endpoints, calls=calls))
        drains = []
        for endpoints in (1, 2):
            for batch in (1, 50, 500):
                n = args.drain_batch1 if batch == 1 else args.drain
                print(f"uplink drain: batch {batch}, {endpoints} endpoint(s) ...", file=sys.stderr)
                drains.append(
                    asyncio.run(
                        bench_drain(tmp, batch=batch, endpoints=endpoints, queued=n, drain=n)
                    )
                )
        print("uplink drain: head of a 10x queue ...", file=sys.stderr)
        big = asyncio.run(
            bench_drain(tmp, batch=500, endpoints=1, queued=10 * args.drain, drain=args.drain)
        )
        drains.append(big)

    print("\nUplinkStore.add, WAL + synchronous=FULL (the agent's store)\n")
    print("| records per add | endpoints | calls | ms per add | µs per record | CPU µs/record |")
    print("|---:|---:|---:|---:|---:|---:|")
    for a in adds:
        print(
            f"| {a.batch} | {a.endpoints} | {a.calls:,} | {a.ms_per_call:.2f} | "
            f"{a.us_per_record:.0f} | {a.cpu_us_per_record:.0f} |"
        )
    backlog = args.meters * args.counters * 96 * args.days
    print(
        f"\nDrain to local HTTPS receivers (one process each); backlog = {args.meters} meters"
        f" x {args.counters} counters x 96/day x {args.days} days = {backlog:,} records,"
        " drain time EXTRAPOLATED from the measured rate\n"
    )
    print(
        "| batch | endpoints | queued | drained/endpoint | requests | s | records/s/endpoint"
        " | CPU µs/record | 6-month backlog (extrapolated) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in drains:
        print(
            f"| {d.batch} | {d.endpoints} | {d.queued:,} | {d.drained:,} | {d.requests:,} | "
            f"{d.seconds:.1f} | {d.per_endpoint_per_s:,.0f} | {d.cpu_us_per_record:.0f} | "
            f"{_duration(backlog / d.per_endpoint_per_s)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

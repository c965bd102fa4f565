"""Benchmark of the Modbus read path alone: the agent's driver against a bare pymodbus client.

    .venv/bin/python -m bench.modbus_run [--devices 10] [--points 50 100] [--seconds 3]
                                         [--repeats 3]
    .venv/bin/python -m bench.modbus_run --only agent --polls 2000    # for callgrind

One simulator process (bench/sim_process.py: N devices of M float32 holding registers, one
TCP port each) serves both. In this process, one task per device polls back to back for
the window: "agent" is `ModbusDriver.read()` (requests, answer checks, decode, scaling,
quality), "pipelined" the same with `max_in_flight: 8` (the simulator takes pipelined
requests), "bare" is pymodbus `read_holding_registers` per request of at most 125
registers plus a `struct` decode of the floats. The two run interleaved, `--repeats`
times; CPU µs per point and per request is this process's CPU time (user + system, both shown) over
the window, which the other processes on a busy machine do not change much. Prints one
table of medians; nothing here asserts.

`--polls N` instead polls each device N times and exits, so that an instruction count
(`valgrind --tool=callgrind`) of two values of N gives instructions per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from bench.site_model import bench_profile
from drivers.modbus.config import ModbusDevice
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import plan_requests

ROOT = Path(__file__).resolve().parents[1]
MAX_REGISTERS = 125

Poller = Callable[[], Awaitable[int]]  # one poll; returns the points read


async def _agent_pollers(
    urls: list[str], points: int, *, max_in_flight: int = 1
) -> tuple[list[Poller], Callable[[], None]]:
    profile = bench_profile(points)
    drivers = [
        ModbusDriver(
            ModbusDevice.model_construct(
                name=f"m{i:04d}",
                driver="modbus",
                url=url,
                timeout_s=2.0,
                profile="bench",
                max_in_flight=max_in_flight,
            ),
            profile,
        )
        for i, url in enumerate(urls)
    ]
    for d in drivers:
        await d.connect()

    def poller(driver: ModbusDriver) -> Poller:
        async def poll() -> int:
            result = await driver.read()
            if result.issues:
                raise RuntimeError(f"bad points: {result.issues}")
            return len(result.values)

        return poll

    def close() -> None:
        for d in drivers:
            d.connection.close()

    return [poller(d) for d in drivers], close


async def _bare_pollers(urls: list[str], points: int) -> tuple[list[Poller], Callable[[], None]]:
    registers = 2 * points
    chunks = [
        (start, min(MAX_REGISTERS - MAX_REGISTERS % 2, registers - start))
        for start in range(0, registers, MAX_REGISTERS - MAX_REGISTERS % 2)
    ]
    clients = []
    for url in urls:
        host, port = url.removeprefix("tcp://").split(":")
        client = AsyncModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        await client.connect()
        clients.append(client)

    def poller(client: AsyncModbusTcpClient) -> Poller:
        async def poll() -> int:
            n = 0
            for start, count in chunks:
                rr = await client.read_holding_registers(start, count=count, device_id=1)
                regs = rr.registers
                n += len(struct.unpack(f">{count // 2}f", struct.pack(f">{count}H", *regs)))
            return n

        return poll

    def close() -> None:
        for c in clients:
            c.close()

    return [poller(c) for c in clients], close


async def _pipelined_pollers(
    urls: list[str], points: int
) -> tuple[list[Poller], Callable[[], None]]:
    return await _agent_pollers(urls, points, max_in_flight=8)


KINDS = {"agent": _agent_pollers, "bare": _bare_pollers, "pipelined": _pipelined_pollers}


def _cpu() -> tuple[float, float]:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime, use.ru_stime


async def _window(
    pollers: list[Poller], seconds: float, polls: int | None
) -> tuple[float, float, int]:
    """User and system CPU seconds, and points read by all pollers in the window (or
    `polls` each)."""
    stop = False
    total = [0]

    async def loop(poll: Poller) -> None:
        k = 0
        while not stop and (polls is None or k < polls):
            total[0] += await poll()
            k += 1

    for poll in pollers:
        await poll()  # warm up: the first poll also connects lazily
    user, system = _cpu()
    tasks = [asyncio.create_task(loop(p)) for p in pollers]
    if polls is None:
        await asyncio.sleep(seconds)
        stop = True
    await asyncio.gather(*tasks)
    user1, system1 = _cpu()
    return user1 - user, system1 - system, total[0]


async def _main(args: argparse.Namespace) -> None:
    kinds = [args.only] if args.only else ["bare", "agent", "pipelined"]
    rows: list[str] = []
    for points in args.points:
        sim = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [sys.executable, "-m", "bench.sim_process", "--devices", str(args.devices),
             "--points", str(points)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sim.stdout is not None
            urls = json.loads(sim.stdout.readline())["urls"]
            requests_per_poll = len(plan_requests(bench_profile(points).points))
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            for _ in range(1 if args.polls else args.repeats):
                for kind in kinds:
                    pollers, close = await KINDS[kind](urls, points)
                    try:
                        user_s, system_s, n = await _window(pollers, args.seconds, args.polls)
                    finally:
                        close()
                    runs[kind].append((user_s / n * 1e6, system_s / n * 1e6))
            med = {k: statistics.median(u + s for u, s in v) for k, v in runs.items()}
            for kind in kinds:
                ratio = f"{med[kind] / med['bare']:.2f}" if "bare" in med else "-"
                user = statistics.median(u for u, _ in runs[kind])
                system = statistics.median(s for _, s in runs[kind])
                rows.append(
                    f"| {kind} | {args.devices} x {points} | {requests_per_poll} "
                    f"| {med[kind]:.2f} | {user:.2f} | {system:.2f} "
                    f"| {med[kind] * points / requests_per_poll:.1f} | {ratio} "
                    f"| {', '.join(f'{u + s:.2f}' for u, s in runs[kind])} |"
                )
        finally:
            sim.terminate()
            sim.wait(10)
    print("| read path | devices x points | requests/poll | CPU µs/pt | user | system "
          "| CPU µs/request | / bare | runs µs/pt |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--points", type=int, nargs="+", default=[50, 100])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=sorted(KINDS))
    p.add_argument("--polls", type=int, help="poll each device this often, then exit")
    args = p.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()

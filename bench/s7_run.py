"""Benchmark of S7 reads beside Modbus reads: points/s and driver CPU per point.

    .venv/bin/python -m bench.s7_run [--seconds 5]

One site file with, per size (100 and 1,000 float points), a Modbus TCP device (float32
holding registers 0, 2, 4, ...) and S7 CPUs (REALs at DB1.DBD0, 4, 8, ..., PDU 240 and
960), served by `edge-agent simulate` in a child process so this process's CPU is the
driver's alone. Each driver is polled back to back for the window; CPU µs/pt is this
process's CPU time over the window per point read. Prints a table; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drivers.contract import PolledDriver
from drivers.registry import plugin
from edge_agent.config.site import load_config
from tests.fixtures.server_process import free_port

SIZES = (100, 1000)


def _site(ports: dict[str, int]) -> str:
    lines = [
        "site: bench",
        "gateway: gw",
        'mqtt: {url: "mqtt://127.0.0.1:1883"}',
        "devices:",
    ]
    for n in SIZES:
        lines += [
            f"- name: modbus-{n}",
            "  driver: modbus",
            f"  url: tcp://127.0.0.1:{ports[f'modbus-{n}']}",
            "  points:",
            *(f"    - {{name: p{i}, address: {2 * i}, type: float32}}" for i in range(n)),
        ]
        for pdu in (240, 960):
            name = f"s7-{n}-pdu{pdu}"
            lines += [
                f"- name: {name}",
                "  driver: s7",
                f"  url: s7://127.0.0.1:{ports[name]}",
                f"  pdu_size: {pdu}",
                "  points:",
                *(f"    - {{name: p{i}, address: DB1.DBD{4 * i}, type: REAL}}" for i in range(n)),
            ]
    return "\n".join(lines) + "\n"


async def _measure(driver: PolledDriver, seconds: float) -> tuple[float, float, int]:
    await driver.read()  # connect and warm up
    polls = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        poll = await driver.read()
        assert not poll.issues, poll.issues
        polls += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await driver.close()
    n = len(driver.points)
    return polls * n / wall, cpu / (polls * n) * 1e6, polls


async def _main(seconds: float) -> None:
    names = [f"modbus-{n}" for n in SIZES] + [
        f"s7-{n}-pdu{pdu}" for n in SIZES for pdu in (240, 960)
    ]
    ports = {name: free_port() for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yaml"
        site.write_text(_site(ports))
        log = Path(tmp) / "simulate.log"
        control = f"127.0.0.1:{free_port()}"
        with log.open("wb") as out:
            child = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                [sys.executable, "-m", "edge_agent", "simulate", str(site), "--control", control],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while log.read_text().count("serving ") < len(names):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"simulate did not start:\n{log.read_text()}")
                await asyncio.sleep(0.05)
            loaded = load_config(site)
            print("| device | points | requests/poll | points/s | CPU µs/pt | polls |")
            print("|---|---:|---:|---:|---:|---:|")
            for device in loaded.site.devices:
                p = plugin(device.driver)
                (driver,) = p.open_line(p.line_key(device), [(device, None)]).drivers
                requests = p.plan_summary(device, None, "").requests
                rate, cpu_us, polls = await _measure(driver, seconds)
                print(
                    f"| {device.name} | {len(driver.points)} | {requests} | "
                    f"{rate:,.0f} | {cpu_us:.2f} | {polls} |"
                )
        finally:
            child.terminate()
            child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(_main(args.seconds))


if __name__ == "__main__":
    main()

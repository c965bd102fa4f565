"""Benchmark of the DL/T 645 driver: codec cost, and transactions over a pty pair.

    .venv/bin/python -m bench.dlt645 [--seconds 5]

1. codec: build a read request, parse a 3-field answer frame, decode its fields (µs each);
2. line: one driver polling 3 meters' worth of DIs through a socat pty pair to the
   simulator, both in this process and loop (so the figure is the two together), and
   the same through serial-over-TCP;
3. the wire time of one DI at 2400 8E1 (computed, not measured: a pty ignores baud).
Prints a small table; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from drivers.dlt645.config import Dlt645Device, parse_endpoint
from drivers.dlt645.driver import Dlt645Driver
from drivers.dlt645.formats import decode, encode, parse_format
from drivers.dlt645.frame import (
    Frame,
    FrameParser,
    address_bytes,
    di_bytes,
    encode_frame,
    read_request,
)
from drivers.dlt645.line import Dlt645Line
from simulators.dlt645.site import Dlt645MeterSpec, serve

DIS = ["00010000", "00020000", "0201FF00", "0202FF00", "0203FF00", "0206FF00", "02800002"]


def bench_codec(n: int = 20000) -> dict[str, float]:
    address = address_bytes("000000123456")
    fmt = parse_format("XXX.X,XXX.X,XXX.X")
    answer = encode_frame(address, 0x91, di_bytes(0x0201FF00) + encode(fmt, [230.1, 229.8, 231.0]))
    t0 = time.perf_counter()
    for _ in range(n):
        read_request(address, 0x0201FF00, preamble=4)
    request_us = (time.perf_counter() - t0) / n * 1e6
    parser = FrameParser()
    t0 = time.perf_counter()
    for _ in range(n):
        parser.feed(answer)
    parse_us = (time.perf_counter() - t0) / n * 1e6
    (frame,) = parser.feed(answer)
    assert isinstance(frame, Frame)
    data = frame.data[4:]
    t0 = time.perf_counter()
    for _ in range(n):
        decode(fmt, data)
    decode_us = (time.perf_counter() - t0) / n * 1e6
    return {"request_us": request_us, "parse_us": parse_us, "decode_us": decode_us}


async def bench_line(server_url: str, client_url: str | None, seconds: float) -> dict[str, float]:
    specs = [
        Dlt645MeterSpec(name=f"m{k}", url=server_url, address=f"{k:012d}", seed=k)
        for k in range(1, 4)
    ]
    async with serve(specs) as sim:
        url = client_url or sim.meter("m1").url
        line = Dlt645Line(parse_endpoint(url), name="bench")
        drivers = [
            Dlt645Driver(
                Dlt645Device.model_validate(
                    {
                        "name": spec.name,
                        "driver": "dlt645",
                        "url": url,
                        "address": spec.address,
                        "points": [{"name": f"p{di}", "di": di} for di in DIS],
                    }
                ),
                line=line,
            )
            for spec in specs
        ]
        polls = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        while time.perf_counter() - t0 < seconds:
            for driver in drivers:
                await driver.read()
                polls += 1
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        line.close()
    transactions = polls * len(DIS)
    return {
        "transactions_s": transactions / wall,
        "cpu_us_per_transaction": cpu / transactions * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    codec = bench_codec()
    print(f"codec: request {codec['request_us']:.2f} µs, parse answer {codec['parse_us']:.2f} µs,")
    print(f"       decode 3 fields {codec['decode_us']:.2f} µs")
    tcp = asyncio.run(bench_line("rtu+tcp://127.0.0.1:0", None, args.seconds))
    print(
        f"rtu+tcp loopback: {tcp['transactions_s']:.0f} DI reads/s, "
        f"{tcp['cpu_us_per_transaction']:.0f} µs CPU each (driver + simulator)"
    )
    if shutil.which("socat"):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "ttyA", Path(tmp) / "ttyB"
            proc = subprocess.Popen(
                ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdin=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 5
                while not (a.exists() and b.exists()) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.1)  # socat opens both ptys before its transfer loop starts
                line = "?baudrate=115200&parity=N"
                pty = asyncio.run(bench_line(f"rtu://{a}{line}", f"rtu://{b}{line}", args.seconds))
            finally:
                proc.terminate()
                proc.wait(5)
        print(
            f"pty pair (socat): {pty['transactions_s']:.0f} DI reads/s, "
            f"{pty['cpu_us_per_transaction']:.0f} µs CPU each (driver + simulator)"
        )
    ep = parse_endpoint("rtu:///dev/null?baudrate=2400&parity=E")
    request = 4 + 12 + 4  # preamble, frame, DI
    answer = 4 + 12 + 4 + 9  # preamble, frame, DI, three voltages
    wire = ep.airtime_s(request + answer)
    print(
        f"2400 8E1 wire time of one block read (computed): {wire * 1000:.0f} ms "
        f"-> at most {1 / wire:.1f} DI reads/s per line before meter turnaround"
    )


if __name__ == "__main__":
    main()

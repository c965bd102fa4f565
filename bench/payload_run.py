"""Payload benchmark: bytes and CPU per point of the default JSON (v1) and the compact (v3) data
message, on the gateway (encode) and in the ingest (decode), on the same polls.

    .venv/bin/python -m bench.payload_run [--polls 2000] [--repeats 7]

Two devices: the benchmark's device of bench/run.py (50 float32 points `p000`.. in V) and
a shipped meter profile (chint-dtsu666, its real point names and units). Values are what
a float32 register decodes to (230.5200042724..., not 230.52), as the drivers deliver.
Per device and encoding:
- bytes per point of a full poll, all good, and with 2 bad points; MQTT PUBLISH header
  and topic once per message on top (QoS 1, topic `factory/plant-a/gw-01/meter-01/data`);
- the metadata message's bytes (retained, once per device per connection; compact only);
- encode CPU µs per point: the process's CPU time over `polls` encodes, median of
  `repeats` runs, the two encodings interleaved in each repeat (a busy, shared machine
  moves both the same way);
- ingest decode CPU µs per point: `decode_messages` of the same payloads (the compact ones
  with their metadata book), median likewise.
`--agent`: also the whole agent, once per encoding and repeat, interleaved: bench/run.py's
saturation scenario (simulators, agent, subscriber in their own processes, a real
Mosquitto; `--devices` x `--points` float32 points at `--interval`), worker CPU µs per
point polled and points/s delivered, medians.
Prints JSON rows and a table. Nothing asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from drivers.reading import PointSpec, Poll, Quality
from drivers.registry import plugin
from edge_agent.config.site import load_config
from edge_agent.ingest.meta import MetaBook
from edge_agent.ingest.schema import Source, decode_messages
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.device_meta import device_meta, setup_meta
from edge_agent.pipeline.payload import DataEncoder, DeviceEncoder

TOPIC = "factory/plant-a/gw-01/meter-01/data"
SOURCE = Source(TOPIC, "plant-a", "gw-01", "meter-01")
MQTT_OVERHEAD = 2 + 2 + len(TOPIC) + 2  # fixed header (2 bytes up to 127 B) + topic + packet id


def _meter_points() -> tuple[tuple[PointSpec, ...], bytes]:
    """The chint-dtsu666 profile's points as its polls carry them, and its metadata."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\ndevices:\n"
            "  - {name: meter-01, driver: modbus, url: 'tcp://127.0.0.1:1', "
            "profile: chint-dtsu666}\n"
        )
        setup = load_config(site).devices[0]
    points = plugin(setup.device.driver).point_specs(setup.device, setup.profile)
    return points, setup_meta("gw-01", setup, points).payload


def _float32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]  # type: ignore[no-any-return]


def _polls(points: tuple[PointSpec, ...], n: int, *, bad: int) -> list[Poll]:
    rng = random.Random(7)
    bases = [rng.choice((230.0, 10.0, 2300.0, 0.95, 50.0, 12345.6)) for _ in points]
    t0 = 1_764_154_930_123_000_000
    polls = []
    for k in range(n):
        values: list[Any] = [_float32(b * (1 + rng.uniform(-0.02, 0.02))) for b in bases]
        issues: dict[int, tuple[Quality, str]] = {}
        for i in range(bad):
            values[i] = None
            issues[i] = (Quality.BAD, "exception 02 (illegal data address)")
        polls.append(Poll("meter-01", t0 + k * 1_000_000_000, points, values, issues))
    return polls


def _cpu_us_per_point(run: Callable[[], int]) -> float:
    """CPU µs per point of one call of `run` (which returns the points it handled)."""
    start = time.process_time_ns()
    points = run()
    return (time.process_time_ns() - start) / 1000 / points


def measure(
    name: str, points: tuple[PointSpec, ...], meta: bytes, *, polls: int, repeats: int
) -> list[dict[str, Any]]:
    """The rows of one device: one per encoding."""
    meta_id = json.loads(meta)["meta"]
    encoders: dict[str, Callable[[], DataEncoder]] = {
        "json": lambda: DeviceEncoder(gateway="gw-01", device="meter-01", points=points),
        "compact": lambda: CompactEncoder(
            gateway="gw-01", device="meter-01", points=points, meta_id=meta_id
        ),
    }
    book = MetaBook()
    book.read(Source("m", "plant-a", "gw-01", "meter-01"), meta)
    good = _polls(points, polls, bad=0)
    faulty = _polls(points, 50, bad=2)
    payloads = {
        kind: [make().encode(p, seq=k + 1) for k, p in enumerate(good)]
        for kind, make in encoders.items()
    }
    encode_us: dict[str, list[float]] = {kind: [] for kind in encoders}
    decode_us: dict[str, list[float]] = {kind: [] for kind in encoders}
    now_ms = good[-1].ts_ns // 1_000_000 + 1000
    for _ in range(repeats):
        for kind, make in encoders.items():
            encoder = make()

            def encode_all(encoder: DataEncoder = encoder) -> int:
                for k, poll in enumerate(good):
                    encoder.encode(poll, seq=k + 1)
                return len(good) * len(points)

            def decode_all(kind: str = kind) -> int:
                n = 0
                for payload in payloads[kind]:
                    (message,) = decode_messages(
                        SOURCE, payload, now_ms=now_ms, max_future_ms=0, units=book.units
                    )
                    n += len(message.points)
                return n

            encode_us[kind].append(_cpu_us_per_point(encode_all))
            decode_us[kind].append(_cpu_us_per_point(decode_all))
    rows = []
    for kind, make in encoders.items():
        full = statistics.mean(len(p) for p in payloads[kind])
        with_bad = statistics.mean(len(make().encode(p, seq=1)) for p in faulty)
        rows.append(
            {
                "device": name,
                "points": len(points),
                "payload": kind,
                "bytes_per_point": full / len(points),
                "bytes_per_point_2_bad": with_bad / len(points),
                "wire_bytes_per_point": (full + MQTT_OVERHEAD) / len(points),
                "meta_bytes": len(meta) if kind == "compact" else 0,
                "encode_us_per_point": statistics.median(encode_us[kind]),
                "decode_us_per_point": statistics.median(decode_us[kind]),
            }
        )
    return rows


def agent_runs(
    *, devices: int, points: int, interval: float, seconds: float, repeats: int
) -> list[dict[str, Any]]:
    """The agent end to end with each encoding (bench/run.py's scenario plus --payload)."""
    from bench.run import _delivered, _first_json, _spawn, _stop
    from tests.fixtures.mosquitto import Mosquitto

    runs: dict[str, list[dict[str, Any]]] = {"json": [], "compact": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        servers.callback(broker.stop)
        for _ in range(repeats):
            for payload, rows in runs.items():
                with ExitStack() as stack:
                    sim = _spawn(
                        ["bench.sim_process", "--devices", str(devices), "--points", str(points)]
                    )
                    stack.callback(_stop, sim)
                    urls_file = Path(tmp) / "urls.json"
                    urls_file.write_text(json.dumps(_first_json(sim, "simulator")["urls"]))
                    sub = _spawn(
                        ["bench.subscriber", "--port", str(broker.port), "--topic", "bench/#"]
                    )
                    stack.callback(_stop, sub)
                    _first_json(sub, "subscriber")
                    worker = _spawn(
                        [
                            "bench.workers",
                            "agent",
                            "--urls-file",
                            str(urls_file),
                            "--mqtt-port",
                            str(broker.port),
                            "--points",
                            str(points),
                            "--interval",
                            str(interval),
                            "--seconds",
                            str(seconds),
                            "--payload",
                            payload,
                        ]
                    )
                    stack.callback(_stop, worker)
                    result = _first_json(worker, "agent worker")
                    time.sleep(0.6)  # a subscriber sample past the window's end
                    _stop(sub)
                    assert sub.stdout is not None
                    samples = [json.loads(x) for x in sub.stdout.read().splitlines() if x.strip()]
                    window = result["t1"] - result["t0"]
                    rows.append(
                        {
                            "cpu_us_per_point": result["cpu_s"] / max(1, result["points"]) * 1e6,
                            "delivered_per_s": _delivered(samples, result["t0"], result["t1"])
                            / window,
                            "rss_mb": result["rss_mb"],
                        }
                    )
    return [
        {
            "device": f"agent {devices} x {points}",
            "payload": payload,
            "runs": len(rows),
            **{k: statistics.median(r[k] for r in rows) for k in rows[0]},
            "cpu_us_per_point_runs": [round(r["cpu_us_per_point"], 2) for r in rows],
        }
        for payload, rows in runs.items()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--polls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--agent", action="store_true", help="also the whole agent, end to end")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.001, help="poll interval, s")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--agent-repeats", type=int, default=3)
    args = p.parse_args(argv)
    bench_points = tuple(PointSpec(f"p{i:03d}", "V") for i in range(50))
    bench_meta = device_meta(
        gateway="gw-01",
        device="meter-01",
        driver="modbus",
        profile="bench",
        points=bench_points,
        types=dict.fromkeys((p.name for p in bench_points), "float32"),
    ).payload
    meter_points, meter_meta = _meter_points()
    rows = [
        *measure(
            "bench 50 x float32", bench_points, bench_meta, polls=args.polls, repeats=args.repeats
        ),
        *measure("chint-dtsu666", meter_points, meter_meta, polls=args.polls, repeats=args.repeats),
    ]
    load = os.getloadavg()[0]
    print(f"# load average {load:.1f} on {os.cpu_count()} cores", file=sys.stderr)
    for row in rows:
        print(json.dumps(row))
    print(
        f"{'device':<20} {'payload':<8} {'B/pt':>6} {'B/pt 2 bad':>10} {'wire B/pt':>9} "
        f"{'meta B':>6} {'enc µs/pt':>9} {'dec µs/pt':>9}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['device']:<20} {r['payload']:<8} {r['bytes_per_point']:>6.1f} "
            f"{r['bytes_per_point_2_bad']:>10.1f} {r['wire_bytes_per_point']:>9.1f} "
            f"{r['meta_bytes']:>6} {r['encode_us_per_point']:>9.3f} "
            f"{r['decode_us_per_point']:>9.3f}",
            file=sys.stderr,
        )
    if args.agent:
        agent_rows = agent_runs(
            devices=args.devices,
            points=args.points,
            interval=args.interval,
            seconds=args.seconds,
            repeats=args.agent_repeats,
        )
        print(f"# load average {os.getloadavg()[0]:.1f} after the agent runs", file=sys.stderr)
        for row in agent_rows:
            print(json.dumps(row))
            print(
                f"{row['device']:<20} {row['payload']:<8} CPU {row['cpu_us_per_point']:.2f} µs/pt "
                f"(runs {row['cpu_us_per_point_runs']}), "
                f"{row['delivered_per_s']:,.0f} points/s delivered, RSS {row['rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start time, resident memory and heavy imports of `edge-agent run` on a Modbus-only site.

    .venv/bin/python -m bench.start_run [--python PATH] [--repeat 5]

Starts Mosquitto (Debian's binary) on a free loopback port and, five times, `python -X
importtime -m edge_agent run` on a two-meter Modbus TCP site (the meters need not answer:
start-up is what is measured). Prints, per run, the seconds from exec to "connected", the
resident memory (VmRSS) one second later, and which of the optional stacks were imported.
`--python` runs another installation (an older checkout's venv) for a before/after.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("asyncua", "influxdb_client", "grafana_client", "amqtt", "aiohttp", "numpy")

SITE = """\
site: bench
gateway: gw
mqtt: {{url: "mqtt://127.0.0.1:{port}", prefix: bench}}
outbox: {{path: outbox.sqlite}}
devices:
  - {{name: m1, driver: modbus, url: "tcp://127.0.0.1:9", profile: chint-dtsu666}}
  - {{name: m2, driver: modbus, url: "tcp://127.0.0.1:9", device_id: 2, profile: eastron-sdm630}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


def one_start(python: str, module: str, folder: Path) -> tuple[float, float, list[str]]:
    """Seconds to "connected", MB resident 1 s later, heavy packages imported."""
    log = folder / "run.log"
    with log.open("w") as out:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [python, "-X", "importtime", "-m", module, "run", "site.yaml", "--http", "off"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        while "connected to mqtt" not in log.read_text():
            if proc.poll() is not None or time.perf_counter() - began > 60:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.01)
        started = time.perf_counter() - began
        time.sleep(1.0)  # settled: the first polls and publishes have happened
        rss = _rss_kb(proc.pid) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    imported = sorted(
        {
            m.group(1)
            for m in re.finditer(r"\|\s+([a-z_]+)$", log.read_text(), flags=re.M)
            if m.group(1) in HEAVY
        }
    )
    return started, rss, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--module", default="edge_agent", help="edge_agent.cli.main for versions without __main__"
    )
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    broker = subprocess.Popen(
        [mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "site.yaml").write_text(SITE.format(port=port))
            runs = [one_start(args.python, args.module, folder) for _ in range(args.repeat)]
    finally:
        broker.terminate()
        broker.wait()
    starts = [r[0] for r in runs]
    rss = [r[1] for r in runs]
    print(f"{'python':<50} {'start s (median)':>16} {'RSS MB (median)':>16}  heavy imports")
    print(
        f"{args.python:<50} {statistics.median(starts):>16.2f} {statistics.median(rss):>16.1f}"
        f"  {', '.join(runs[0][2]) or 'none'}"
    )


if __name__ == "__main__":
    main()

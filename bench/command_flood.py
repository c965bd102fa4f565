"""A flood of refused alarm commands: what it costs in log lines and bytes.

    .venv/bin/python -m bench.command_flood [--seconds 20] [--log FILE]

Mosquitto (Debian) on a free port; the agent in this process with one device (never
answering) that has a high alarm, logging at INFO to a file the way `edge-agent run`
logs; one paho client on its own thread publishing refused commands (not JSON, unknown
alarm, nothing to acknowledge, `duration_s: true`, a 3,000-character `request_id`) at QoS 0
as fast as it can for `seconds`. Prints the commands the agent took, the refusals it
counted and the log's lines and bytes. Nothing here asserts; the numbers go to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.alarms.stage import AlarmStage
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from tests.fixtures.mosquitto import Mosquitto

SITE = """\
site: plant-a
gateway: gw-01
mqtt: {{url: "{url}", prefix: flood}}
outbox: {{path: var/outbox.sqlite}}
devices:
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:1
    points:
      - {{name: pressure, address: 0, type: float32, unit: bar,
         alarms: [{{kind: high, limit: 80}}]}}
"""
HIGH = "boiler/pressure/high"
COMMANDS = [
    b"{ack",
    orjson.dumps({"cmd": "ack", "id": "x/y", "operator": "o"}),
    orjson.dumps({"cmd": "ack", "id": HIGH, "operator": "o"}),
    orjson.dumps(
        {"cmd": "shelve", "id": HIGH, "operator": "o", "comment": "c", "duration_s": True}
    ),
    orjson.dumps({"cmd": "ack", "id": HIGH, "operator": "o", "request_id": "r" * 3000}),
]


def _flood(url: str, topic: str, seconds: float, stop: threading.Event, sent: list[int]) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(host, int(port))
    client.loop_start()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and not stop.is_set():
        for payload in COMMANDS:
            client.publish(topic, payload, qos=0)
            n += 1
        if n % 500 == 0:
            time.sleep(0.001)  # let paho's thread write
    sent.append(n)
    client.disconnect()
    client.loop_stop()


async def _main(seconds: float, log_path: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp_dir:
        tmp = Path(tmp_dir)
        broker = Mosquitto(tmp / "broker")
        broker.start()
        handler = logging.FileHandler(log_path, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            site = tmp / "site.yaml"
            site.write_text(SITE.format(url=broker.url))
            agent = Agent(load_config(site))
            stage = next(s for s in agent.stages if isinstance(s, AlarmStage))
            task = asyncio.create_task(agent.run(), name="agent")
            await agent.sink.wait_connected(10)
            await asyncio.sleep(0.5)  # the command subscription goes out after the connect
            stop = threading.Event()
            sent: list[int] = []
            began = time.monotonic()
            thread = threading.Thread(
                target=_flood,
                args=(broker.url, "flood/plant-a/gw-01/alarms/cmd", seconds, stop, sent),
            )
            thread.start()
            await asyncio.to_thread(thread.join)
            await asyncio.sleep(1.0)  # the last commands in flight
            took = time.monotonic() - began
            task.cancel()
            await asyncio.wait({task}, timeout=15)
            counted = getattr(stage, "refusals", None)  # absent before the refusal log
            refusals = dict(counted.counts) if counted is not None else {}
            result = {
                "seconds": round(took, 1),
                "sent": sent[0] if sent else 0,
                "commands": stage.counters.commands,
                "refused": stage.counters.refused,
                "refusals_by_reason": refusals,
            }
        finally:
            root.removeHandler(handler)
            handler.close()
            broker.stop()
    return result


def _log_cost(result: dict[str, object], log_path: Path) -> dict[str, object]:
    text = log_path.read_bytes()
    refused_lines = [line for line in text.splitlines() if b"refused" in line]
    return {
        **result,
        "log_lines": text.count(b"\n"),
        "log_bytes": len(text),
        "refusal_lines": len(refused_lines),
        "refusal_bytes": sum(len(line) + 1 for line in refused_lines),
    }


def main() -> None:
    """Run the flood and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "flood.log")
    args = parser.parse_args()
    print(json.dumps(_log_cost(asyncio.run(_main(args.seconds, args.log)), args.log)))


if __name__ == "__main__":
    main()

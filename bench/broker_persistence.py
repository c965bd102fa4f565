"""What Mosquitto's persistence costs: the autosave settings that bound a crash's loss.

    .venv/bin/python -m bench.broker_persistence [--messages 6000] [--repeats 3]

Mosquitto (Debian) on a free port, `persistence true`, `max_queued_messages 0`; an ingest
worker's session (MQTT v5, session expiry, subscription at QoS 1) that went away; one paho
client publishes `messages` QoS 1 messages of 600 bytes (a small meter's v1 message),
which the broker queues for the session. For each autosave setting (interleaved, median of
`repeats`): the broker's CPU time (utime + stime of the process) and the wall time until
the last PUBACK. Then, with the backlog queued, the CPU of one save (SIGUSR1). Nothing
here asserts; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.fixtures.mosquitto import Mosquitto

SETTINGS = {  # name: config lines
    "default (autosave_interval 1800)": "",
    "autosave_interval 60": "autosave_interval 60",
    **{
        f"autosave_on_changes true, autosave_interval {n}": (
            f"autosave_on_changes true\nautosave_interval {n}"
        )
        for n in (100, 1)
    },
}
PAYLOAD = b"x" * 600


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def leave_a_session(broker: Mosquitto) -> None:
    """Connect as a worker (v5, session expiry 1 h), subscribe, disconnect."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="worker", protocol=MQTTProtocolVersion.MQTTv5
    )
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    granted = threading.Event()
    client.on_subscribe = lambda *_: granted.set()
    client.connect(broker.host, broker.port, clean_start=False, properties=properties)
    client.loop_start()
    client.subscribe("bench/#", qos=1)
    if not granted.wait(5):
        raise RuntimeError("no SUBACK")
    client.disconnect()
    broker.wait_for_log("Client worker disconnected.")
    client.loop_stop()


def publish(broker: Mosquitto, count: int) -> None:
    """`count` QoS 1 messages, 100 in flight; returns at the last PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway")
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish("bench/m/data", PAYLOAD, qos=1) for _ in range(count)]
    for info in infos:
        info.wait_for_publish(300)
    client.disconnect()
    client.loop_stop()


def queue_once(extra: str, count: int) -> tuple[float, float]:
    """(broker CPU s, wall s) to queue `count` messages for an offline session."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp), persistent=True, listeners=f"max_queued_messages 0\n{extra}")
        broker.start()
        try:
            leave_a_session(broker)
            assert broker.process is not None
            cpu0, wall0 = cpu_s(broker.process.pid), time.perf_counter()
            publish(broker, count)
            return cpu_s(broker.process.pid) - cpu0, time.perf_counter() - wall0
        finally:
            broker.stop()


def save_once(count: int, repeats: int) -> tuple[float, float]:
    """(median CPU s of one SIGUSR1 save, file MB) with `count` messages queued."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp), persistent=True, listeners="max_queued_messages 0")
        broker.start()
        try:
            leave_a_session(broker)
            publish(broker, count)
            assert broker.process is not None
            pid, cpus = broker.process.pid, []
            for _ in range(repeats):
                saves = broker.log_text().count("Saving in-memory database")
                cpu0 = cpu_s(pid)
                broker.process.send_signal(signal.SIGUSR1)
                while broker.log_text().count("Saving in-memory database") == saves:
                    time.sleep(0.01)  # a poll interval
                # The line is logged before the write: wait until the file stops changing.
                db = Path(tmp) / "mosquitto.db"
                size = -1
                while not db.exists() or db.stat().st_size != size:
                    size = db.stat().st_size if db.exists() else -1
                    time.sleep(0.2)  # a poll interval
                cpus.append(cpu_s(pid) - cpu0)
            return statistics.median(cpus), size / 1e6
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, extra in SETTINGS.items():
            results[name].append(queue_once(extra, args.messages))
    print(
        f"queue {args.messages:,} QoS 1 messages for an offline session (median of {args.repeats}):"
    )
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"  {name:50} broker CPU {cpu:6.2f} s  wall {wall:6.2f} s")
    for count in (args.messages, args.messages * 5):
        cpu, size = save_once(count, 5)
        print(
            f"one save with {count:,} queued: {size:.1f} MB, {cpu * 1000:.0f} ms CPU (median of 5)"
        )


if __name__ == "__main__":
    main()

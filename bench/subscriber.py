"""Benchmark subscriber process: counts data messages and points delivered by the broker.

Prints a JSON line {"t": monotonic, "messages": n, "points": n} every 0.25 s. Counting
points parses each message (orjson), as a real consumer would.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    args = p.parse_args()
    counts = {"messages": 0, "points": 0}
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/meta"):
            return  # a compact payload's retained metadata: no readings
        doc = orjson.loads(msg.payload)
        n = len(doc["points"]) if "points" in doc else len(doc.get("values", doc.get("p", ())))
        with lock:
            counts["messages"] += 1
            counts["points"] += n

    def on_connect(c: mqtt.Client, *_a: object) -> None:
        c.subscribe(args.topic, qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}")
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    subscribed.wait(10)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(0.25)
            with lock:
                line = {"t": time.monotonic(), **counts}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        client.loop_stop()


if __name__ == "__main__":
    main()

"""An MQTT broker inside the agent's own process (amqtt), for demos and tests without Mosquitto.

It speaks MQTT 3.1.1 only, takes anonymous clients on one loopback TCP listener, and keeps
nothing on disk. amqtt's defaults are not used: with no config it binds 0.0.0.0:1883 and
loads its packet logger and $SYS plugins (runtime.md §4), so listeners and plugins are
always given. Production gateways publish to a real broker (Mosquitto).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

logger = logging.getLogger(__name__)

# amqtt logs every connection and packet at INFO, its state machine library every transition.
NOISY_LOGGERS = ("amqtt", "transitions", "mqtt")
START_ATTEMPTS = 3


@asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run an amqtt broker on host:port (0: a free port) and yield its mqtt:// URL."""
    quiet_amqtt()
    # amqtt binds port 0, but then tells the port only through private attributes: pick one.
    attempts = START_ATTEMPTS if port == 0 else 1
    for attempt in range(1, attempts + 1):
        chosen = port or free_port(host)
        broker = Broker(broker_config(host, chosen))
        try:
            await broker.start()
        except BrokerError:
            if attempt == attempts:
                raise
            # Someone took the free port between our probe and amqtt's bind.
            logger.debug("embedded broker could not bind %s:%s, trying another port", host, chosen)
            continue
        break
    url = f"mqtt://{host}:{chosen}"
    logger.info("embedded MQTT broker listening on %s", url)
    try:
        yield url
    finally:
        await broker.shutdown()
        logger.info("embedded MQTT broker on %s stopped", url)


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt config: one TCP listener, anonymous clients, no other plugins."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def quiet_amqtt() -> None:
    """Raise amqtt's loggers to WARNING unless someone configured them already."""
    for name in NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        if noisy.level == logging.NOTSET:
            noisy.setLevel(logging.WARNING)

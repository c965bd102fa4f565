"""Shared helpers of the ingest tests: site files, real data messages, a QoS 1 publisher.

Messages are rendered by the agent's own encoder (edge_agent.payload.DeviceEncoder), so
the ingest is tested against exactly what gateways publish.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.ingest.service import Ingest
from edge_agent.pipeline.payload import DeviceEncoder

POINTS = (
    PointSpec("voltage_a", "V"),
    PointSpec("energy_import", "kWh"),
    PointSpec("relay", None),
    PointSpec("state", None),
    PointSpec("pf_total", None),
    PointSpec("current_a", "A"),
)


def unique_site() -> str:
    """A site name no other test writes (the session's VictoriaMetrics is shared)."""
    return f"site-{uuid.uuid4().hex[:10]}"


def write_site(
    path: Path,
    *,
    broker_url: str,
    prefix: str,
    site: str,
    influx_url: str | None = None,
    ingest: str = "",
    token_env: dict[str, str] | None = None,
    allow: Sequence[str] | None = None,
) -> LoadedConfig:
    """A site file with one (never polled) device `meter-1` and the given blocks.

    The ingest writes series only for configured names: these tests publish other devices
    and points of their own site too (`meter-2`, the POINTS not in meter-1's profile), so
    `ingest.allow` is `{site}/*/*/*` unless `allow` says otherwise (`()`: none).
    """
    patterns = [f"{site}/*/*/*"] if allow is None else list(allow)
    if patterns:
        listed = f"allow: [{', '.join(repr(p) for p in patterns)}]"
        ingest = f"{{{listed}, {ingest[1:]}" if ingest else f"{{{listed}}}"
    lines = [
        f"site: {site}",
        "gateway: gw-01",
        f'mqtt: {{url: "{broker_url}", prefix: "{prefix}"}}',
    ]
    if influx_url is not None:
        # The issue's block, as written.
        lines.append(
            f'influx: {{url: "{influx_url}", token: "${{INFLUX_TOKEN}}", org: plant, bucket: edge}}'
        )
    if ingest:
        lines.append(f"ingest: {ingest}")
    lines += [
        "devices:",
        "  - {name: meter-1, driver: modbus, url: 'tcp://127.0.0.1:1', profile: chint-dtsu666}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, environ=token_env or {"INFLUX_TOKEN": "test-token"})


@dataclass(frozen=True)
class Sent:
    """One published data message and what it carried."""

    topic: str
    payload: bytes
    gateway: str
    device: str
    seq: int
    ts_ms: int
    values: tuple[Any, ...]


def poll_values(seq: int) -> tuple[list[Any], dict[int, tuple[Quality, str]]]:
    """Values of the POINTS for message `seq`: every kind of value and quality."""
    values: list[Any] = [
        230.0 + seq / 8,  # float, exact in binary
        1000 + seq,  # int counter
        seq % 2 == 0,  # bool
        "RUN" if seq % 3 else "STOP",  # string
        None,  # bad
        1.5 * seq,  # uncertain
    ]
    issues = {
        4: (Quality.BAD, "exception 02 (illegal data address)"),
        5: (Quality.UNCERTAIN, "stale"),
    }
    return values, issues


def make_messages(
    prefix: str,
    site: str,
    *,
    gateway: str = "gw-01",
    device: str = "meter-1",
    seqs: Sequence[int] = range(1, 11),
    ts0_ms: int | None = None,
    step_ms: int = 1000,
    historical: bool = False,
) -> list[Sent]:
    """Data messages as the agent renders them, one per seq, `step_ms` apart."""
    encoder = DeviceEncoder(gateway=gateway, device=device, points=POINTS)
    # In the past: the export API returns samples up to "now" only.
    start = ts0_ms if ts0_ms is not None else time.time_ns() // 1_000_000 - 3_600_000
    topic = f"{prefix}/{site}/{gateway}/{device}/data"
    sent = []
    for seq in seqs:
        ts_ms = start + seq * step_ms
        values, issues = poll_values(seq)
        poll = Poll(device, ts_ms * 1_000_000, POINTS, values, issues)
        payload = encoder.encode(poll, seq=seq, historical=historical)
        sent.append(Sent(topic, payload, gateway, device, seq, ts_ms, tuple(values)))
    return sent


def publish_all(
    url: str, messages: Sequence[tuple[str, bytes]] | Sequence[Sent], *, timeout_s: float = 10.0
) -> None:
    """Publish at QoS 1 over one connection and return once every PUBACK arrived."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(100)
    disconnected = threading.Event()
    client.on_disconnect = lambda *_: disconnected.set()
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    try:
        infos = []
        for m in messages:
            topic, payload = (m.topic, m.payload) if isinstance(m, Sent) else m
            infos.append(client.publish(topic, payload, qos=1))
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            assert info.is_published(), "a message was not acknowledged by the broker"
    finally:
        client.disconnect()
        disconnected.wait(timeout_s)
        client.loop_stop()


async def publish(url: str, messages: Sequence[tuple[str, bytes]] | Sequence[Sent]) -> None:
    """`publish_all` off the event loop."""
    await asyncio.to_thread(publish_all, url, messages)


async def until(condition: Callable[[], bool], what: str, *, timeout_s: float = 10.0) -> None:
    """Poll `condition` on the loop until true; AssertionError naming `what` after timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # a poll interval, not a synchronisation


@asynccontextmanager
async def running(ingest: Ingest, *, ready_timeout_s: float = 10.0) -> AsyncIterator[Ingest]:
    """Run an ingest worker until the block ends; yields once it is subscribed."""
    task = asyncio.create_task(ingest.run(), name=f"ingest-{ingest.client_id}")
    ready = asyncio.create_task(ingest.wait_ready(ready_timeout_s))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what stopped it
        raise AssertionError("the ingest stopped before it subscribed")
    assert ready.result(), "the ingest did not subscribe in time"
    try:
        yield ingest
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done == {task}, "the ingest did not stop within 10 s"
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

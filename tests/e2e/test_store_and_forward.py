"""Store-and-forward against a real Mosquitto: broker outage, SIGKILL, a full outbox.

Every data message carries `seq` = its outbox row id, so "nothing lost" is checked as:
the subscriber saw every sequence number from 1 to the last one the outbox handed out.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber, free_port
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
PROFILE = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))

pytestmark = pytest.mark.timeout(90)


def _write_site(
    path: Path,
    *,
    url: str,
    prefix: str,
    devices: list[tuple[str, str, int]],
    interval_s: float,
    outbox: dict[str, Any],
) -> Path:
    lines = [
        "site: plant-a",
        "gateway: gw-01",
        f'mqtt: {{url: "{url}", prefix: "{prefix}", backoff_max_s: 1.0}}',
        f"outbox: {json.dumps(outbox)}",
        "devices:",
    ]
    for name, dev_url, device_id in devices:
        lines.append(
            f"  - {{name: {name}, driver: modbus, url: '{dev_url}', device_id: {device_id}, "
            f"profile: chint-dtsu666, interval_s: {interval_s}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _unacked(agent: Agent, before_id: int) -> list[int]:
    """Stored rows below `before_id` the broker has not acknowledged yet."""
    box = agent.outbox
    rows = box.rows_after(0, before_id=before_id, limit=1_000_000)
    return [r.id for r in rows if not box.is_acked(r.id)]


def _data(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]


@asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=20)
        assert done == {task}


def _sims(n: int) -> list[SimDeviceSpec]:
    return [
        SimDeviceSpec(name=f"m{i}", url="tcp://127.0.0.1:0", profile=PROFILE, device_id=i + 1)
        for i in range(n)
    ]


async def test_broker_outage_is_replayed_in_order_and_flagged_historical(
    mosquitto_fresh: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    broker = mosquitto_fresh
    async with serve(_sims(2)) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=broker.url,
            prefix=unique_prefix,
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1) for i in range(2)],
            interval_s=0.05,
            outbox={"path": "outbox.sqlite"},
        )
        agent = Agent(load_config(site))
        sub = subscribe(
            broker.host,
            broker.port,
            f"{unique_prefix}/#",
            client_id="sub-outage",
            clean_session=False,
        )
        async with _running(agent):
            await until(lambda: len(_data(sub)) >= 10, what="live data")
            broker.stop()
            await agent.sink.wait_disconnected(10)
            seq_down = agent.seq
            await until(lambda: agent.outbox.stats.messages >= 40, what="a backlog")
            seq_up = agent.seq
            live_before = agent.forwarder.live_sent  # nothing is sent live while down
            broker.start()
            await until(
                # Live polls keep coming (40/s), each in flight for a round trip: the
                # backlog has drained when every row up to seq_up is acknowledged.
                lambda: (
                    agent.sink.connected
                    and not agent.forwarder.backlog_pending
                    and not _unacked(agent, seq_up + 1)
                ),
                what="the backlog to drain",
            )
            await until(
                lambda: agent.seq >= seq_up + 10 and agent.forwarder.live_sent > live_before,
                what="live data after the outage",
            )
            # The depth counts exactly the stored rows not acknowledged yet.
            assert agent.outbox.stats.messages == len(_unacked(agent, agent.seq + 1))
        last = agent.seq
        await until(
            lambda: {d["seq"] for d in _data(sub)} >= set(range(1, last + 1)),
            what="every sequence number at the subscriber",
        )
    docs = _data(sub)
    first: dict[int, dict[str, Any]] = {}
    for d in docs:
        first.setdefault(d["seq"], d)
    outage = range(seq_down + 1, seq_up + 1)  # accepted after the sink saw the broker go
    assert len(outage) >= 20
    assert all(first[s]["historical"] is True for s in outage)
    # Replay keeps the original order per device, and the original timestamps.
    for device in ("m0", "m1"):
        replayed = [d for d in docs if d["device"] == device and d["historical"]]
        seqs = [d["seq"] for d in replayed]
        assert seqs == sorted(seqs)
        stamps = [d["ts_ms"] for d in replayed]
        assert stamps == sorted(stamps)
    # Live data flows again after the reconnect, not flagged historical. (Not every one of
    # them: under load a keepalive timeout can make the newest rows backlog once more.)
    assert any(not first[s]["historical"] for s in range(seq_up + 1, last + 1))
    assert agent.forwarder.replayed >= len(outage)


def _spawn_agent(site: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli.main",
            "--log-level",
            "INFO",
            "run",
            str(site),
            "--http",
            "off",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_sigkill_during_a_burst_loses_nothing_accepted(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    box_path = tmp_path / "outbox.sqlite"
    async with serve(_sims(3)) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=mosquitto.url,
            prefix=unique_prefix,
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1) for i in range(3)],
            interval_s=0.01,
            outbox={"path": str(box_path)},
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        log = tmp_path / "agent.log"
        agent = _spawn_agent(site, log)
        try:
            await until(lambda: len(_data(sub)) >= 200, what="a burst of data")
            agent.send_signal(signal.SIGKILL)
            assert agent.wait(10) == -signal.SIGKILL
        finally:
            if agent.poll() is None:
                agent.kill()
        with sqlite3.connect(box_path) as db:
            left = [r[0] for r in db.execute("SELECT id FROM outbox ORDER BY id")]
            killed_at = db.execute("SELECT seq FROM sqlite_sequence").fetchone()[0]
        seen_before = len(_data(sub))
        agent = _spawn_agent(site, log)
        try:
            await until(lambda: len(_data(sub)) >= seen_before + 200, what="data after restart")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(20) == 0, log.read_text()[-2000:]
        finally:
            if agent.poll() is None:
                agent.kill()
    with sqlite3.connect(box_path) as db:
        last = db.execute("SELECT seq FROM sqlite_sequence").fetchone()[0]
        remaining = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert remaining == 0  # a clean stop drains what the broker acknowledges
    assert last > killed_at
    await until(
        lambda: {d["seq"] for d in _data(sub)} >= set(range(1, last + 1)),
        what="every sequence number",
    )
    by_seq = {}
    for d in _data(sub):
        by_seq.setdefault(d["seq"], []).append(d)
    # What the outbox still held at the kill came back after the restart, as history.
    for seq in left:
        assert any(d["historical"] for d in by_seq[seq]), seq
    # Sequence numbers continue across the restart: none reused for other data.
    assert all(len({d["ts_ms"] for d in by_seq[s]}) == 1 for s in by_seq)


async def test_a_full_outbox_drops_the_oldest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # no broker: everything stays in the outbox
    async with serve(_sims(2)) as sim:
        site = _write_site(
            tmp_path / "site.yaml",
            url=nobody,
            prefix="t",
            devices=[(f"m{i}", sim.device(f"m{i}").url, i + 1) for i in range(2)],
            interval_s=0.01,
            outbox={"path": "outbox.sqlite", "max_bytes": 65536},
        )
        agent = Agent(load_config(site))
        async with _running(agent):
            await until(lambda: agent.outbox.stats.dropped >= 50, what="overflow")
            stats = agent.outbox.stats
            assert stats.bytes <= 65536
            rows = agent.outbox.rows_after(0, before_id=10**9, limit=10**6)
            ids = [r.id for r in rows]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # the newest, contiguous
            assert ids[0] == stats.dropped + 1
    overflow_lines = [r for r in caplog.records if "over its size limit" in r.getMessage()]
    assert len(overflow_lines) == 1

"""A full disk under the outbox: an episode that drops what cannot be stored, counted exactly.

On a really full filesystem (a 2 MiB tmpfs filled up with a file), in WAL mode, where
SQLite cannot even delete without room for the WAL: every message that could not be stored
is counted, the gap in `seq` is exactly that count, one line is logged when the episode
starts and one when it ends, nothing at ERROR, and storing resumes once space returns.
SQLite's `max_page_count` gives the same failure without root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.delivery.outbox import Outbox, OutboxConfig
from edge_agent.ops.http_server import serving_http
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.filesystems import fill_up, mounted_tmpfs
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(90)


class Feed:
    """Appends messages to an outbox and remembers which ids were stored."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        self.appended: list[int] = []
        self.stored: list[int] = []

    def flush(self, n: int, *, size: int = 400) -> list[int]:
        for _ in range(n):
            msg_id = self.box.reserve_id()
            self.box.append(msg_id, "t/m1/data", b"x" * size, device="m1", readings=10)
            self.appended.append(msg_id)
        rows = [r.id for r in self.box.flush()]
        self.stored.extend(rows)
        return rows

    @property
    def gap(self) -> list[int]:
        """Ids handed out and never stored: what a subscriber sees missing from `seq`."""
        return sorted(set(self.appended) - set(self.stored))


def _outbox_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_agent.delivery.outbox"]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]


def test_a_full_filesystem_drops_exactly_what_it_counts_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    with mounted_tmpfs(tmp_path / "fs") as fs:
        box = Outbox(fs / "outbox.sqlite", OutboxConfig())
        box.open()
        feed = Feed(box)
        assert feed.flush(20) == list(range(1, 21))
        filler = fill_up(fs)
        # Acknowledged while the disk is full: the deletions need WAL frames too (the WAL
        # case), so they wait; nothing is lost and nothing raises.
        for msg_id in range(1, 11):
            box.ack(msg_id)
        for _ in range(100):
            feed.flush(5)
            if box.stats.disk_full:
                break
        assert box.stats.disk_full, "the filled filesystem never refused a write"
        for _ in range(40):  # the episode goes on: every flush drops its batch
            assert feed.flush(5) == []
        assert (fs / "outbox.sqlite-wal").exists()
        gap = feed.gap
        assert len(gap) >= 200
        assert box.stats.disk_full == len(gap)
        assert box.stats.dropped == len(gap)
        assert box.stats.dropped_readings == 10 * len(gap)
        assert box.stats.disk_full_readings == 10 * len(gap)
        assert box.stats.disk_full_since_ms is not None
        lines = _outbox_lines(caplog)
        assert len(lines) == 1 and "disk full" in lines[0], lines

        filler.unlink()  # space returns
        back = feed.flush(3)
        assert back == feed.appended[-3:]
        assert box.stats.disk_full == len(gap)  # nothing more dropped
        assert box.stats.disk_full_since_ms is None
        lines = _outbox_lines(caplog)
        assert len(lines) == 2, lines
        assert f"{len(gap)} messages ({10 * len(gap)} readings)" in lines[1], lines[1]
        assert box.stats.deleted == 10  # the acks of the full episode were applied
        stored_now = [r.id for r in box.rows_after(0, before_id=10**9, limit=10**6)]
        assert stored_now == [*range(11, 21), *[i for i in feed.stored if i > 20]]
        assert _errors(caplog) == []
        box.close()
        again = Outbox(fs / "outbox.sqlite", OutboxConfig())
        again.open()
        assert again.reserve_id() == feed.appended[-1] + 1
        again.close()


def test_sqlite_page_limit_drops_exactly_what_it_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    box = Outbox(tmp_path / "outbox.sqlite", OutboxConfig())
    box.open()
    feed = Feed(box)
    feed.flush(2)
    db = box._require()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full"
    for _ in range(50):
        feed.flush(1, size=4000)
    gap = feed.gap
    assert gap and box.stats.disk_full == box.stats.dropped == len(gap)
    assert box.stats.dropped_readings == 10 * len(gap)
    assert len(_outbox_lines(caplog)) == 1
    db.execute("PRAGMA max_page_count = 1000000")
    assert feed.flush(3) == feed.appended[-3:]  # storing works again once there is room
    lines = _outbox_lines(caplog)
    assert len(lines) == 2 and f"{len(gap)} messages" in lines[1], lines
    assert _errors(caplog) == []


def _site(path: Path, *, broker: Mosquitto, prefix: str, device_url: str, outbox: Path) -> Path:
    path.write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}", backoff_max_s: 1.0}}\n'
        f"outbox: {json.dumps({'path': str(outbox)})}\n"
        "devices:\n"
        f"  - {{name: m1, driver: modbus, url: '{device_url}', device_id: 1,"
        " profile: chint-dtsu666, interval_s: 0.02}\n"
    )
    return path


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


async def test_agent_on_a_full_disk_during_an_outage_counts_every_drop_and_resumes(
    mosquitto_fresh: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outbox grows while the broker is away, until the disk is full: polling goes on,
    what cannot be stored is counted, /healthz and the status page say so; once space and
    the broker return, the subscriber's gap in `seq` is exactly the count."""
    caplog.set_level(logging.INFO, logger="edge_agent")
    broker = mosquitto_fresh
    profile = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))
    spec = SimDeviceSpec(name="m1", url="tcp://127.0.0.1:0", profile=profile, device_id=1)
    with mounted_tmpfs(tmp_path / "fs") as fs:
        async with serve([spec]) as sim:
            site = _site(
                tmp_path / "site.yaml",
                broker=broker,
                prefix=unique_prefix,
                device_url=sim.device("m1").url,
                outbox=fs / "outbox.sqlite",
            )
            agent = Agent(load_config(site), grace_s=1.0)
            sub = subscribe(
                broker.host,
                broker.port,
                f"{unique_prefix}/#",
                client_id=f"sub-{unique_prefix[-8:]}",
                clean_session=False,
            )
            stats = agent.outbox.stats
            async with serving_http(agent, "127.0.0.1", 0) as http, running(agent):
                base = f"http://127.0.0.1:{http.server.address[1]}"
                await until(lambda: len(sub.messages) >= 10, what="live data")
                broker.stop()
                await agent.sink.wait_disconnected(10)
                filler = fill_up(fs)
                await until(lambda: stats.disk_full >= 50, what="50 messages not stored")
                seq_in_episode = agent.seq
                await until(lambda: agent.seq >= seq_in_episode + 20, what="polling goes on")
                code, health = await asyncio.to_thread(_get, f"{base}/healthz")
                assert code == 503 and health["ok"] is False
                assert any("disk full" in p for p in health["problems"]), health
                assert health["outbox_disk_full"]["messages"] >= 50
                _, status = await asyncio.to_thread(_get, f"{base}/status.json")
                assert status["outbox"]["disk_full"] >= 50
                assert status["outbox"]["disk_full_now"] is True
                assert status["outbox"]["disk_full_readings"] > status["outbox"]["disk_full"]

                filler.unlink()  # space returns: storing resumes by itself
                await until(lambda: stats.disk_full_since_ms is None, what="storing again")
                mark = agent.seq  # every drop is below it
                broker.start()
                await until(
                    lambda: not agent.outbox.rows_after(0, before_id=mark + 1, limit=1),
                    what="every stored message up to the mark acknowledged",
                )
                after = agent.seq
                # The broker delivers in order: a later message seen, all before it were.
                await until(lambda: max(_seqs(sub)) > after, what="a message after the mark")
                code, health = await asyncio.to_thread(_get, f"{base}/healthz")
                assert code == 200 and health["ok"] is True, health
                metrics = await asyncio.to_thread(_text, f"{base}/metrics")
                assert f"edge_agent_outbox_disk_full_total {stats.disk_full:.1f}" in metrics
                readings = (
                    f"edge_agent_outbox_disk_full_readings_total {stats.disk_full_readings:.1f}"
                )
                assert readings in metrics
        missing = sorted(set(range(1, mark + 1)) - _seqs(sub))
        assert len(missing) >= 50
        assert stats.disk_full == len(missing)
        assert stats.dropped == len(missing)
        assert stats.dropped_readings == stats.disk_full_readings
        lines = _outbox_lines(caplog)
        assert len(lines) == 2, lines
        assert "disk full" in lines[0]
        assert f"{len(missing)} messages" in lines[1], lines[1]
        assert _errors(caplog) == []


def _seqs(sub: Subscriber) -> set[int]:
    return {
        doc["seq"]
        for m in sub.messages
        if m.topic.endswith("/data") and "seq" in (doc := orjson.loads(m.payload))
    }

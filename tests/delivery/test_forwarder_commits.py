"""When the forwarder commits, against a real Mosquitto and a real SQLite outbox.

Idle (connected, nothing in flight): a message is committed and published in the loop
turn after it was accepted, not a flush interval later. The deletion of an acknowledged
row rides in the next insert's transaction instead of a commit of its own. The keepalive
task sleeps until paho's deadline instead of waking every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge_agent.delivery.forwarder import Forwarder
from edge_agent.delivery.outbox import Outbox, OutboxConfig
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.sink import MqttSink
from tests.fixtures.mosquitto import Mosquitto, Subscriber

pytestmark = pytest.mark.timeout(20)

Subscribe = Callable[..., Subscriber]
SLOW_FLUSH_S = 5.0  # so long that anything committed sooner was not the flush timer


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition the code under test offers no event for."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class _Commits:
    """Counts the outbox's COMMIT statements (SQLite's own trace hook)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.count = 0
        db.set_trace_callback(self._seen)

    def _seen(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.count += 1


@contextlib.asynccontextmanager
async def forwarding(
    mosquitto: Mosquitto, tmp_path: Path, *, flush_interval_s: float, keepalive_s: int = 60
) -> AsyncIterator[tuple[Forwarder, Outbox, MqttSink]]:
    config = OutboxConfig(path=tmp_path / "outbox.sqlite", flush_interval_s=flush_interval_s)
    outbox = Outbox(config.path, config)
    outbox.open()
    sink = MqttSink(
        MqttConfig(url=mosquitto.url, keepalive_s=keepalive_s),
        client_id=f"test-{uuid.uuid4().hex[:10]}",
    )
    forwarder = Forwarder(outbox, sink, window=100, flush_interval_s=flush_interval_s)
    sink_task = asyncio.create_task(sink.run())
    forwarder.start()
    try:
        assert await sink.wait_connected(5)
        forwarder.on_connection(True)
        yield forwarder, outbox, sink
    finally:
        await sink.close(grace_s=1.0)
        await asyncio.wait_for(sink_task, 5)
        forwarder.close()


def _submit(forwarder: Forwarder, topic: str, text: str) -> int:
    seq = forwarder.next_seq()
    forwarder.submit(seq, topic, text.encode(), device="d", readings=1)
    return seq


async def test_an_idle_forwarder_commits_and_publishes_in_the_next_loop_turn(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str, tmp_path: Path
) -> None:
    topic = f"{unique_prefix}/d/data"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with forwarding(mosquitto, tmp_path, flush_interval_s=SLOW_FLUSH_S) as (
        forwarder,
        outbox,
        sink,
    ):
        seq = _submit(forwarder, topic, "first")
        assert (outbox.stats.appended, sink.stats.published) == (0, 0)  # staged, not yet
        await asyncio.sleep(0)  # one loop turn, far less than the flush interval
        assert (outbox.stats.appended, sink.stats.published) == (1, 1)
        assert [r.id for r in outbox.rows_after(0, before_id=seq + 1, limit=10)] == [seq]
        await sub.wait_for(1)
        assert sub.payloads() == [b"first"]


async def test_an_acknowledged_deletion_rides_in_the_next_insert(
    mosquitto: Mosquitto, tmp_path: Path, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}/d/data"
    async with forwarding(mosquitto, tmp_path, flush_interval_s=SLOW_FLUSH_S) as (
        forwarder,
        outbox,
        _sink,
    ):
        assert outbox._db is not None
        commits = _Commits(outbox._db)
        first = _submit(forwarder, topic, "one")
        await until(lambda: outbox.stats.appended == 1 and forwarder.inflight == 0)
        assert (commits.count, outbox.stats.deleted, outbox.stats.messages) == (1, 0, 0)
        second = _submit(forwarder, topic, "two")
        await until(lambda: outbox.stats.appended == 2)
        # One transaction stored the second message and deleted the acknowledged first.
        assert (commits.count, outbox.stats.deleted) == (2, 1)
        assert [r.id for r in outbox.rows_after(0, before_id=second + 1, limit=10)] == [second]
        assert first < second


async def test_an_acked_message_leaves_the_depth_at_once_and_the_file_later(
    mosquitto: Mosquitto, tmp_path: Path, unique_prefix: str
) -> None:
    async with forwarding(mosquitto, tmp_path, flush_interval_s=0.05) as (
        forwarder,
        outbox,
        _sink,
    ):
        assert outbox._db is not None
        commits = _Commits(outbox._db)
        _submit(forwarder, f"{unique_prefix}/d/data", "alone")
        await until(lambda: outbox.stats.appended == 1 and forwarder.inflight == 0)
        # Acknowledged: no longer counted, but its row waits for an insert to ride with.
        assert (outbox.stats.messages, outbox.stats.readings, outbox.stats.bytes) == (0, 0, 0)
        assert (outbox.stats.deleted, commits.count) == (0, 1)
        # No insert came: the deletion goes alone, once (DELETE_DELAY_S).
        await until(lambda: outbox.stats.deleted == 1)
        assert (commits.count, outbox.stats.messages) == (2, 0)
        assert outbox._db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


async def test_a_busy_forwarder_groups_the_messages_of_its_in_flight_window(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str, tmp_path: Path
) -> None:
    topic = f"{unique_prefix}/d/data"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with forwarding(mosquitto, tmp_path, flush_interval_s=SLOW_FLUSH_S) as (
        forwarder,
        outbox,
        _sink,
    ):
        assert outbox._db is not None
        commits = _Commits(outbox._db)
        _submit(forwarder, topic, "m0")
        await asyncio.sleep(0)
        assert forwarder.inflight == 1  # published, its PUBACK not read yet
        for i in range(1, 4):
            _submit(forwarder, topic, f"m{i}")  # busy: staged until the window empties
        assert outbox.stats.appended == 1
        # The PUBACK of m0 empties the window: m1..m3 and m0's deletion in one commit.
        await until(lambda: outbox.stats.appended == 4)
        assert (commits.count, outbox.stats.deleted) == (2, 1)
        await sub.wait_for(4)
        assert sub.payloads() == [b"m0", b"m1", b"m2", b"m3"]


async def test_the_keepalive_task_sleeps_until_the_keepalive_is_due(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with forwarding(mosquitto, tmp_path, flush_interval_s=0.05, keepalive_s=30) as (
        _forwarder,
        _outbox,
        sink,
    ):
        # Connected and silent: nothing for paho's loop_misc to do for about 30 s.
        assert 25.0 < sink._misc_delay() <= 30.1


async def test_polls_of_one_loop_turn_share_a_commit_made_at_its_end_when_idle(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str, tmp_path: Path
) -> None:
    topic = f"{unique_prefix}/d/data"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with forwarding(mosquitto, tmp_path, flush_interval_s=SLOW_FLUSH_S) as (
        forwarder,
        outbox,
        sink,
    ):
        assert outbox._db is not None
        commits = _Commits(outbox._db)
        for n in range(3):  # a poll slot: three devices answered in one turn
            forwarder.submit(forwarder.next_seq(), topic, b"p%d" % n, device="d", readings=1)
        assert (outbox.stats.appended, sink.stats.published, commits.count) == (0, 0, 0)
        await asyncio.sleep(0)  # the end of the turn, not the flush interval
        assert (outbox.stats.appended, sink.stats.published, commits.count) == (3, 3, 1)
        # Their acks have not been read: the next poll waits for them (one commit out).
        forwarder.submit(forwarder.next_seq(), topic, b"p3", device="d", readings=1)
        await asyncio.sleep(0)
        assert (outbox.stats.appended, sink.stats.published) == (3, 3)
        await until(lambda: outbox.stats.appended == 4 and outbox.stats.deleted >= 3)
        assert commits.count == 2  # the three deletions rode with the fourth insert
        await sub.wait_for(4)
        assert sub.payloads() == [b"p0", b"p1", b"p2", b"p3"]


def _poll(forwarder: Forwarder, topic: str, n: int) -> int:
    seq = forwarder.next_seq()
    forwarder.submit(seq, topic, b'{"historical":false,"n":%d}' % n, device="d", readings=1)
    return seq


async def test_a_reconnect_replays_what_came_before_it_as_history_and_only_once(
    mosquitto: Mosquitto, subscribe: Subscribe, unique_prefix: str, tmp_path: Path
) -> None:
    topic = f"{unique_prefix}/d/data"
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with forwarding(mosquitto, tmp_path, flush_interval_s=SLOW_FLUSH_S) as (
        forwarder,
        outbox,
        sink,
    ):
        forwarder.on_connection(False)  # the sink reconnected: up, forwarder not told yet
        assert sink.connected
        _poll(forwarder, topic, 0)  # accepted before the forwarder knew: backlog
        await asyncio.sleep(0)
        assert sink.stats.published == 0
        forwarder.on_connection(True)
        await until(lambda: outbox.stats.messages == 0 and not forwarder.backlog_pending)
        assert outbox.stats.deleted == 0  # acknowledged; its deletion waits (DELETE_DELAY_S)
        # Another reconnect before that deletion: the acked row is deleted, not sent again.
        forwarder.on_connection(False)
        forwarder.on_connection(True)
        assert outbox.stats.deleted == 1
        await until(lambda: not forwarder.backlog_pending)
        _poll(forwarder, topic, 1)
        await sub.wait_for(2)
        await until(lambda: outbox.stats.deleted == 2 and outbox.stats.messages == 0)
        assert sink.stats.published == 2
        assert sub.payloads() == [b'{"historical":true,"n":0}', b'{"historical":false,"n":1}']

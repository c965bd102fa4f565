"""The outbox store on its own: ids, limits, overflow policies, corruption and a full disk."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.delivery.outbox import Outbox, OutboxConfig
from tests.damaged_database import damage


def _open(tmp_path: Path, **config: object) -> Outbox:
    box = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(**config))  # type: ignore[arg-type]
    box.open()
    return box


def _fill(
    box: Outbox, n: int, *, devices: tuple[str, ...] = ("m1",), size: int = 1000
) -> list[int]:
    ids = []
    for i in range(n):
        msg_id = box.reserve_id()
        device = devices[i % len(devices)]
        box.append(
            msg_id, f"t/{device}/data", bytes([65 + i % 26]) * size, device=device, readings=10
        )
        ids.append(msg_id)
    box.flush()
    return ids


def _stored_ids(box: Outbox) -> list[int]:
    return [r.id for r in box.rows_after(0, before_id=10**9, limit=10**6)]


def test_ids_are_sequence_numbers_that_survive_deletes_and_reopen(tmp_path: Path) -> None:
    box = _open(tmp_path)
    assert _fill(box, 5) == [1, 2, 3, 4, 5]
    for msg_id in (1, 2, 5):
        box.ack(msg_id)
    box.flush()
    assert _stored_ids(box) == [3, 4]
    assert (box.stats.messages, box.stats.readings, box.stats.bytes) == (2, 20, 2000)
    assert box.stats.deleted == 3
    box.close()
    # A restart (and a config edit: nothing here depends on it) keeps rows and numbering.
    again = _open(tmp_path, max_bytes=10**6)
    assert _stored_ids(again) == [3, 4]
    assert again.reserve_id() == 6  # 5 was deleted, yet never reused
    assert (again.stats.messages, again.stats.bytes) == (2, 2000)


def test_append_must_use_the_reserved_id(tmp_path: Path) -> None:
    box = _open(tmp_path)
    with pytest.raises(ValueError, match="out of order"):
        box.append(7, "t", b"x", device="m", readings=1)


def test_drop_oldest_keeps_the_newest_within_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.delivery.outbox")
    box = _open(tmp_path, max_bytes=100_000)
    for _ in range(10):
        _fill(box, 30)  # 300 messages of 1000 bytes: three times the limit
    ids = _stored_ids(box)
    assert box.stats.bytes <= 100_000
    assert box.stats.bytes == 1000 * len(ids)
    assert ids == list(range(301 - len(ids), 301))  # contiguous: the newest survive
    assert box.stats.dropped == 300 - len(ids)
    assert box.stats.dropped_readings == 10 * box.stats.dropped
    # One log line for the whole episode, however many flushes hit the limit.
    assert [r.getMessage() for r in caplog.records] == [
        "outbox: over its size limit, applying drop_oldest (limit 100000 bytes)"
    ]
    for msg_id in ids:
        box.ack(msg_id)
    box.flush()
    assert caplog.records[-1].getMessage().startswith("outbox: over its size limit")
    assert "is over" in caplog.records[-1].getMessage()


def test_thin_keeps_every_nth_message_per_device(tmp_path: Path) -> None:
    box = _open(tmp_path, max_bytes=200_000, overflow="thin", thin_keep_every=4)
    _fill(box, 240, devices=("a", "b"))  # 240 kB: over the limit once
    rows = box.rows_after(0, before_id=10**9, limit=10**6)
    assert box.stats.bytes <= 200_000
    assert box.stats.thinned > 0
    thinned = [r for r in rows if r.id <= 120]
    by_device: dict[str, list[int]] = {}
    for r in thinned:
        by_device.setdefault(r.device, []).append(r.id)
    # In the older half, one message in four of each device is left, evenly spaced.
    for device, ids in by_device.items():
        steps = {b - a for a, b in itertools.pairwise(ids)}
        assert steps == {8}, (device, ids)
    assert [r.id for r in rows if r.id > 120] == list(range(121, 241))


def test_expired_messages_are_dropped(tmp_path: Path) -> None:
    box = _open(tmp_path, max_age_s=0.05)
    _fill(box, 3)
    time.sleep(0.1)  # the age limit is about wall time; nothing to wait for instead
    _fill(box, 1)
    assert _stored_ids(box) == [4]
    assert box.stats.expired == 3


def test_a_corrupt_file_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    first = _open(tmp_path)
    _fill(first, 3)
    first.close()
    header = damage(path)  # ours (its application_id is intact), and corrupt
    box = Outbox(path, OutboxConfig())
    box.open()
    assert box.stats.corrupt_files == 1
    aside = list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes()[:100] == header
    assert _fill(box, 2) == [1, 2]
    assert any("is corrupt" in r.getMessage() for r in caplog.records)


def test_a_full_disk_drops_the_batch_and_the_agent_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = _open(tmp_path)
    _fill(box, 2)
    db = box._require()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full"
    _fill(box, 50, size=4000)
    assert box.stats.disk_full > 0
    assert box.stats.dropped >= box.stats.disk_full
    assert any("disk full" in r.getMessage() for r in caplog.records)
    db.execute("PRAGMA max_page_count = 1000000")
    ids = _fill(box, 3)
    assert _stored_ids(box)[-3:] == ids  # storing works again once there is room


def test_the_journal_is_wal_and_sync_is_configurable(tmp_path: Path) -> None:
    box = _open(tmp_path, synchronous="full")
    db = box._require()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_a_second_ack_of_a_deleted_message_leaves_the_depth_right(tmp_path: Path) -> None:
    # A PUBACK for a row deleted already (a message the broker got twice) is taken off the
    # depth again at its ack; the next flush recounts from the file, rows it inserts too.
    box = _open(tmp_path)
    (first,) = _fill(box, 1, size=100)
    box.ack(first, readings=10, size=100)
    box.flush()
    assert (box.stats.messages, box.stats.deleted) == (0, 1)
    box.ack(first, readings=10, size=100)  # the duplicate's PUBACK
    (second,) = _fill(box, 1, size=300)
    assert _stored_ids(box) == [second]
    assert (box.stats.messages, box.stats.readings, box.stats.bytes) == (1, 10, 300)
    assert not box.is_acked(first) and not box.is_acked(second)
    box.ack(second, readings=10, size=300)
    assert box.is_acked(second)
    box.flush()
    assert (box.stats.messages, box.stats.readings, box.stats.bytes) == (0, 0, 0)
    box.close()


def test_the_oldest_age_is_looked_up_only_when_the_oldest_row_goes(tmp_path: Path) -> None:
    box = _open(tmp_path)
    ids = []
    for _ in range(3):
        ids += _fill(box, 1, size=10)
        time.sleep(0.002)  # distinct created_ms
    assert box._db is not None
    created = dict(box._db.execute("SELECT id, created_ms FROM outbox").fetchall())
    assert box.stats.oldest_created_ms == created[ids[0]]
    selects: list[str] = []
    box._db.set_trace_callback(lambda sql: selects.append(sql) if "SELECT" in sql else None)
    box.ack(ids[1])
    box.flush()
    assert (box.stats.oldest_created_ms, selects) == (created[ids[0]], [])
    box.ack(ids[0])
    box.flush()
    assert box.stats.oldest_created_ms == created[ids[2]]
    assert len(selects) == 1
    # The steady state at 1 s polls: the only stored row is acked as the next comes.
    box.ack(ids[2])
    time.sleep(0.002)
    (newest,) = _fill(box, 1, size=10)
    row = box._db.execute("SELECT created_ms FROM outbox WHERE id = ?", (newest,)).fetchone()
    assert box.stats.oldest_created_ms == row[0]
    assert len(selects) == 2  # the check just above, none from the flush
    assert _stored_ids(box) == [newest]
    box.close()

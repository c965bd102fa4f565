"""The ingest's reading of compact (v3) messages and of device metadata (pure logic)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.ingest.meta import VERSIONS_KEPT, MetaBook, parse_meta_topic
from edge_agent.ingest.schema import (
    MetaMissing,
    Rejected,
    Source,
    decode_data,
    decode_messages,
)
from edge_agent.pipeline.compact import CompactEncoder
from edge_agent.pipeline.device_meta import device_meta
from edge_agent.pipeline.payload import DeviceEncoder

NOW_MS = 1_764_154_930_123
SOURCE = Source("f/plant-a/gw-01/meter-1/data", "plant-a", "gw-01", "meter-1")
META_SOURCE = Source("f/plant-a/gw-01/meter-1/meta", "plant-a", "gw-01", "meter-1")
POINTS = (
    PointSpec("v", "V"),
    PointSpec("on", None),
    PointSpec("s", None),
    PointSpec("p", "kW"),
    PointSpec("t", "°C"),
)


def _meta(points: tuple[PointSpec, ...] = POINTS) -> Any:
    return device_meta(
        gateway="gw-01", device="meter-1", driver="modbus", profile="x", points=points, types={}
    )


def _book(*metas: Any) -> MetaBook:
    book = MetaBook()
    for meta in metas:
        book.read(META_SOURCE, meta.payload)
    return book


def _poll() -> Poll:
    return Poll(
        "meter-1",
        NOW_MS * 1_000_000,
        POINTS,
        [230.5, True, "RUN", None, 21.5],
        {3: (Quality.BAD, "timeout"), 4: (Quality.UNCERTAIN, "stale")},
        {0: (NOW_MS - 700) * 1_000_000},
    )


def _decode(payload: bytes, book: MetaBook) -> Any:
    (message,) = decode_messages(
        SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000, units=book.units
    )
    return message


def test_a_compact_message_reads_as_the_v1_message_of_the_same_poll() -> None:
    meta = _meta()
    compact = CompactEncoder(gateway="gw-01", device="meter-1", points=POINTS, meta_id=meta.meta_id)
    v1 = DeviceEncoder(gateway="gw-01", device="meter-1", points=POINTS)
    poll = _poll()
    read = _decode(compact.encode(poll, seq=9, historical=True), _book(meta))
    expected = decode_data(
        SOURCE, v1.encode(poll, seq=9, historical=True), now_ms=NOW_MS, max_future_ms=300_000
    )
    assert read == expected
    assert read.points == [
        ("v", 230.5, "V", 0, None),
        ("on", True, None, 0, None),
        ("s", "RUN", None, 0, None),
        ("p", None, "kW", 2, "timeout"),
        ("t", 21.5, "°C", 1, "stale"),
    ]
    assert read.point_ts == {0: NOW_MS - 700}
    assert (read.seq, read.historical) == (9, True)


def test_keys_in_another_order_read_the_same() -> None:
    meta = _meta()
    payload = CompactEncoder(
        gateway="gw-01", device="meter-1", points=POINTS, meta_id=meta.meta_id
    ).encode(_poll(), seq=3)
    doc = orjson.loads(payload)
    shuffled = orjson.dumps(dict(reversed(list(doc.items()))))
    assert not shuffled.startswith(b'{"schema_version":3,')
    assert _decode(shuffled, _book(meta)) == _decode(payload, _book(meta))


def test_without_its_metadata_a_message_raises_meta_missing() -> None:
    meta = _meta()
    payload = CompactEncoder(
        gateway="gw-01", device="meter-1", points=POINTS, meta_id=meta.meta_id
    ).encode(_poll(), seq=3)
    with pytest.raises(MetaMissing) as missing:
        _decode(payload, MetaBook())
    assert missing.value.meta_id == meta.meta_id
    # Metadata that does not list every point is not this message's either.
    partial = device_meta(
        gateway="gw-01", device="meter-1", driver="modbus", profile="x", points=POINTS[:2], types={}
    )
    book = MetaBook()
    book.read(META_SOURCE, partial.payload)
    lying = payload.replace(meta.meta_id.encode(), partial.meta_id.encode())
    with pytest.raises(MetaMissing):
        _decode(lying, book)
    # No resolver at all (a caller that does not read compact messages): the same.
    with pytest.raises(MetaMissing):
        decode_messages(SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 3,
        "gateway": "gw-01",
        "device": "meter-1",
        "seq": 7,
        "ts_ms": NOW_MS,
        "historical": False,
        "meta": _meta().meta_id,
        "values": {"v": 230.5, "p": None},
        "issues": {"p": {"quality": "bad", "reason": "timeout"}},
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        (_doc(values=_DROP), "schema_version"),
        (_doc(device="meter-2"), "topic_mismatch"),
        (_doc(seq=0), "bad_field"),
        (_doc(historical=1), "bad_field"),
        (_doc(meta=7), "bad_field"),
        (_doc(values={}), "bad_field"),
        (_doc(values=[1]), "bad_field"),
        (_doc(issues=[]), "bad_field"),
        (_doc(issues={"x": {"quality": "bad", "reason": "t"}}), "bad_field"),
        (_doc(point_ts={"nope": NOW_MS}), "bad_field"),
        (_doc(issues={"p": {"quality": "bad"}}), "bad_point"),
        (_doc(issues={"p": {"quality": "good", "reason": "t"}}), "bad_point"),
        (_doc(issues={"p": {"quality": "bad", "reason": "t", "unit": "W"}}), "bad_point"),
        (_doc(issues={}), "bad_value"),  # p is null and good
        (_doc(values={"v": 1, "p": 2}), "bad_value"),  # a bad point with a value
        (_doc(values={"v": [1], "p": None}), "bad_value"),
        (_doc(point_ts={"v": 1.5}), "bad_point"),
        (_doc(ts_ms=NOW_MS + 300_001), "bad_timestamp"),
    ],
)
def test_bad_compact_messages_are_rejected_by_kind(doc: dict[str, Any], kind: str) -> None:
    with pytest.raises(Rejected) as caught:
        _decode(orjson.dumps(doc), _book(_meta()))
    assert caught.value.kind == kind


def test_the_book_keeps_the_latest_and_the_versions_before_it() -> None:
    book = MetaBook()
    versions = [_meta((PointSpec("v", f"unit{i}"),)) for i in range(VERSIONS_KEPT + 2)]
    for meta in versions:
        assert book.read(META_SOURCE, meta.payload) == meta.meta_id
    assert book.latest(SOURCE) == {"v": f"unit{VERSIONS_KEPT + 1}"}
    assert book.units(SOURCE, versions[-VERSIONS_KEPT].meta_id) == {
        "v": f"unit{2}"
    }  # the oldest kept
    assert book.units(SOURCE, versions[1].meta_id) is None  # dropped
    # Published again: it becomes the latest, and nothing is kept twice.
    assert book.read(META_SOURCE, versions[5].payload) == versions[5].meta_id
    assert book.latest(SOURCE) == {"v": "unit5"}
    # An empty retained message (the device removed) clears the latest only.
    assert book.read(META_SOURCE, b"") is None
    assert book.latest(SOURCE) is None
    assert book.units(SOURCE, versions[5].meta_id) == {"v": "unit5"}
    other = Source("t", "plant-a", "gw-02", "meter-1")
    assert book.latest(other) is None and book.units(other, versions[5].meta_id) is None


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{nope", "malformed_json"),
        (b"[]", "not_data"),
        (orjson.dumps({"schema_version": 2}), "schema_version"),
        (
            orjson.dumps(
                {"schema_version": 1, "gateway": "gw-09", "device": "meter-1", "meta": "a"}
            ),
            "topic_mismatch",
        ),
        (
            orjson.dumps(
                {"schema_version": 1, "gateway": "gw-01", "device": "meter-1", "points": {}}
            ),
            "bad_field",
        ),
        (
            orjson.dumps(
                {
                    "schema_version": 1,
                    "gateway": "gw-01",
                    "device": "meter-1",
                    "meta": "a",
                    "points": {"v": {"unit": "k\nW"}},
                }
            ),
            "bad_point",
        ),
        (
            orjson.dumps(
                {
                    "schema_version": 1,
                    "gateway": "gw-01",
                    "device": "meter-1",
                    "meta": "a",
                    "points": {"v": {"type": "float32"}},
                }
            ),
            "bad_point",
        ),
    ],
)
def test_bad_metadata_is_rejected_and_changes_nothing(payload: bytes, kind: str) -> None:
    book = _book(_meta())
    with pytest.raises(Rejected) as caught:
        book.read(META_SOURCE, payload)
    assert caught.value.kind == kind
    assert book.latest(SOURCE) == {p.name: p.unit for p in POINTS}


def test_metadata_topics() -> None:
    assert parse_meta_topic("a/b/plant-a/gw-01/m-1/meta", "a/b") == Source(
        "a/b/plant-a/gw-01/m-1/meta", "plant-a", "gw-01", "m-1"
    )
    assert parse_meta_topic("a/b/plant-a/gw-01/m-1/data", "a/b") is None
    assert parse_meta_topic("a/plant-a/gw-01/m-1/meta", "a/b") is None
    assert parse_meta_topic("a/b/plant-a/gw-01/meta", "a/b") is None

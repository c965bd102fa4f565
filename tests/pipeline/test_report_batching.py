"""Batching: several polls of a device per v2 message, by count, size, age and urgency.

The batcher is driven with scripted polls and a recording submitter (the forwarder's two
methods); the age limit runs on a virtual clock (looptime). Every message is checked
against the v2 JSON schema and decoded back into the polls that went in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from drivers.options.report import BatchOptions
from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config.site import load_config
from edge_agent.delivery.outbox import Outbox, OutboxConfig
from edge_agent.ingest.schema import DataMessage, Rejected, Source, decode_messages
from edge_agent.pipeline.batching import Batcher, build_batcher, resend_held
from edge_agent.pipeline.payload import DeviceEncoder

ROOT = Path(__file__).resolve().parents[2]
V2 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v2.schema.json").read_text())
)
S = 1_000_000_000
T0 = 1_764_000_000 * S
POINTS = (PointSpec("v", "V"), PointSpec("run"), PointSpec("mode"))
TOPIC = "f/s/gw/d/data"


class Recorder:
    """Records what the batcher submits, numbering messages like the forwarder."""

    def __init__(self) -> None:
        self.seq = 100
        self.sent: list[tuple[int, str, dict[str, Any], str, int]] = []
        self.payloads: list[bytes] = []

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def submit(self, seq: int, topic: str, payload: bytes, *, device: str, readings: int) -> None:
        doc = orjson.loads(payload)
        V2.validate(doc)
        self.sent.append((seq, topic, doc, device, readings))
        self.payloads.append(payload)

    def polls(self) -> list[tuple[int, dict[str, Any]]]:
        return [(p["ts_ms"], p["points"]) for _, _, doc, _, _ in self.sent for p in doc["polls"]]


def _batcher(**options: Any) -> tuple[Batcher, Recorder]:
    out = Recorder()
    batcher = Batcher(
        {"d": BatchOptions(**options)}, gateway="gw", topics={"d": TOPIC}, forwarder=out
    )
    return batcher, out


def _poll(k: int, value: float = 1.0, issues: dict[int, tuple[Quality, str]] | None = None) -> Poll:
    return Poll("d", T0 + k * S, POINTS, [value, True, "AUTO"], issues or {})


@pytest.mark.looptime
async def test_a_batch_goes_up_at_max_polls_keeping_each_polls_time() -> None:
    batcher, out = _batcher(max_polls=3, max_age_s=600)
    for k in range(7):
        assert batcher.add(_poll(k, value=float(k)))
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [3, 3]
    seq, topic, doc, device, readings = out.sent[0]
    assert (seq, topic, device, readings) == (101, TOPIC, "d", 9)
    assert doc["schema_version"] == 2 and doc["gateway"] == "gw" and doc["device"] == "d"
    assert doc["ts_ms"] == T0 // 1_000_000 and doc["historical"] is False
    assert [p["ts_ms"] for p in doc["polls"]] == [(T0 + k * S) // 1_000_000 for k in range(3)]
    assert doc["polls"][1]["points"] == {
        "v": {"value": 1.0, "unit": "V", "quality": "good"},
        "run": {"value": True, "unit": None, "quality": "good"},
        "mode": {"value": "AUTO", "unit": None, "quality": "good"},
    }
    batcher.flush()
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [3, 3, 1]
    assert [seq for seq, *_ in out.sent] == [101, 102, 103]
    batcher.flush()  # nothing waiting: nothing sent
    assert len(out.sent) == 3
    assert batcher.sent("d")[0] == 3


@pytest.mark.looptime
async def test_a_batch_goes_up_when_its_oldest_poll_is_max_age_old() -> None:
    batcher, out = _batcher(max_polls=1000, max_age_s=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0.5)  # polls half-way between the age timers: no tie to break
    for k in range(25):
        batcher.add(_poll(k))
        await asyncio.sleep(1.0)
    # Polls at 0.5 .. 24.5 s: batches close 10 s after their first poll, at 10.5 and 20.5.
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [10, 10]
    assert loop.time() - start == pytest.approx(25.5)
    await asyncio.sleep(5.0)
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [10, 10, 5]


@pytest.mark.looptime
async def test_a_batch_never_grows_past_max_bytes() -> None:
    batcher, out = _batcher(max_polls=1000, max_age_s=600, max_bytes=400)
    for k in range(20):
        batcher.add(_poll(k, value=1000.0 + k))
    batcher.flush()
    sizes = [len(orjson.dumps(doc)) for _, _, doc, _, _ in out.sent]
    polls = [len(doc["polls"]) for _, _, doc, _, _ in out.sent]
    assert sum(polls) == 20
    envelope = len(orjson.dumps({**out.sent[0][2], "polls": []}))
    # The limit is on the rendered polls; the envelope comes on top.
    assert all(size <= 400 + envelope for size in sizes), sizes
    assert len(polls) >= 5


@pytest.mark.looptime
async def test_a_quality_change_sends_the_batch_at_once() -> None:
    batcher, out = _batcher(max_polls=1000, max_age_s=600)
    timeout = {
        0: (Quality.BAD, "timeout"),
        1: (Quality.BAD, "timeout"),
        2: (Quality.BAD, "timeout"),
    }
    batcher.add(_poll(0))  # a first poll that is good is no news
    batcher.add(_poll(1))
    assert out.sent == []
    batcher.add(Poll("d", T0 + 2 * S, POINTS, [None, None, None], timeout))
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [3]
    batcher.add(Poll("d", T0 + 3 * S, POINTS, [None, None, None], timeout))  # same: waits
    assert len(out.sent) == 1
    batcher.add(_poll(4))  # good again: at once
    assert [len(doc["polls"]) for _, _, doc, _, _ in out.sent] == [3, 2]
    bad = out.sent[0][2]["polls"][2]["points"]["v"]
    assert bad == {"value": None, "unit": "V", "quality": "bad", "reason": "timeout"}


@pytest.mark.looptime
async def test_thinned_polls_batch_with_only_their_points() -> None:
    batcher, out = _batcher(max_polls=2, max_age_s=600)
    batcher.add(_poll(0))
    batcher.add(Poll("d", T0 + S, (POINTS[0],), [2.5]))
    ((_, _, doc, _, readings),) = out.sent
    assert readings == 4
    assert [sorted(p["points"]) for p in doc["polls"]] == [["mode", "run", "v"], ["v"]]


async def test_devices_without_batch_options_are_not_taken() -> None:
    batcher, out = _batcher()
    assert batcher.add(Poll("other", T0, POINTS, [1.0, True, "A"])) is False
    assert batcher.batches("d") and not batcher.batches("other")
    assert out.sent == []


def test_batch_options_come_from_the_device(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\ngateway: g\ndevices:\n"
        "  - {name: a, driver: modbus, url: 'tcp://127.0.0.1:5020', profile: chint-dtsu666,\n"
        "     batch: {max_polls: 30, max_age_s: 15}}\n"
        "  - {name: b, driver: modbus, url: 'tcp://127.0.0.1:5021', profile: chint-dtsu666}\n"
    )
    loaded = load_config(site)
    batcher = build_batcher(loaded, topics={"a": "t/a", "b": "t/b"}, forwarder=Recorder())
    assert batcher is not None and batcher.batches("a") and not batcher.batches("b")
    site.write_text(site.read_text().replace("max_age_s: 15", "max_age_s: 0"))
    with pytest.raises(Exception, match=r"site.yaml:5 devices\[0\].batch.max_age_s"):
        load_config(site)


# -- the ingest takes both forms ----------------------------------------------------------------

SOURCE = Source("f/s/gw/d/data", "s", "gw", "d")
NOW_MS = (T0 + 3600 * S) // 1_000_000


def _decode(payload: bytes) -> list[DataMessage]:
    return decode_messages(SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000)


@pytest.mark.looptime
async def test_the_ingest_unpacks_a_batch_into_the_polls_it_holds() -> None:
    batcher, out = _batcher(max_polls=3, max_age_s=600)
    polls = [
        _poll(0, 1.5),
        Poll("d", T0 + S, (POINTS[0],), [2.5]),
        _poll(2, 3.5, {1: (Quality.UNCERTAIN, "stale")}),
    ]
    for poll in polls:
        batcher.add(poll)
    (payload,) = out.payloads
    messages = _decode(payload)
    encoder = DeviceEncoder(gateway="gw", device="d", points=POINTS)
    singles = [_decode(encoder.encode(p, seq=101))[0] for p in polls]
    assert messages == singles  # the same rows as three v1 messages
    assert [m.ts_ms for m in messages] == [(T0 + k * S) // 1_000_000 for k in range(3)]
    # Keys in another order are still a v2 message.
    doc = orjson.loads(payload)
    reordered = orjson.dumps({"polls": doc.pop("polls"), **doc})
    assert _decode(reordered) == messages
    # v1 goes through as before.
    assert _decode(encoder.encode(polls[0], seq=7))[0].seq == 7


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"polls": []}, "bad_field"),
        ({"polls": [{"ts_ms": 1}]}, "bad_field"),
        ({"polls": None}, "bad_field"),
        ({"points": {}}, "bad_field"),
        ({"schema_version": 3}, "schema_version"),
        ({"device": "other"}, "topic_mismatch"),
        (
            {
                "polls": [
                    {"ts_ms": 5, "points": {"v": {"value": 1.0, "unit": None, "quality": "good"}}}
                ]
            },
            "bad_timestamp",
        ),
        (
            {
                "polls": [
                    {
                        "ts_ms": NOW_MS,
                        "points": {"v": {"value": None, "unit": None, "quality": "good"}},
                    }
                ]
            },
            "bad_value",
        ),
    ],
)
def test_the_ingest_rejects_a_broken_batch(change: dict[str, Any], kind: str) -> None:
    doc = {
        "schema_version": 2,
        "gateway": "gw",
        "device": "d",
        "seq": 5,
        "ts_ms": NOW_MS,
        "historical": False,
        "polls": [
            {"ts_ms": NOW_MS, "points": {"v": {"value": 1.0, "unit": "V", "quality": "good"}}}
        ],
        **change,
    }
    with pytest.raises(Rejected) as rejected:
        _decode(orjson.dumps(doc))
    assert rejected.value.kind == kind


@pytest.mark.parametrize("head_first", [True, False])
def test_version_2_without_polls_is_a_wrong_version_not_a_broken_batch(head_first: bool) -> None:
    doc = {"gateway": "gw", "device": "d", "seq": 5, "ts_ms": NOW_MS, "historical": False}
    doc = {"schema_version": 2, **doc} if head_first else {**doc, "schema_version": 2}
    doc["points"] = {"v": {"value": 1.0, "unit": "V", "quality": "good"}}
    with pytest.raises(Rejected) as rejected:
        _decode(orjson.dumps(doc))
    assert rejected.value.kind == "schema_version"


class _Direct:
    """The forwarder's two submit methods straight onto a real Outbox (no broker needed)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def next_seq(self) -> int:
        return self.outbox.reserve_id()

    def submit(self, seq: int, topic: str, payload: bytes, *, device: str, readings: int) -> None:
        self.outbox.append(seq, topic, payload, device=device, readings=readings)


@pytest.mark.looptime
async def test_polls_waiting_in_a_batch_survive_a_crash_and_go_up_at_start(
    tmp_path: Path,
) -> None:
    """Each waiting poll is kept in the outbox with the next flush (20 ms), like any
    message; a crash then loses none of them, and the batch that goes up releases them in
    the transaction that stores it."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, OutboxConfig())
    outbox.open()
    batcher = Batcher(
        {"d": BatchOptions(max_polls=4, max_age_s=600)},
        gateway="gw",
        topics={"d": TOPIC},
        forwarder=_Direct(outbox),
        holder=outbox,
    )
    for k in range(6):  # one batch of 4 goes up; 2 polls wait
        batcher.add(_poll(k, value=float(k)))
    outbox.flush()  # the forwarder's periodic flush
    assert [
        len(orjson.loads(r.payload)["polls"]) for r in outbox.rows_after(0, before_id=99, limit=9)
    ] == [4]
    assert [h.ts_ms for h in outbox.held()] == [(T0 + k * S) // 1_000_000 for k in (4, 5)]
    # The process dies here: no batcher.flush(), the connection just goes away.
    assert outbox._db is not None
    outbox._db.close()
    outbox._db = None

    again = Outbox(path, OutboxConfig())
    again.open()
    held = again.held()
    assert resend_held(held, gateway="gw", forwarder=_Direct(again), holder=again) == 1
    again.flush()
    assert again.held() == []
    rows = again.rows_after(0, before_id=99, limit=9)
    doc = orjson.loads(rows[-1].payload)
    V2.validate(doc)
    assert (rows[-1].id, rows[-1].topic, rows[-1].readings) == (2, TOPIC, 6)
    assert (doc["historical"], doc["device"], doc["ts_ms"]) == (
        True,
        "d",
        (T0 + 4 * S) // 1_000_000,
    )
    assert [p["points"]["v"]["value"] for p in doc["polls"]] == [4.0, 5.0]
    again.close()

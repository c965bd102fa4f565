"""Per-point source times (`Poll.point_ts`, a point's own `ts_ms`): rendered by the agent's
encoders (v1 and v2), valid against both schemas, checked by the ingest and stored at the
point's time in the embedded store and in VictoriaMetrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from drivers.options.report import BatchOptions, ReportOptions
from drivers.reading import PointSpec, Poll, Quality, Value
from edge_agent.ingest.embedded_store import EmbeddedStore, read_points
from edge_agent.ingest.schema import (
    MIN_TS_MS,
    LineEncoder,
    Rejected,
    Source,
    decode_data,
    decode_messages,
)
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.pipeline.batching import Batcher
from edge_agent.pipeline.by_exception import PointRule, ReportFilter
from edge_agent.pipeline.payload import DeviceEncoder
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.ingest_support import publish, running, unique_site, until, write_site

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
V1 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_text())
)
V2 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v2.schema.json").read_text())
)
MS = 1_000_000  # ns per ms
NOW_MS = 1_764_154_930_123
POINTS = (
    PointSpec("temp", "degC"),
    PointSpec("lel", "%LEL"),
    PointSpec("pump_run"),
    PointSpec("counter"),
)
SOURCE = Source("f/plant-a/gw-01/plc-1/data", "plant-a", "gw-01", "plc-1")


def _encoder() -> DeviceEncoder:
    return DeviceEncoder(gateway="gw-01", device="plc-1", points=POINTS)


def _stamped_poll(ts_ms: int = NOW_MS) -> Poll:
    """A poll read at ts_ms + 0.4 ms: lel stamped 2.5 s earlier, temp in the same ms as the
    read (so no time of its own), pump_run without a source time, an uncertain counter
    stamped 1 ns before the read's ms (the ms before: times are floored)."""
    return Poll(
        "plc-1",
        ts_ms * MS + 400_000,
        POINTS,
        [61.5, 12.25, True, 17],
        {3: (Quality.UNCERTAIN, "UncertainLastUsableValue")},
        {1: (ts_ms - 2500) * MS + 123_456, 0: ts_ms * MS + 900_000, 3: ts_ms * MS - 1},
    )


def _point(value: Any, unit: str | None, **more: Any) -> dict[str, Any]:
    return {"value": value, "unit": unit, "quality": "good", **more}


# --- the agent's encoders ---------------------------------------------------------------


def test_entries_carry_ts_ms_only_where_given_and_different() -> None:
    encoder = _encoder()
    doc = orjson.loads(encoder.encode(_stamped_poll(), seq=7))
    V1.validate(doc)
    assert doc == {
        "schema_version": 1,
        "gateway": "gw-01",
        "device": "plc-1",
        "seq": 7,
        "ts_ms": NOW_MS,
        "historical": False,
        "points": {
            "temp": _point(61.5, "degC"),
            "lel": _point(12.25, "%LEL", ts_ms=NOW_MS - 2500),
            "pump_run": _point(True, None),
            "counter": {
                "value": 17,
                "unit": None,
                "quality": "uncertain",
                "reason": "UncertainLastUsableValue",
                "ts_ms": NOW_MS - 1,
            },
        },
    }
    # The next poll of the same encoder, without times: nothing of the last one is left.
    plain = Poll("plc-1", (NOW_MS + 1000) * MS, POINTS, [61.0, 12.0, False, 18])
    doc = orjson.loads(encoder.encode(plain, seq=8))
    V1.validate(doc)
    assert doc["points"] == {
        "temp": _point(61.0, "degC"),
        "lel": _point(12.0, "%LEL"),
        "pump_run": _point(False, None),
        "counter": _point(18, None),
    }


def test_a_thinned_poll_stamps_its_own_points() -> None:
    """Report by exception sends a subset of the points; point_ts counts in that subset."""
    encoder = _encoder()
    subset = (POINTS[1], POINTS[3])
    poll = Poll("plc-1", NOW_MS * MS, subset, [3.5, 20], {}, {0: (NOW_MS - 40) * MS})
    doc = orjson.loads(encoder.encode(poll, seq=9, historical=True))
    V1.validate(doc)
    assert doc["historical"] is True
    assert doc["points"] == {
        "lel": _point(3.5, "%LEL", ts_ms=NOW_MS - 40),
        "counter": _point(20, None),
    }
    full = orjson.loads(
        encoder.encode(Poll("plc-1", NOW_MS * MS, POINTS, [1.0, 2.0, True, 3]), seq=10)
    )
    assert all("ts_ms" not in entry for entry in full["points"].values())


class _Recorder:
    """Takes what the batcher submits (the forwarder's part)."""

    def __init__(self) -> None:
        self.seq = 0
        self.payloads: list[bytes] = []

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def submit(self, seq: int, topic: str, payload: bytes, *, device: str, readings: int) -> None:
        self.payloads.append(payload)


def _batcher() -> tuple[Batcher, _Recorder]:
    out = _Recorder()
    options = {"plc-1": BatchOptions(max_polls=2, max_age_s=600)}
    return Batcher(options, gateway="gw-01", topics={"plc-1": SOURCE.topic}, forwarder=out), out


def _plain_poll() -> Poll:
    """All good, no point times, a second before the stamped poll."""
    return Poll("plc-1", (NOW_MS - 1000) * MS, POINTS, [61.0, 12.0, False, 18])


async def test_batched_polls_carry_their_points_times() -> None:
    batcher, out = _batcher()
    assert batcher.add(_plain_poll())
    assert batcher.add(_stamped_poll())  # the uncertain counter sends the batch at once
    (payload,) = out.payloads
    doc = orjson.loads(payload)
    V2.validate(doc)
    assert doc["polls"] == [
        {
            "ts_ms": NOW_MS - 1000,
            "points": {
                "temp": _point(61.0, "degC"),
                "lel": _point(12.0, "%LEL"),
                "pump_run": _point(False, None),
                "counter": _point(18, None),
            },
        },
        {
            "ts_ms": NOW_MS,
            "points": {
                "temp": _point(61.5, "degC"),
                "lel": _point(12.25, "%LEL", ts_ms=NOW_MS - 2500),
                "pump_run": _point(True, None),
                "counter": {
                    "value": 17,
                    "unit": None,
                    "quality": "uncertain",
                    "reason": "UncertainLastUsableValue",
                    "ts_ms": NOW_MS - 1,
                },
            },
        },
    ]


@pytest.mark.parametrize(
    ("ts_ms", "valid"),
    [(NOW_MS - 2500, True), (0, True), (-1, False), (1.5, False), ("1764154930123", False)],
)
def test_both_schemas_take_an_integer_point_ts_ms(ts_ms: object, valid: bool) -> None:
    entry = _point(1.0, "%LEL", ts_ms=ts_ms)
    v1 = {
        "schema_version": 1,
        "gateway": "gw-01",
        "device": "plc-1",
        "seq": 1,
        "ts_ms": NOW_MS,
        "historical": False,
        "points": {"lel": entry},
    }
    v2 = {**v1, "schema_version": 2, "polls": [{"ts_ms": NOW_MS, "points": {"lel": entry}}]}
    del v2["points"]
    assert (V1.is_valid(v1), V2.is_valid(v2)) == (valid, valid)


# --- the ingest -------------------------------------------------------------------------


def _decode(payload: bytes) -> Any:
    return decode_data(SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000)


def test_the_ingest_writes_each_point_at_its_own_time() -> None:
    message = _decode(_encoder().encode(_stamped_poll(), seq=7))
    assert message.ts_ms == NOW_MS
    assert message.points == [
        ("temp", 61.5, "degC", 0, None),
        ("lel", 12.25, "%LEL", 0, None),
        ("pump_run", True, None, 0, None),
        ("counter", 17, None, 1, "UncertainLastUsableValue"),
    ]
    assert message.point_ts == {1: NOW_MS - 2500, 3: NOW_MS - 1}
    lines: list[str] = ["(a line already in the batch)"]
    assert LineEncoder("edge").encode(message, lines) == 4
    head = "edge,device=plc-1,gateway=gw-01,point="
    assert lines == [
        "(a line already in the batch)",
        f"{head}temp,site=plant-a,unit=degC value=61.5,quality=0i {NOW_MS}",
        f"{head}lel,site=plant-a,unit=%LEL value=12.25,quality=0i {NOW_MS - 2500}",
        f"{head}pump_run,site=plant-a value=1,quality=0i {NOW_MS}",
        f"{head}counter,site=plant-a value=17,quality=1i,reason=99i {NOW_MS - 1}",
    ]
    # A message without point times decodes as before.
    plain = _decode(
        _encoder().encode(Poll("plc-1", NOW_MS * MS, POINTS, [1.0, 2.0, True, 3]), seq=8)
    )
    assert plain.point_ts is None


def test_a_string_value_with_spaces_keeps_its_text_and_takes_the_point_time() -> None:
    points = (PointSpec("status"),)
    encoder = DeviceEncoder(gateway="gw-01", device="plc-1", points=points)
    poll = Poll("plc-1", NOW_MS * MS, points, ['RUN "a b"'], {}, {0: (NOW_MS - 5) * MS})
    lines: list[str] = []
    LineEncoder("edge", string_values=True).encode(_decode(encoder.encode(poll, seq=1)), lines)
    assert lines == [
        'edge,device=plc-1,gateway=gw-01,point=status,site=plant-a text="RUN \\"a b\\"",'
        f"quality=0i {NOW_MS - 5}"
    ]


async def test_a_v2_message_decodes_to_polls_with_point_times() -> None:
    batcher, out = _batcher()
    batcher.add(_plain_poll())
    batcher.add(_stamped_poll())
    (payload,) = out.payloads
    first, second = decode_messages(SOURCE, payload, now_ms=NOW_MS, max_future_ms=300_000)
    assert (first.ts_ms, first.point_ts) == (NOW_MS - 1000, None)
    assert (second.ts_ms, second.point_ts) == (NOW_MS, {1: NOW_MS - 2500, 3: NOW_MS - 1})
    lines: list[str] = []
    encoder = LineEncoder("edge")
    for message in (first, second):
        encoder.encode(message, lines)
    assert [line.rsplit(" ", 1)[1] for line in lines] == [
        str(t) for t in [NOW_MS - 1000] * 4 + [NOW_MS, NOW_MS - 2500, NOW_MS, NOW_MS - 1]
    ]


@pytest.mark.parametrize(
    ("ts_ms", "kind", "detail"),
    [
        (5, "bad_timestamp", "point 'lel': ts_ms 5 is before 2000-01-01"),
        (
            MIN_TS_MS - 1,
            "bad_timestamp",
            f"point 'lel': ts_ms {MIN_TS_MS - 1} is before 2000-01-01",
        ),
        (
            NOW_MS + 301_000,
            "bad_timestamp",
            f"point 'lel': ts_ms {NOW_MS + 301_000} is 301 s in the future",
        ),
        (1.5, "bad_point", "point 'lel': ts_ms must be an integer, got 1.5"),
        (True, "bad_point", "point 'lel': ts_ms must be an integer, got true"),
        (None, "bad_point", "point 'lel': ts_ms must be an integer, got null"),
        (
            "1764154930123",
            "bad_point",
            "point 'lel': ts_ms must be an integer, got \"1764154930123\"",
        ),
    ],
)
def test_a_bad_point_time_rejects_the_message_naming_the_point(
    ts_ms: object, kind: str, detail: str
) -> None:
    doc = orjson.loads(_encoder().encode(_stamped_poll(), seq=7))
    doc["points"]["lel"]["ts_ms"] = ts_ms
    with pytest.raises(Rejected) as caught:
        _decode(orjson.dumps(doc))
    assert (caught.value.kind, caught.value.detail) == (kind, detail)
    # The same in a batch.
    batch = {**doc, "schema_version": 2, "polls": [{"ts_ms": NOW_MS, "points": doc["points"]}]}
    del batch["points"]
    with pytest.raises(Rejected) as caught:
        decode_messages(SOURCE, orjson.dumps(batch), now_ms=NOW_MS, max_future_ms=300_000)
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


@pytest.mark.parametrize("ts_ms", [MIN_TS_MS, NOW_MS + 300_000])
def test_point_times_at_the_bounds_pass(ts_ms: int) -> None:
    doc = orjson.loads(_encoder().encode(_stamped_poll(), seq=7))
    doc["points"]["lel"]["ts_ms"] = ts_ms
    assert _decode(orjson.dumps(doc)).point_ts == {1: ts_ms, 3: NOW_MS - 1}


def test_the_embedded_store_keeps_each_point_at_its_own_time(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "edge.sqlite")
    message = _decode(_encoder().encode(_stamped_poll(), seq=7))
    assert store.write_sync([message]) == 4
    store.close_sync()
    rows = read_points(tmp_path / "edge.sqlite", device="plc-1")
    assert [(r.point, r.ts_ms, r.value, r.quality) for r in rows] == [
        ("counter", NOW_MS - 1, 17.0, "uncertain"),
        ("lel", NOW_MS - 2500, 12.25, "good"),
        ("pump_run", NOW_MS, 1.0, "good"),
        ("temp", NOW_MS, 61.5, "good"),
    ]


# --- through Mosquitto into both stores -------------------------------------------------


def _published(prefix: str, site: str, base_ms: int) -> tuple[list[tuple[str, bytes]], str]:
    """Three good messages (two v1, one v2 of two polls) and one with a bad point time.

    lel is stamped at its source in every poll: base-700, base+750, base+1800, base+2950;
    temp and pump_run are at their polls' times: base, base+1000, base+2000, base+3000.
    """
    topic = f"{prefix}/{site}/gw-01/plc-1/data"
    points = POINTS[:3]
    encoder = DeviceEncoder(gateway="gw-01", device="plc-1", points=points)
    out: list[tuple[str, bytes]] = []
    for seq, (poll_ms, lel_ms) in enumerate(
        [(base_ms, base_ms - 700), (base_ms + 1000, base_ms + 750)], 1
    ):
        values: list[Value] = [60.0 + seq, 10.0 + seq, seq % 2 == 0]
        # temp stamped in the poll's own ms: it takes the poll's time, without a ts_ms
        point_ts = {0: poll_ms * MS + 300, 1: lel_ms * MS}
        poll = Poll("plc-1", poll_ms * MS, points, values, {}, point_ts)
        out.append((topic, encoder.encode(poll, seq=seq)))
    recorder = _Recorder()
    recorder.seq = 2
    batcher = Batcher(
        {"plc-1": BatchOptions(max_polls=2, max_age_s=600)},
        gateway="gw-01",
        topics={"plc-1": topic},
        forwarder=recorder,
    )
    for k, (poll_ms, lel_ms) in enumerate(
        [(base_ms + 2000, base_ms + 1800), (base_ms + 3000, base_ms + 2950)]
    ):
        batch_values: list[Value] = [63.0 + k, 13.0 + k, k % 2 == 0]
        batcher.add(Poll("plc-1", poll_ms * MS, points, batch_values, {}, {1: lel_ms * MS}))
    out.append((topic, recorder.payloads[0]))
    bad = orjson.loads(out[0][1])
    bad["seq"] = 4
    bad["points"]["lel"]["ts_ms"] = 5
    out.append((topic, orjson.dumps(bad)))
    return out, topic


def _expected(base_ms: int) -> dict[str, tuple[list[int], list[float]]]:
    polls = [base_ms, base_ms + 1000, base_ms + 2000, base_ms + 3000]
    return {
        "lel": (
            [base_ms - 700, base_ms + 750, base_ms + 1800, base_ms + 2950],
            [11.0, 12.0, 13.0, 14.0],
        ),
        "pump_run": (polls, [0.0, 1.0, 1.0, 0.0]),
        "temp": (polls, [61.0, 62.0, 63.0, 64.0]),
    }


async def _check_dead_letter(letters: Subscriber, topic: str) -> None:
    (letter,) = await letters.wait_for(1)
    doc = orjson.loads(letter.payload)
    assert (doc["topic"], doc["kind"], doc["detail"]) == (
        topic,
        "bad_timestamp",
        "point 'lel': ts_ms 5 is before 2000-01-01",
    )


async def test_point_times_reach_the_embedded_store(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str, subscribe: Any
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{store: data/edge.sqlite, flush_interval_s: 0.05}",
    )
    letters = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/+/+/deadletter")
    base_ms = time.time_ns() // MS - 3_600_000
    messages, topic = _published(unique_prefix, site, base_ms)
    ingest = Ingest(loaded, worker="point-ts")
    async with running(ingest):
        await publish(mosquitto.url, messages)
        await until(lambda: ingest.client.stats.acked == 4, "4 messages acknowledged")
    assert (ingest.stats.stored_messages, ingest.stats.deadlettered) == (4, 1)
    await _check_dead_letter(letters, topic)
    rows = read_points(store_path(loaded), site=site, device="plc-1")
    stored: dict[str, tuple[list[int], list[float | None]]] = {}
    for row in rows:
        times, values = stored.setdefault(row.point, ([], []))
        times.append(row.ts_ms)
        values.append(row.value)
    assert stored == _expected(base_ms)


async def test_point_times_reach_victoria_metrics(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria: Victoria,
    unique_prefix: str,
    subscribe: Any,
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
    )
    letters = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/+/+/deadletter")
    base_ms = time.time_ns() // MS - 3_600_000
    messages, topic = _published(unique_prefix, site, base_ms)
    ingest = Ingest(loaded, worker="point-ts")
    async with running(ingest):
        await publish(mosquitto.url, messages)
        await until(lambda: ingest.client.stats.acked == 4, "4 messages acknowledged")
    assert (ingest.stats.stored_messages, ingest.stats.deadlettered) == (4, 1)
    await _check_dead_letter(letters, topic)
    series = victoria.wait_for_samples(f'{{site="{site}"}}', count=3 * 4 * 2)
    got = {
        (s["metric"]["__name__"], s["metric"]["point"]): (s["timestamps"], s["values"])
        for s in series
    }
    expected = _expected(base_ms)
    assert got == {
        **{("edge_value", point): sample for point, sample in expected.items()},
        **{
            ("edge_quality", point): (times, [0, 0, 0, 0]) for point, (times, _) in expected.items()
        },
    }


def test_readings_are_at_their_points_times() -> None:
    poll = _stamped_poll()
    assert [(r.point, r.ts_ns) for r in poll.readings()] == [
        ("temp", NOW_MS * MS + 900_000),
        ("lel", (NOW_MS - 2500) * MS + 123_456),
        ("pump_run", NOW_MS * MS + 400_000),
        ("counter", NOW_MS * MS - 1),
    ]
    plain = _plain_poll()
    assert {r.ts_ns for r in plain.readings()} == {plain.ts_ns}


def test_report_by_exception_keeps_the_points_times() -> None:
    """A poll thinned to its changed points keeps their own times, renumbered."""
    rule = PointRule.compile(ReportOptions(deadband=1.0, max_interval_s=60), interval_s=1.0)
    thinning = ReportFilter({"plc-1": {p.name: rule for p in POINTS}})
    assert thinning.select(_plain_poll()) is not None  # all go up the first time
    changed = Poll(
        "plc-1", NOW_MS * MS, POINTS, [61.0, 14.5, False, 18], {}, {1: (NOW_MS - 300) * MS}
    )
    thinned = thinning.select(changed)
    assert thinned is not None
    assert [p.name for p in thinned.points] == ["lel"]
    assert thinned.point_ts == {0: (NOW_MS - 300) * MS}
    doc = orjson.loads(_encoder().encode(thinned, seq=3))
    V1.validate(doc)
    assert doc["points"] == {"lel": _point(14.5, "%LEL", ts_ms=NOW_MS - 300)}

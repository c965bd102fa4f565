"""Sparkplug encoding and session counters, without a broker (pure logic)."""

from __future__ import annotations

from pathlib import Path

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.sparkplug import datatypes as dt
from edge_agent.sparkplug.payload import DeviceMetrics, decode, historical, stamp
from edge_agent.sparkplug.session import Session

POINTS = (PointSpec("t", "degC"), PointSpec("n"), PointSpec("on"))


def test_seq_wraps_after_255_and_nbirth_restarts_it(tmp_path: Path) -> None:
    session = Session(tmp_path / "bdseq")
    assert session.birth_seq() == 0  # tck-id-payloads-sequence-num-zero-nbirth
    seqs = [session.next_seq() for _ in range(300)]
    assert seqs[:3] == [1, 2, 3] and seqs[254:257] == [255, 0, 1]
    assert session.birth_seq() == 0 and session.next_seq() == 1


def test_bdseq_goes_up_per_connect_and_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "bdseq"
    first = Session(path)
    assert first.bd_seq == 0  # tck-id-topics-nbirth-bdseq-increment: starts at zero
    assert first.next_connect() == 1
    assert Session(path).bd_seq == 2  # a restart does not reuse a bdSeq
    path.write_text("255\n")
    assert Session(path).bd_seq == 0  # 255 -> 0
    path.write_text("junk\n")
    assert Session(path).bd_seq == 0


def test_data_body_stamped_and_replayed_as_history() -> None:
    metrics = DeviceMetrics(POINTS, [dt.DOUBLE, dt.INT16, dt.BOOLEAN])
    poll = Poll("d", 1_700_000_000_123_000_000, POINTS, [21.5, -3, True])
    body = metrics.data(poll)
    payload = decode(stamp(body, ts_ms=1_700_000_000_999, seq=255))
    assert (payload.timestamp, payload.seq) == (1_700_000_000_999, 255)
    assert [m.name for m in payload.metrics] == ["t", "n", "on"]
    assert payload.metrics[0].timestamp == 1_700_000_000_123
    assert payload.metrics[1].int_value == (-3) & 0xFFFF_FFFF  # two's complement, 32 bits
    assert not any(m.is_historical for m in payload.metrics)
    replayed = decode(stamp(historical(body), ts_ms=1, seq=0))
    assert all(m.is_historical for m in replayed.metrics)
    assert [m.double_value for m in replayed.metrics[:1]] == [21.5]


def test_quality_property_while_not_good_and_once_when_good_again() -> None:
    metrics = DeviceMetrics(POINTS, [dt.DOUBLE, dt.INT16, dt.BOOLEAN])

    def qualities(poll: Poll) -> list[int | None]:
        out: list[int | None] = []
        for m in decode(metrics.data(poll)).metrics:
            props = dict(zip(m.properties.keys, m.properties.values, strict=True))
            out.append(props["Quality"].int_value if "Quality" in props else None)
        return out

    bad = Poll("d", 1, POINTS, [None, 5, True], {0: (Quality.BAD, "exception 02")})
    assert qualities(bad) == [0, None, None]  # tck-id-payloads-propertyset-quality-value-*
    unsure = Poll("d", 2, POINTS, [1.0, 5, True], {0: (Quality.UNCERTAIN, "LastUsable")})
    assert qualities(unsure) == [500, None, None]
    good = Poll("d", 3, POINTS, [1.0, 5, True])
    assert qualities(good) == [192, None, None]
    assert qualities(good) == [None, None, None]


def test_a_value_that_does_not_fit_its_type_goes_up_null_and_bad() -> None:
    metrics = DeviceMetrics(POINTS, [dt.DOUBLE, dt.INT16, dt.BOOLEAN])
    payload = decode(metrics.data(Poll("d", 1, POINTS, ["n/a", 1, False])))
    first = payload.metrics[0]
    assert first.is_null and first.WhichOneof("value") is None
    assert first.properties.values[0].int_value == 0


def test_birth_carries_types_units_and_rebirth_metric() -> None:
    metrics = DeviceMetrics(POINTS, [dt.DOUBLE, dt.INT16, dt.BOOLEAN])
    birth = decode(metrics.birth(Poll("d", 5_000_000, POINTS, [2.0, 1, False]), ts_ms=9))
    by_name = {m.name: m for m in birth.metrics}
    assert [by_name[n].datatype for n in ("t", "n", "on")] == [dt.DOUBLE, dt.INT16, dt.BOOLEAN]
    assert list(by_name["t"].properties.keys) == ["engUnit"]
    assert by_name["Device Control/Rebirth"].boolean_value is False
    assert all(m.HasField("timestamp") for m in birth.metrics)

"""Gateways' messages -> real Mosquitto -> ingest -> influxdb-client -> real VictoriaMetrics.

Read back through VictoriaMetrics' export API (raw samples), so every assertion is about
what the store holds: values, tags and timestamps per point, one sample per reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.ingest.schema import DataMessage
from edge_agent.ingest.service import Ingest, IngestStopped
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.ingest_support import (
    Sent,
    make_messages,
    publish,
    running,
    unique_site,
    until,
    write_site,
)

pytestmark = pytest.mark.timeout(60)


def _by_metric(series: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(metric name, device, point) -> series."""
    return {
        (s["metric"]["__name__"], s["metric"]["device"], s["metric"]["point"]): s for s in series
    }


def _voltage(site: str) -> str:
    return f'{{site="{site}",point="voltage_a",__name__="edge_value"}}'


def _expected_values(sent: list[Sent], index: int) -> list[float]:
    return [float(m.values[index]) for m in sorted(sent, key=lambda m: m.ts_ms)]


async def test_every_published_value_arrives_with_its_tags_and_timestamps(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
    )
    live = make_messages(unique_prefix, site, seqs=range(1, 21))
    # Replayed data from a day ago, from a device the config does not list.
    old = make_messages(
        unique_prefix,
        site,
        device="meter-2",
        seqs=range(21, 26),
        ts0_ms=live[0].ts_ms - 86_400_000,
        historical=True,
    )
    ingest = Ingest(loaded, worker="e2e")
    async with running(ingest):
        await publish(mosquitto.url, live + old)
        await until(lambda: ingest.stats.stored_messages == 25, "25 messages stored")
        await until(lambda: ingest.client.stats.acked == 25, "25 acknowledgements")

    series = _by_metric(
        victoria.wait_for_samples(f'{{site="{site}"}}', count=25 * 6 + 25 * 4 + 25 * 2)
    )
    # value: float, int, bool, uncertain; never the string (skipped) nor the bad point.
    assert sorted(k for k in series if k[0] == "edge_value") == [
        ("edge_value", device, point)
        for device in ("meter-1", "meter-2")
        for point in ("current_a", "energy_import", "relay", "voltage_a")
    ]
    for device, sent in (("meter-1", live), ("meter-2", old)):
        times = [m.ts_ms for m in sent]
        voltage = series[("edge_value", device, "voltage_a")]
        assert voltage["timestamps"] == times
        assert voltage["values"] == _expected_values(sent, 0)
        tags = {k: v for k, v in voltage["metric"].items() if k != "__name__"}
        expected_tags = {
            "site": site,
            "gateway": "gw-01",
            "device": device,
            "point": "voltage_a",
            "unit": "V",
        }
        if device == "meter-1":  # the config lists meter-1 with its profile
            expected_tags["profile"] = "chint-dtsu666"
        assert tags == expected_tags
        assert series[("edge_value", device, "energy_import")]["values"] == _expected_values(
            sent, 1
        )
        assert series[("edge_value", device, "relay")]["values"] == _expected_values(sent, 2)
        assert series[("edge_value", device, "current_a")]["values"] == _expected_values(sent, 5)
        assert "unit" not in series[("edge_value", device, "relay")]["metric"]
        # quality on every point: good 0, uncertain 1, bad 2
        for point, quality in (
            ("voltage_a", 0),
            ("state", 0),
            ("pf_total", 2),
            ("current_a", 1),
        ):
            q = series[("edge_quality", device, point)]
            assert q["timestamps"] == times
            assert q["values"] == [quality] * len(sent)
        # reason class only where quality is not good: exception 02 -> 102, other -> 99
        assert series[("edge_reason", device, "pf_total")]["values"] == [102] * len(sent)
        assert series[("edge_reason", device, "current_a")]["values"] == [99] * len(sent)
        assert ("edge_reason", device, "voltage_a") not in series


async def test_the_same_reading_twice_is_one_point(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
    )
    first = make_messages(unique_prefix, site, seqs=range(1, 11))
    # The gateway replays them after an outage: same readings, marked historical.
    replay = make_messages(
        unique_prefix, site, seqs=range(1, 11), ts0_ms=first[0].ts_ms - 1000, historical=True
    )
    assert [m.ts_ms for m in replay] == [m.ts_ms for m in first]
    # Written after the replay: once it is visible, so is everything written before it.
    sentinel = make_messages(unique_prefix, site, seqs=[11], ts0_ms=first[0].ts_ms - 1000)
    ingest = Ingest(loaded, worker="dup")
    async with running(ingest):
        await publish(mosquitto.url, first)
        await until(lambda: ingest.stats.stored_messages == 10, "first 10 stored")
        await publish(mosquitto.url, replay)
        await until(lambda: ingest.stats.stored_messages == 20, "replay stored")
        await publish(mosquitto.url, sentinel)
        await until(lambda: ingest.stats.stored_messages == 21, "sentinel stored")
    voltage = victoria.wait_for_samples(_voltage(site), 11)[0]
    assert voltage["timestamps"] == [m.ts_ms for m in first + sentinel]
    assert voltage["values"] == _expected_values(first + sentinel, 0)


async def test_store_outage_holds_acks_and_writes_the_backlog(
    tmp_path: Path, mosquitto_fresh: Mosquitto, victoria_fresh: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto_fresh.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_fresh.url,
        ingest="{max_inflight: 10, backoff_max_s: 0.5, flush_interval_s: 0.05}",
    )
    messages = make_messages(unique_prefix, site, seqs=range(1, 41))
    ingest = Ingest(loaded, worker="outage")
    async with running(ingest):
        await publish(mosquitto_fresh.url, messages[:10])
        await until(lambda: ingest.client.stats.acked == 10, "first 10 acknowledged")

        victoria_fresh.stop()
        await publish(mosquitto_fresh.url, messages[10:])
        await until(
            lambda: ingest.stats.write_failures >= 2 and ingest.stats.unacked == 10,
            "the window of 10 held unacknowledged while the store is down",
        )
        assert ingest.client.stats.acked == 10  # nothing acknowledged during the outage
        assert ingest.client.stats.received == 20  # the broker keeps the other 20
        assert ingest.stats.unacked == 10
        assert ingest.stats.store_up is False

        victoria_fresh.start()
        await until(lambda: ingest.client.stats.acked == 40, "the backlog written", timeout_s=20)
        assert ingest.stats.store_up is True
    voltage = victoria_fresh.wait_for_samples(_voltage(site), 40)
    assert voltage[0]["timestamps"] == [m.ts_ms for m in messages]


async def test_broker_restart_with_unwritten_messages_loses_nothing(
    tmp_path: Path, mosquitto_fresh: Mosquitto, victoria_fresh: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto_fresh.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_fresh.url,
        ingest="{backoff_max_s: 0.5, flush_interval_s: 0.05}",
    )
    messages = make_messages(unique_prefix, site, seqs=range(1, 31))
    ingest = Ingest(loaded, worker="restart")
    async with running(ingest):
        await publish(mosquitto_fresh.url, messages[:10])
        await until(lambda: ingest.client.stats.acked == 10, "first 10 acknowledged")
        # Received but not written (store down), then the broker goes away and comes back.
        victoria_fresh.stop()
        await publish(mosquitto_fresh.url, messages[10:20])
        await until(lambda: ingest.stats.unacked == 10, "10 held")
        mosquitto_fresh.restart()
        victoria_fresh.start()
        await until(lambda: ingest.client.stats.connects >= 2, "reconnected", timeout_s=15)
        await publish(mosquitto_fresh.url, messages[20:])
        # The held ones were written on the old connection (their acks are stale) and the
        # broker redelivers them: written again, same series and timestamps.
        await until(
            lambda: ingest.stats.unacked == 0 and ingest.client.stats.acked >= 30,
            "every message acknowledged",
            timeout_s=20,
        )
        assert ingest.client.stats.sessions_resumed >= 1
        assert ingest.client.stats.stale_acks == 10  # written, but on the lost connection
        assert ingest.stats.received == 40  # ... so the broker redelivered those 10
    voltage = victoria_fresh.wait_for_samples(_voltage(site), 30)
    assert voltage[0]["timestamps"] == [m.ts_ms for m in messages]
    assert voltage[0]["values"] == _expected_values(messages, 0)


async def test_two_workers_share_the_load_without_duplicates_or_gaps(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
        ingest=f"{{group: g-{site}, shared: true}}",
    )
    messages = [
        *make_messages(unique_prefix, site, gateway="gw-01", seqs=range(1, 101)),
        *make_messages(unique_prefix, site, gateway="gw-02", seqs=range(1, 101)),
    ]
    written: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}

    def recorder(worker: str) -> Callable[[Sequence[DataMessage]], None]:
        def record(batch: Sequence[DataMessage]) -> None:
            written[worker].extend((m.source.gateway, m.seq) for m in batch)

        return record

    a = Ingest(loaded, worker="a", on_written=recorder("a"))
    b = Ingest(loaded, worker="b", on_written=recorder("b"))
    assert a.client.topic_filters == (
        f"$share/g-{site}/{unique_prefix}/+/+/+/data",
        f"$share/g-{site}/{unique_prefix}/+/+/energy",
        f"$share/g-{site}/{unique_prefix}/+/+/alarms",
        f"$share/g-{site}/{unique_prefix}/+/+/+/cmd/audit",
    )
    async with running(a), running(b):
        await publish(mosquitto.url, messages)
        await until(lambda: len(written["a"]) + len(written["b"]) >= 200, "200 messages written")
        await until(lambda: a.stats.unacked == 0 and b.stats.unacked == 0, "all acknowledged")
    both = written["a"] + written["b"]
    assert len(both) == 200  # no duplicates in steady state ...
    assert sorted(both) == [(gw, seq) for gw in ("gw-01", "gw-02") for seq in range(1, 101)]
    assert set(written["a"]).isdisjoint(written["b"])
    assert len(written["a"]) >= 50 and len(written["b"]) >= 50  # ... and both did work
    series = victoria.wait_for_samples(_voltage(site), 200)
    assert sorted(len(s["values"]) for s in series) == [100, 100]


async def test_bad_messages_go_to_the_dead_letter_topic(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria: Victoria,
    unique_prefix: str,
    subscribe: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
    )
    letters: Subscriber = subscribe(
        mosquitto.host, mosquitto.port, f"{unique_prefix}/+/+/deadletter"
    )
    good = make_messages(unique_prefix, site, seqs=[1, 2])
    topic = good[0].topic
    doc = orjson.loads(good[0].payload)

    def variant(**changes: Any) -> bytes:
        return orjson.dumps({**doc, **changes})

    bad_point = {"voltage_a": {"value": None, "unit": "V", "quality": "good"}}
    bad = [
        (topic, b"{not json"),
        (topic, b"{not json either"),  # same source, same kind: counted, not logged again
        (topic, variant(schema_version=2)),
        (topic, variant(ts_ms=5)),
        (topic, variant(ts_ms=doc["ts_ms"] + 10 * 86_400_000)),
        (topic, variant(points=bad_point)),
        (topic.replace("meter-1", "meter-9"), good[1].payload),  # topic and body disagree
        (topic, b"\xff\xfe"),
    ]
    ingest = Ingest(loaded, worker="dl")
    with caplog.at_level(logging.WARNING, logger="edge_agent.ingest.deadletter"):
        async with running(ingest):
            await publish(mosquitto.url, [(good[0].topic, good[0].payload), *bad])
            await publish(mosquitto.url, [good[1]])  # the service goes on after them
            await until(lambda: ingest.stats.stored_messages == 2, "both good ones stored")
            await until(lambda: ingest.stats.deadlettered == 8, "8 dead letters acknowledged")
            await until(lambda: ingest.stats.unacked == 0, "everything acknowledged")
    received = await letters.wait_for(8)
    envelopes = [orjson.loads(m.payload) for m in received]
    assert {m.topic for m in received} == {f"{unique_prefix}/{site}/gw-01/deadletter"}
    assert [e["kind"] for e in envelopes] == [
        "malformed_json",
        "malformed_json",
        "schema_version",
        "bad_timestamp",
        "bad_timestamp",
        "bad_value",
        "topic_mismatch",
        "malformed_json",
    ]
    assert envelopes[0]["payload"] == "{not json"
    assert envelopes[0]["topic"] == topic
    assert envelopes[-1]["payload_base64"] == "//4="
    assert dict(ingest.rejects.counts) == {
        "malformed_json": 3,
        "schema_version": 1,
        "bad_timestamp": 2,
        "bad_value": 1,
        "topic_mismatch": 1,
    }
    logged = [r.getMessage() for r in caplog.records if "rejected a message" in r.getMessage()]
    # once per source and change of kind: malformed, schema, timestamp, value, malformed
    # on meter-1, and the mismatch on meter-9
    assert len(logged) == 6
    series = victoria.wait_for_samples(_voltage(site), 2)
    assert series[0]["timestamps"] == [m.ts_ms for m in good]


async def test_an_auth_error_stops_the_worker_and_the_broker_keeps_the_message(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    locked = Victoria(
        tmp_path / "locked", extra_args=("-httpAuth.username=edge", "-httpAuth.password=x")
    )
    locked.start()
    try:
        site = unique_site()
        refused = write_site(
            tmp_path / "refused.yaml",
            broker_url=mosquitto.url,
            prefix=unique_prefix,
            site=site,
            influx_url=locked.url,
        )
        messages = make_messages(unique_prefix, site, seqs=[1])
        ingest = Ingest(refused, worker="auth")
        task = asyncio.create_task(ingest.run())
        try:
            assert await ingest.wait_ready(10)
            await publish(mosquitto.url, messages)
            with pytest.raises(IngestStopped, match="HTTP 401"):
                await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
        assert ingest.client.stats.acked == 0
    finally:
        locked.stop()
    # Same worker (client id), working store: the broker kept the message for its session.
    working = write_site(
        tmp_path / "working.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
    )
    again = Ingest(working, worker="auth")
    async with running(again):
        await until(lambda: again.client.stats.acked == 1, "the kept message written")
    series = victoria.wait_for_samples(_voltage(site), 1)
    assert series[0]["timestamps"] == [messages[0].ts_ms]

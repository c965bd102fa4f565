"""Alarm transitions -> real Mosquitto -> ingest -> the embedded store and VictoriaMetrics.

Transitions are shaped as README "Safety alarms" documents them (the OPC UA end-to-end test
in test_alarm_opcua.py sends the alarm stage's own). Each store must hold every transition
once (a replay leaves one row / one sample), with the free text only in SQLite; bad
transitions are dead letters; `alarms/active` and `alarms/cmd` are not ingested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.ingest.alarms import alarm_line, decode_alarm, parse_alarm_topic
from edge_agent.ingest.embedded_store import read_alarms
from edge_agent.ingest.schema import Rejected
from edge_agent.ingest.service import Ingest, store_path
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.ingest_support import publish, running, unique_site, until, write_site

pytestmark = pytest.mark.timeout(60)

ALARM = "boiler/pressure/high"
T0 = time.time_ns() // 1_000_000 - 3_600_000  # in the past: VictoriaMetrics exports up to now


def transition(seq: int, ts_ms: int, event: str, previous: str, state: str, **extra: Any) -> bytes:
    """One transition message as the alarm stage publishes it."""
    active = state in ("active_unack", "active_ack")
    doc: dict[str, Any] = {
        "gateway": "gw-01",
        "seq": seq,
        "ts_ms": ts_ms,
        "historical": False,
        "schema_version": 1,
        "event": event,
        "previous": previous,
        "id": ALARM,
        "device": "boiler",
        "point": "pressure",
        "alarm": "high",
        "kind": "high",
        "priority": 3,
        "state": state,
        "active": active,
        "acked": state in ("active_ack", "normal"),
        "latched": False,
        "shelved_until_ms": None,
        "out_of_service": False,
        "since_ms": ts_ms,
        "transition": seq,
        "value": 85.2 if active else 77.5,
        "unit": "bar",
        "message": f"pressure high: {'85.2' if active else '77.5'} bar (limit 80 bar)",
        "quality": "good",
        "chattering": False,
        "limit": 80.0,
    }
    doc.update(extra)
    return orjson.dumps(doc)


def story() -> list[bytes]:
    """Raise, acknowledge (with operator and comment), clear."""
    return [
        transition(1, T0, "raise", "normal", "active_unack"),
        transition(
            2,
            T0 + 1500,
            "ack",
            "active_unack",
            "active_ack",
            operator="li.wei",
            comment="valve checked, 压力正常",
        ),
        transition(3, T0 + 4000, "clear", "active_ack", "normal"),
    ]


def test_a_transition_is_one_line_of_bounded_tags_and_numeric_fields() -> None:
    source = parse_alarm_topic("f/plant-a/gw-01/alarms", "f")
    assert source is not None
    assert parse_alarm_topic("f/plant-a/gw-01/alarms/active", "f") is None
    assert parse_alarm_topic("f/plant-a/gw-01/alarms/cmd", "f") is None
    assert parse_alarm_topic("f/plant-a/gw-01/boiler/data", "f") is None
    payload = story()[1]
    message = decode_alarm(source, payload, now_ms=T0 + 10_000, max_future_ms=0)
    assert (message.source.device, message.operator, message.comment) == (
        "boiler",
        "li.wei",
        "valve checked, 压力正常",
    )
    assert alarm_line(message) == (
        "edge_alarm,alarm=high,device=boiler,gateway=gw-01,id=boiler/pressure/high,"
        "point=pressure,priority=3,site=plant-a "
        f"state=2i,event=3i,active=1i,acked=1i,transition=2i,value=85.2 {T0 + 1500}"
    )
    # A device alarm has no point tag and no value.
    device_alarm = transition(
        4,
        T0,
        "raise",
        "normal",
        "active_unack",
        id="boiler/comm_loss",
        point=None,
        alarm="comm_loss",
        kind="comm_loss",
        priority=2,
        value=None,
        reason="timeout",
    )
    line = alarm_line(decode_alarm(source, device_alarm, now_ms=T0, max_future_ms=0))
    assert line == (
        "edge_alarm,alarm=comm_loss,device=boiler,gateway=gw-01,id=boiler/comm_loss,"
        f"priority=2,site=plant-a state=1i,event=1i,active=1i,acked=0i,transition=4i {T0}"
    )


BAD: list[tuple[bytes, str, str]] = [
    (b"{not json", "malformed_json", ""),
    (transition(9, T0, "raise", "normal", "active_unack", gateway="gw-02"), "topic_mismatch", ""),
    (transition(9, T0, "raise", "normal", "bogus"), "bad_field", "state"),
    (transition(9, T0, "explode", "normal", "active_unack"), "bad_field", "event"),
    (transition(9, T0, "raise", "normal", "active_unack", priority=7), "bad_field", "priority"),
    (transition(9, T0, "raise", "normal", "active_unack", id="pump/x/high"), "bad_field", "id"),
    (transition(9, 12, "raise", "normal", "active_unack"), "bad_timestamp", ""),
    (transition(9, T0, "raise", "normal", "active_unack", schema_version=2), "schema_version", ""),
    (transition(9, T0, "raise", "normal", "active_unack", value={"x": 1}), "bad_value", ""),
]


@pytest.mark.parametrize(("payload", "kind", "word"), BAD)
def test_a_bad_transition_is_rejected_naming_the_problem(
    payload: bytes, kind: str, word: str
) -> None:
    source = parse_alarm_topic("f/plant-a/gw-01/alarms", "f")
    assert source is not None
    with pytest.raises(Rejected) as caught:
        decode_alarm(source, payload, now_ms=T0 + 10_000, max_future_ms=0)
    assert caught.value.kind == kind
    assert word in caught.value.detail


async def test_transitions_land_in_sqlite_once_with_their_text(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{flush_interval_s: 0.05}",
    )
    base = f"{unique_prefix}/{site}/gw-01"
    letters = subscribe(mosquitto.host, mosquitto.port, f"{base}/deadletter")
    ingest = Ingest(loaded, worker="alarms")
    assert f"{unique_prefix}/+/+/alarms" in ingest.client.topic_filters
    topic = f"{base}/alarms"
    async with running(ingest):
        await publish(mosquitto.url, [(topic, p) for p in story()])
        await until(lambda: ingest.stats.stored_alarms == 3, "3 transitions stored")
        # Neither the retained active set nor commands are transitions: not received at all.
        await publish(
            mosquitto.url,
            [(f"{base}/alarms/active", b'{"alarms": []}'), (f"{base}/alarms/cmd", b"{}")],
        )
        # The same transitions again (a redelivery or a replay), then bad ones.
        await publish(mosquitto.url, [(topic, p) for p in story()])
        await publish(mosquitto.url, [(topic, p) for p, _, _ in BAD])
        await until(lambda: ingest.stats.stored_alarms == 6, "the replay stored")
        await until(lambda: ingest.stats.deadlettered == len(BAD), "the dead letters")
        await until(lambda: ingest.client.stats.acked == 6 + len(BAD), "everything acknowledged")
        assert ingest.stats.received == 6 + len(BAD)

    assert ingest.rejects.counts == {
        "malformed_json": 1,
        "topic_mismatch": 1,
        "bad_field": 4,
        "bad_timestamp": 1,
        "schema_version": 1,
        "bad_value": 1,
    }
    await letters.wait_for(len(BAD))
    assert [orjson.loads(m.payload)["kind"] for m in letters.messages] == [k for _, k, _ in BAD]

    rows = read_alarms(store_path(loaded), site=site)
    assert [(r["seq"], r["event"], r["previous"], r["state"]) for r in rows] == [
        (1, "raise", "normal", "active_unack"),
        (2, "ack", "active_unack", "active_ack"),
        (3, "clear", "active_ack", "normal"),
    ]
    assert [r["ts_ms"] for r in rows] == [T0, T0 + 1500, T0 + 4000]
    ack = rows[1]
    assert {k: ack[k] for k in ("operator", "comment", "message", "value", "unit")} == {
        "operator": "li.wei",
        "comment": "valve checked, 压力正常",
        "message": "pressure high: 85.2 bar (limit 80 bar)",
        "value": 85.2,
        "unit": "bar",
    }
    assert {
        (r["site"], r["gateway"], r["device"], r["point"], r["alarm_id"], r["priority"])
        for r in rows
    } == {(site, "gw-01", "boiler", "pressure", ALARM, 3)}
    assert rows[0]["operator"] is None and rows[0]["active"] == 1 and rows[0]["acked"] == 0
    # The current state of each alarm is its latest transition.
    current = read_alarms(store_path(loaded), site=site, current=True)
    assert [(r["alarm_id"], r["state"], r["seq"]) for r in current] == [(ALARM, "normal", 3)]


async def test_transitions_reach_victoriametrics_as_numeric_series_without_text(
    tmp_path: Path, mosquitto: Mosquitto, victoria: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria.url,
        ingest="{flush_interval_s: 0.05}",
    )
    topic = f"{unique_prefix}/{site}/gw-01/alarms"
    ingest = Ingest(loaded, worker="alarms-vm")
    async with running(ingest):
        await publish(mosquitto.url, [(topic, p) for p in story()])
        await until(lambda: ingest.stats.stored_alarms == 3, "3 transitions stored")
        await publish(mosquitto.url, [(topic, p) for p in story()])  # replayed: no new samples
        await until(lambda: ingest.stats.stored_alarms == 6, "the replay stored")
        await until(lambda: ingest.client.stats.acked == 6, "6 acknowledgements")

    match = f'{{site="{site}",__name__=~"edge_alarm_.*"}}'
    series = {s["metric"]["__name__"]: s for s in victoria.wait_for_samples(match, count=3 * 6)}
    assert sorted(series) == [
        "edge_alarm_acked",
        "edge_alarm_active",
        "edge_alarm_event",
        "edge_alarm_state",
        "edge_alarm_transition",
        "edge_alarm_value",
    ]
    state = series["edge_alarm_state"]
    assert state["timestamps"] == [T0, T0 + 1500, T0 + 4000]  # one sample per transition
    assert state["values"] == [1, 2, 0]  # active_unack, active_ack, normal
    assert series["edge_alarm_event"]["values"] == [1, 3, 2]  # raise, ack, clear
    assert series["edge_alarm_acked"]["values"] == [0, 1, 1]
    assert series["edge_alarm_value"]["values"] == [85.2, 85.2, 77.5]
    # Bounded tags only: no message, operator or comment (free text) became a label.
    assert {k: v for k, v in state["metric"].items() if k != "__name__"} == {
        "site": site,
        "gateway": "gw-01",
        "device": "boiler",
        "point": "pressure",
        "id": ALARM,
        "alarm": "high",
        "priority": "3",
    }

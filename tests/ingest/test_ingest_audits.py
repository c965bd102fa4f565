"""Write audits reach the store like readings: validated, bounded, stored once, replays too.

The messages are the command path's own shape (checked against the command contract's
JSON Schema, `#/$defs/audit`); the ingest runs against a real Mosquitto and writes the
embedded SQLite store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from edge_agent.ingest.audits import (
    WHO_OTHER,
    AuditMessage,
    WhoTags,
    audit_line,
    decode_audit,
    parse_audit_topic,
)
from edge_agent.ingest.embedded_store import EmbeddedStore, read_audits
from edge_agent.ingest.schema import Rejected, Source
from edge_agent.ingest.series import KnownSeries
from edge_agent.ingest.service import Ingest, store_path, topic_filters
from edge_agent.ops.metrics import ingest_registry
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.ingest_support import publish, running, unique_site, until, write_site

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
AUDIT = jsonschema.Draft202012Validator(
    {
        **orjson.loads((ROOT / "edge_agent/schemas/command-v1.schema.json").read_bytes()),
        "$ref": "#/$defs/audit",
    }
)
NOW_MS = 1_764_154_930_000
SOURCE = Source("f/plant-a/gw-01/plc-1/cmd/audit", "plant-a", "gw-01", "plc-1")


def request_doc(seq: int = 7, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "gateway": "gw-01",
        "seq": seq,
        "ts_ms": NOW_MS - 100,
        "historical": False,
        "event": "request",
        "device": "plc-1",
        "id": "c-1",
        "point": "flow_setpoint",
        "value": 42.5,
        "by": "li wei",
        "received_ms": NOW_MS - 100,
    }
    doc.update(changes)
    AUDIT.validate(doc)
    return doc


def result_doc(seq: int = 8, **changes: Any) -> dict[str, Any]:
    doc = request_doc(
        seq,
        ts_ms=NOW_MS - 40,
        event="result",
        result="done",
        reason=None,
        code=None,
        old_value=12.5,
        new_value=42.5,
        executed_ms=NOW_MS - 60,
    )
    doc.update(changes)
    AUDIT.validate(doc)
    return doc


def decoded(doc: dict[str, Any], source: Source = SOURCE) -> AuditMessage:
    return decode_audit(source, orjson.dumps(doc), now_ms=NOW_MS, max_future_ms=60_000)


def test_the_audit_topic_is_subscribed_and_parsed() -> None:
    assert "f/+/+/+/cmd/audit" in topic_filters("f", None)
    assert "f/s1/+/+/cmd/audit" in topic_filters("f", ["s1"])
    assert parse_audit_topic("f/plant-a/gw-01/plc-1/cmd/audit", "f") == SOURCE
    for other in (
        "f/plant-a/gw-01/plc-1/cmd",
        "f/plant-a/gw-01/plc-1/cmd/reply",
        "g/a/b/c/cmd/audit",
    ):
        assert parse_audit_topic(other, "f") is None


def test_a_result_becomes_one_line_with_bounded_tags_and_numeric_fields() -> None:
    result = decoded(result_doc())
    assert (result.event, result.result, result.old_value, result.new_value) == (
        "result",
        "done",
        12.5,
        42.5,
    )
    line = audit_line(replace(result, point_tag=True, who_tag="li wei"))
    assert line == (
        "edge_command,device=plc-1,event=result,gateway=gw-01,point=flow_setpoint,result=done,"
        r"site=plant-a,who=li\ wei "
        f"received_ms={NOW_MS - 100}i,value=42.5,old_value=12.5,new_value=42.5,"
        f"executed_ms={NOW_MS - 60}i {NOW_MS - 40}"
    )
    rejected = decoded(
        result_doc(
            value=True,
            point="no such point",
            result="rejected",
            code="unknown_point",
            reason="plc-1 has no point 'no such point'",
            old_value=None,
            new_value=None,
            executed_ms=None,
            by=None,
        )
    )
    # A made-up point name is no tag; no `by`, no who; booleans are 0/1.
    assert audit_line(rejected, "site") == (
        "site_command,code=unknown_point,device=plc-1,event=result,gateway=gw-01,"
        f"result=rejected,site=plant-a received_ms={NOW_MS - 100}i,value=1.0 {NOW_MS - 40}"
    )
    request = decoded(request_doc(value="auto"))
    assert audit_line(request) == (
        "edge_command,device=plc-1,event=request,gateway=gw-01,site=plant-a "
        f"received_ms={NOW_MS - 100}i {NOW_MS - 100}"
    )


@pytest.mark.parametrize(
    ("change", "kind", "detail"),
    [
        (lambda d: d.update(device="plc-2"), "topic_mismatch", "message says device"),
        (lambda d: d.update(gateway="gw-02"), "topic_mismatch", "message says gateway"),
        (lambda d: d.update(event="approve"), "bad_field", "event"),
        (lambda d: d.update(result="maybe"), "bad_field", "result"),
        (lambda d: d.update(code="because"), "bad_field", "code"),
        (lambda d: d.update(seq=0), "bad_field", "seq"),
        (lambda d: d.update(ts_ms=NOW_MS + 3_600_000), "bad_timestamp", "in the future"),
        (lambda d: d.update(received_ms=1000), "bad_timestamp", "before 2000"),
        (lambda d: d.update(reason="x" * 2001), "bad_field", "reason"),
        (lambda d: d.update(by="a\nb"), "bad_field", "by"),
        (lambda d: d.update(new_value=[1]), "bad_value", "new_value"),
        (lambda d: d.update(historical="no"), "bad_field", "historical"),
        (lambda d: d.pop("point"), "bad_field", "point"),
    ],
)
def test_a_bad_audit_message_is_rejected_naming_the_problem(
    change: Callable[[dict[str, Any]], None], kind: str, detail: str
) -> None:
    doc = result_doc()
    change(doc)
    with pytest.raises(Rejected) as caught:
        decoded(doc)
    assert caught.value.kind == kind
    assert detail in caught.value.detail


def test_who_tags_are_bounded() -> None:
    tags = WhoTags(limit=2)
    assert [tags.tag(b) for b in ("a", "b", "a", "c", None, "d", "b")] == [
        "a",
        "b",
        "a",
        WHO_OTHER,
        None,
        WHO_OTHER,
        "b",
    ]
    assert tags.folded == 2


def test_only_known_devices_get_audit_series_and_only_their_points_are_tags(
    tmp_path: Path,
) -> None:
    loaded = write_site(
        tmp_path / "site.yaml", broker_url="mqtt://127.0.0.1:1", prefix="f", site="s1", allow=()
    )
    series = KnownSeries.from_config(loaded)
    meter = Source("t", "s1", "gw-01", "meter-1")
    assert series.command(meter, "voltage_a") is True
    assert series.command(meter, "made_up") is False
    assert series.command(Source("t", "s1", "gw-01", "meter-9"), "voltage_a") is None
    assert series.command(Source("t", "s2", "gw-01", "meter-1"), "voltage_a") is None
    allowing = KnownSeries([], ["s2/gw-01/*/*"])
    assert allowing.command(Source("t", "s2", "gw-01", "pump"), "run") is True


def test_the_embedded_store_keeps_every_field_once(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "edge.sqlite")
    request = decoded(request_doc())
    result = decoded(result_doc())
    failed = decoded(
        result_doc(9, id="c-2", result="failed", reason="timeout", new_value=None, value="auto")
    )
    assert store.write_sync([], (), [request, result, failed]) == 3
    # Redelivered, and replayed after an outage: the same rows, now flagged historical.
    replayed = decoded(result_doc(historical=True))
    assert store.write_sync([], (), [result, replayed]) == 2
    store.close_sync()
    rows = read_audits(tmp_path / "edge.sqlite")
    assert [(r["seq"], r["event"], r["request_id"], r["result"]) for r in rows] == [
        (7, "request", "c-1", None),
        (8, "result", "c-1", "done"),
        (9, "result", "c-2", "failed"),
    ]
    done = rows[1]
    assert (done["value"], done["old_value"], done["new_value"]) == (42.5, 12.5, 42.5)
    assert (done["who"], done["point"], done["device"], done["historical"]) == (
        "li wei",
        "flow_setpoint",
        "plc-1",
        1,
    )
    assert (done["received_ms"], done["executed_ms"], done["ts_ms"]) == (
        NOW_MS - 100,
        NOW_MS - 60,
        NOW_MS - 40,
    )
    assert (rows[2]["value"], rows[2]["text"], rows[2]["reason"]) == (None, "auto", "timeout")


async def test_the_ingest_stores_audits_and_dead_letters_the_bad_ones(
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
        ingest="{store: edge.sqlite, flush_interval_s: 0.05}",
        allow=(),
    )
    base = f"{unique_prefix}/{site}/gw-01"
    letters = subscribe(mosquitto.host, mosquitto.port, f"{base}/deadletter")
    now_ms = NOW_MS  # within max_future_s of the real clock is all the ingest asks
    good = [
        request_doc(1, device="meter-1", point="voltage_a", ts_ms=now_ms, received_ms=now_ms),
        result_doc(2, device="meter-1", point="voltage_a", ts_ms=now_ms + 5, received_ms=now_ms),
        result_doc(2, device="meter-1", point="voltage_a", ts_ms=now_ms + 5, received_ms=now_ms)
        | {"historical": True},  # the same one replayed
    ]
    bad = [
        (f"{base}/meter-9/cmd/audit", orjson.dumps(request_doc(3, device="meter-9"))),
        (f"{base}/meter-1/cmd/audit", b"{not json"),
    ]
    ingest = Ingest(loaded, worker="audits")
    async with running(ingest):
        await publish(
            mosquitto.url,
            [(f"{base}/meter-1/cmd/audit", orjson.dumps(doc)) for doc in good] + bad,
        )
        await until(lambda: ingest.stats.stored_audits == 3, "3 audits stored")
        await until(lambda: ingest.client.stats.acked == 5, "5 acknowledged")
        await until(lambda: len(letters.messages) == 2, "2 dead letters")
    assert sorted(orjson.loads(m.payload)["kind"] for m in letters.messages) == [
        "malformed_json",
        "not_configured",
    ]
    registry = ingest_registry(ingest)
    assert registry.get_sample_value("edge_ingest_stored_audits_total") == 3.0
    assert registry.get_sample_value("edge_ingest_audit_who_folded_total") == 0.0
    rows = read_audits(store_path(loaded))
    assert [(r["seq"], r["event"], r["point"], r["historical"]) for r in rows] == [
        (1, "request", "voltage_a", 0),
        (2, "result", "voltage_a", 1),
    ]

"""Hostile alarm commands: strictly typed, bounded, and a flood costs a few log lines.

The unit tests drive the stage on a virtual clock (looptime); the flood goes through a
real Mosquitto into a running agent and is read back from its /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.alarms.commands import MAX_COMMAND_BYTES, REFUSAL_REASONS, REQUEST_ID_MAX
from edge_agent.alarms.stage import REFUSED_REPLY_BACKLOG, AlarmStage
from edge_agent.config.site import load_config
from edge_agent.ops.http_server import serving_http
from edge_agent.runtime.agent import Agent
from tests.alarm_support import StageBench, settle, site_yaml
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.ingest_support import publish

HIGH = "boiler/pressure/high"
CHUNK = 490
BOILER = """\
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:1
    interval_s: 1.0
    points:
      - name: pressure
        address: 0
        type: float32
        unit: bar
        alarms: [{kind: high, limit: 80, deadband: 2}]
"""


def _refusal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge_agent.alarms.stage"]


@pytest.mark.looptime
async def test_values_are_strictly_typed_and_fields_bounded(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    stage = bench.start()
    bench.poll("boiler", {"pressure": 85.0})
    shelve = {"cmd": "shelve", "id": HIGH, "comment": "swap"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**shelve, "duration_s": True}, "bad_field", "duration_s: a number of seconds"),
        ({**shelve, "duration_s": "10"}, "bad_field", "duration_s: a number of seconds"),
        ({**shelve, "duration_s": 1e-300}, "bad_field", "greater than or equal to 1"),
        ({**shelve, "duration_s": 0.5}, "bad_field", "greater than or equal to 1"),
        ({"cmd": "ack", "id": HIGH, "operator": 7}, "bad_field", "operator: Input should be"),
        ({"cmd": "ack", "id": 1}, "bad_field", "id: Input should be a valid string"),
        ({"cmd": "ack", "id": HIGH, "operator": "li\nwei"}, "bad_field", "must be printable"),
        ({"cmd": "ack", "id": HIGH, "comment": "c" * 501}, "too_long", "comment: String"),
        ({"cmd": "ack", "id": HIGH, "x" * 3_000: 1}, "bad_field", "... (3,000 characters)"),
    ]
    for doc, reason, error in cases:
        before = stage.refusals.counts[reason]
        reply = bench.command(**doc)
        assert reply["ok"] is False and error in reply["error"], (doc, reply)
        assert stage.refusals.counts[reason] == before + 1, (doc, reason)
        assert len(reply["error"]) < 120
    assert bench.events(HIGH) == [("raise", "active_unack")]  # nothing applied

    # An overlong request_id is refused, echoed only as its first 100 characters.
    reply = bench.command(cmd="ack", id=HIGH, request_id="r" * 3_000)
    assert reply["ok"] is False and reply["request_id"] == "r" * REQUEST_ID_MAX
    assert reply["error"] == "request_id: String should have at most 100 characters"
    # A payload over the limit is refused unread: nothing of it comes back.
    big = orjson.dumps({"cmd": "ack", "id": HIGH, "operator": "o", "request_id": "r" * 5_000_000})
    reply = stage.on_command("t/cmd", big)
    assert reply == {
        "request_id": None,
        "ok": False,
        "error": f"a command of {len(big):,} bytes is over the limit of {MAX_COMMAND_BYTES}",
    }
    # Integers are numbers: a well-formed shelve still applies.
    reply = bench.command(**shelve, duration_s=60)
    assert reply["ok"] is True and reply["alarm"]["state"] == "shelved"
    expected = Counter(reason for _, reason, _ in cases) + Counter(too_long=1, too_large=1)
    assert stage.refusals.counts == expected
    assert stage.counters.refused == sum(expected.values())
    bench.close()


@pytest.mark.looptime
async def test_a_flood_of_refusals_logs_the_first_and_one_summary_per_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.alarms.stage")
    bench = StageBench(tmp_path, BOILER)
    stage = bench.start()
    for k in range(3_000):
        if k % 3 == 0:
            stage.on_command("t/cmd", b"{not json" + b"x" * 1000)
        elif k % 3 == 1:
            bench.command(cmd="ack", id="nope", request_id="q" * 1000)
        else:
            bench.command(cmd="ack", id=HIGH)  # nothing to acknowledge
    records = _refusal_records(caplog)
    assert len(records) == 1
    first = records[0].getMessage()
    assert first.startswith("alarm command refused: not JSON") and len(first) < 300
    await settle(60)  # the window ends: one summary line, with the counts
    records = _refusal_records(caplog)
    assert len(records) == 2
    assert (
        records[1]
        .getMessage()
        .startswith(
            "alarm commands: 2,999 more refused in the last 60.0 s "
            "(not_allowed 1,000, not_json 999, too_long 1,000)"
        )
    )
    assert stage.refusals.counts == {"not_json": 1000, "too_long": 1000, "not_allowed": 1000}
    # No broker: the replies wait in the MQTT queue, up to REFUSED_REPLY_BACKLOG of them.
    assert bench.agent.sink.stats.pending == REFUSED_REPLY_BACKLOG
    assert stage.replies_dropped == 3_000 - REFUSED_REPLY_BACKLOG
    # After a quiet window the next refusal is logged in full again.
    bench.command(cmd="ack", id="nope")
    records = _refusal_records(caplog)
    assert len(records) == 3 and "unknown alarm 'nope'" in records[2].getMessage()
    bench.close()


async def _until_drained(agent: Agent) -> None:
    deadline = time.monotonic() + 30
    while agent.sink.stats.pending:
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
        assert time.monotonic() < deadline, f"{agent.sink.stats.pending} replies pending"


def _scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _refusals(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "edge_agent_alarm_command_refusals_total"
    }


@pytest.mark.timeout(120)
async def test_thousands_of_refused_commands_over_mosquitto_cost_two_log_lines(
    mosquitto: Mosquitto,
    subscribe: Any,
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.alarms.stage")
    site = tmp_path / "site.yaml"
    site.write_text(
        site_yaml(BOILER, url=mosquitto.url).replace("prefix: t}", f'prefix: "{unique_prefix}"}}')
    )
    agent = Agent(load_config(site))
    stage = next(s for s in agent.stages if isinstance(s, AlarmStage))
    base = f"{unique_prefix}/plant-a/gw-01"
    replies: Subscriber = subscribe(mosquitto.host, mosquitto.port, f"{base}/alarms/cmd/reply")
    kinds: list[tuple[str, bytes]] = [
        ("not_json", b"{ack"),
        ("not_object", b"[1, 2]"),
        ("unknown_alarm", orjson.dumps({"cmd": "ack", "id": "x/y", "operator": "o"})),
        ("not_allowed", orjson.dumps({"cmd": "ack", "id": HIGH, "operator": "o"})),
        (
            "bad_field",
            orjson.dumps(
                {"cmd": "shelve", "id": HIGH, "operator": "o", "comment": "c", "duration_s": True}
            ),
        ),
        (
            "too_long",
            orjson.dumps({"cmd": "ack", "id": HIGH, "operator": "o", "request_id": "r" * 3000}),
        ),
        ("too_large", b'{"cmd": "ack", "comment": "' + b"c" * 5000 + b'"}'),
    ]
    n = 700  # of each kind: 4,900 commands
    flood = [(f"{base}/alarms/cmd", payload) for _ in range(n) for _, payload in kinds]
    async with serving_http(agent, "127.0.0.1", 0) as http:
        task = asyncio.create_task(agent.run(), name="agent")
        try:
            await agent.sink.wait_connected(10)
            deadline = time.monotonic() + 10
            while stage.counters.commands == 0:  # subscribed once a probe is answered
                await publish(mosquitto.url, [(f"{base}/alarms/cmd", b"probe")])
                await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline
                assert time.monotonic() < deadline, "the agent never took a command"
            probes = stage.counters.commands
            # In chunks the agent takes before the next: Mosquitto drops QoS 1 messages
            # beyond a subscriber's 1,000 queued, and every one must arrive to be counted.
            for start in range(0, len(flood), CHUNK):
                await publish(mosquitto.url, flood[start : start + CHUNK])
                deadline = time.monotonic() + 30
                while stage.counters.commands < probes + min(start + CHUNK, len(flood)):
                    await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline
                    assert time.monotonic() < deadline, f"{stage.counters.commands} commands"
            host, port = http.server.address
            await _until_drained(agent)
            samples = await asyncio.to_thread(_scrape, f"http://{host}:{port}")
            refusals = _refusals(samples)
        finally:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=15)
            assert done == {task}
    expected = {reason: float(n) for reason, _ in kinds}
    expected["not_json"] += probes
    assert refusals == expected
    assert set(refusals) <= set(REFUSAL_REASONS)
    records = _refusal_records(caplog)
    # The first refusal in full, and at stop one summary line with the rest counted.
    assert len(records) == 2, [r.getMessage()[:100] for r in records]
    assert f"{probes + len(flood) - 1:,} more refused" in records[1].getMessage()
    assert sum(len(r.getMessage()) for r in records) < 1000
    # Every reply is bounded too: no request_id comes back longer than 100 characters. A
    # reply the backed-up MQTT queue had no room for is counted instead.
    replied = probes + len(flood) - stage.replies_dropped
    assert samples[("edge_agent_alarm_command_replies_dropped_total", frozenset())] == (
        stage.replies_dropped
    )
    await replies.wait_for(replied, timeout_s=20)
    docs = [orjson.loads(m.payload) for m in replies.messages]
    assert len(docs) == replied
    assert max(len(d["request_id"] or "") for d in docs) == REQUEST_ID_MAX
    assert max(len(m.payload) for m in replies.messages) < 1000

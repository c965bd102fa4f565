"""Report by exception end to end: simulators -> agent -> Mosquitto -> subscriber, ingest.

A recording stage sees what the edge read (every poll, as stages do); a subscriber and the
ingest (into its embedded store) see what went up. Replaying the uplink, and the ingest's
stored series, as sample-and-hold at each edge poll must give, for every point, the edge's
quality and reason, a value within its deadband, and nothing older than its heartbeat;
an energy total from the thinned uplink must equal the edge's.

The reference energy total is computed here from the counter readings the edge saw (the
energy stage, edge_agent/energy*.py, was still in progress when this was written).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from drivers.reading import Poll, Quality, Value
from edge_agent.catalog import Kind, shipped
from edge_agent.cli.live_view import render
from edge_agent.config.site import load_config
from edge_agent.delivery.outbox import Outbox
from edge_agent.ingest.embedded_store import read_points
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.pipeline.by_exception import ReportFilter
from edge_agent.runtime.agent import Agent
from simulators.common.faults import FaultKind
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.ingest_support import running as ingesting
from tests.running_agent import running

ROOT = Path(__file__).resolve().parents[2]
PROFILES = shipped(Kind.PROFILES)
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_text())
)
COUNTERS = ("energy_import", "energy_export", "reactive_energy_import")
INTERVAL_S = 0.1
HEARTBEAT_S = 1.0
PCT = {"meter": 0.5, "plc": 1.0}  # deadband_pct per device (of the last published value)

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A stage that keeps every poll the edge saw."""

    name = "recorder"

    def __init__(self) -> None:
        self.polls: dict[str, list[Poll]] = {}

    def observe(self, poll: Poll) -> None:
        self.polls.setdefault(poll.device, []).append(poll)

    async def run(self) -> None:
        await asyncio.Event().wait()


async def _until(predicate: Callable[[], bool], *, timeout_s: float = 15.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


def _metered_profile(directory: Path) -> None:
    """The DTSU666 profile with its counters declared as energy counters."""
    doc = yaml.safe_load((PROFILES / "chint-dtsu666.yaml").read_text())
    doc["name"] = "dtsu666-metered"
    for point in doc["points"]:
        if point["name"] in COUNTERS:
            kind = "reactive" if point["name"].startswith("reactive") else "electricity"
            direction = "export" if point["name"].endswith("export") else "import"
            point["energy"] = {"kind": kind, "direction": direction}
    (directory / "profiles").mkdir()
    (directory / "profiles/dtsu666-metered.yaml").write_text(yaml.safe_dump(doc))


def _replay(edge: list[Poll], uplink: list[dict[str, Any]], *, pct: float) -> tuple[int, int, int]:
    """Check the held uplink against every edge poll; (readings checked, sent, polled)."""
    by_ts = {doc["ts_ms"]: doc for doc in uplink}
    assert len(by_ts) == len(uplink), "one message per poll at most"
    held: dict[str, tuple[int, Value, str, str | None]] = {}  # name: ts_ms, value, q, reason
    checked = sent = 0
    for poll in edge:
        ts_ms = poll.ts_ns // 1_000_000
        doc = by_ts.pop(ts_ms, None)
        if doc is not None:
            for name, p in doc["points"].items():
                held[name] = (ts_ms, p["value"], p["quality"], p.get("reason"))
                sent += 1
        for i, (spec, value) in enumerate(zip(poll.points, poll.values, strict=True)):
            quality, reason = poll.issues.get(i, (Quality.GOOD, None))
            h_ts, h_value, h_quality, h_reason = held[spec.name]
            where = f"{poll.device}.{spec.name} at {ts_ms}"
            assert (h_quality, h_reason) == (quality.value, reason), where
            assert ts_ms - h_ts <= HEARTBEAT_S * 1000, where
            if spec.name in COUNTERS or type(value) not in (int, float):
                assert h_value == value, where  # counters, states, texts: exact
            else:
                assert type(h_value) in (int, float), where
                assert abs(value - h_value) <= pct / 100 * abs(h_value) + 1e-9, where  # type: ignore[operator]
            checked += 1
    assert not by_ts, f"uplink messages of polls the edge never saw: {sorted(by_ts)}"
    return checked, sent, sum(len(p.values) for p in edge)


INGEST = "ingest: {store: data/edge.sqlite, flush_interval_s: 0.05, session_expiry_s: 0}\n"


def _stored(path: Path, device: str) -> list[dict[str, Any]]:
    """The ingest's stored rows of a device, as one {ts_ms, points} entry per timestamp."""
    by_ts: dict[int, dict[str, Any]] = {}
    for row in read_points(path, device=device):
        point = {
            "value": row.text if row.text is not None else row.value,
            "quality": row.quality,
        }
        if row.reason is not None:
            point["reason"] = row.reason
        by_ts.setdefault(row.ts_ms, {"ts_ms": row.ts_ms, "points": {}})["points"][row.point] = point
    return [by_ts[ts] for ts in sorted(by_ts)]


def _energy_total(series: list[Value]) -> float:
    """kWh between the first and last reading: the sum of the counter's rises."""
    total = 0.0
    for a, b in itertools.pairwise(series):
        assert isinstance(a, float) and isinstance(b, float)
        total += max(0.0, b - a)
    return total


async def test_thinned_uplink_represents_the_edge_signal(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    _metered_profile(tmp_path)
    specs = [
        SimDeviceSpec(
            name="meter",
            url="tcp://127.0.0.1:0",
            device_id=1,
            profile=load_profile(tmp_path / "profiles/dtsu666-metered.yaml"),
            seed=11,
        ),
        SimDeviceSpec(
            name="plc",
            url="tcp://127.0.0.1:0",
            device_id=2,
            profile=load_profile(PROFILES / "test-plc.yaml"),
            seed=12,
        ),
    ]
    async with serve(specs) as sim:
        devices = [
            {
                "name": name,
                "driver": "modbus",
                "url": sim.device(name).url,
                "device_id": sim.device(name).device_id,
                "profile": profile,
                "interval_s": INTERVAL_S,
                "report": {"deadband_pct": PCT[name], "max_interval_s": HEARTBEAT_S},
            }
            for name, profile in (("meter", "dtsu666-metered"), ("plc", "test-plc"))
        ]
        site = tmp_path / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n{INGEST}'
            "devices:\n" + "".join(f"  - {json.dumps(d)}\n" for d in devices)
        )
        loaded = load_config(site)
        agent = Agent(loaded)
        ingest = Ingest(loaded, worker=unique_prefix.replace("/", "-"))
        thinned = agent.uplink_filter
        assert isinstance(thinned, ReportFilter)
        recorder = Recorder()
        agent.stages.append(recorder)
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        edge = recorder.polls

        def polls(name: str, bad: bool | None = None) -> int:
            return sum(1 for p in edge.get(name, []) if bad is None or bool(p.issues) == bad)

        started = time.monotonic()
        async with ingesting(ingest):
            async with running(agent):
                await _until(lambda: polls("meter") >= 25, what="25 meter polls")
                # Quality change: every request of the meter answers exception 02, then not.
                sim.device("meter").faults.set(FaultKind.EXCEPTION, code=2)
                await _until(lambda: polls("meter", bad=True) >= 5, what="5 bad meter polls")
                sim.device("meter").faults.clear()
                good = polls("meter", bad=False)
                await _until(lambda: polls("meter", bad=False) >= good + 25, what="good again")
                elapsed = time.monotonic() - started
            # Counted once the agent stopped: it keeps polling until then.
            expected = sum(c.messages for c in thinned.counts.values())
            await _until(
                lambda: ingest.stats.stored_messages >= expected,
                what=f"{expected} messages stored by the ingest",
            )
        await _until(
            lambda: sum(1 for m in sub.messages if m.topic.endswith("/data")) >= expected,
            what=f"{expected} data messages at the subscriber",
        )

    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]
    assert len(docs) == expected
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for doc in docs:
        VALIDATOR.validate(doc)  # thinned messages are plain v1 messages

    for name in ("meter", "plc"):
        uplink = [d for d in docs if d["device"] == name]
        checked, sent, polled = _replay(edge[name], uplink, pct=PCT[name])
        # The ingest stored the same thinned series: the same checks hold on its rows.
        stored = _stored(store_path(loaded), name)
        assert len(stored) == len(uplink)
        assert _replay(edge[name], stored, pct=PCT[name]) == (checked, sent, polled)
        counts = thinned.counts[name]
        assert (counts.readings_polled, counts.readings_published) == (polled, sent)
        assert counts.messages == len(uplink)
        assert checked == polled
        # Thinned, not silenced: fewer readings went up than were polled.
        assert sent < polled * (0.7 if name == "meter" else 0.95), (name, sent, polled)

    # The fault shows up in the very poll it began and ended in.
    meter_edge = edge["meter"]
    meter_up = {d["ts_ms"]: d for d in docs if d["device"] == "meter"}
    flips = [
        k
        for k in range(1, len(meter_edge))
        if bool(meter_edge[k].issues) != bool(meter_edge[k - 1].issues)
    ]
    assert len(flips) == 2
    for k in flips:
        doc = meter_up[meter_edge[k].ts_ns // 1_000_000]
        assert len(doc["points"]) == len(meter_edge[k].points)
        qualities = {p["quality"] for p in doc["points"].values()}
        assert qualities == ({"bad"} if meter_edge[k].issues else {"good"})

    # Energy: every change of a counter went up, so the totals agree to the last digit.
    for counter in COUNTERS:
        i = next(i for i, p in enumerate(meter_edge[0].points) if p.name == counter)
        at_edge = [p.values[i] for p in meter_edge if i not in p.issues]
        uplinked = [
            d["points"][counter]["value"]
            for d in docs
            if d["device"] == "meter"
            and counter in d["points"]
            and d["points"][counter]["quality"] == "good"
        ]
        assert _energy_total(uplinked) == _energy_total(at_edge)
        assert uplinked[-1] == at_edge[-1]
        assert sorted(set(uplinked)) == sorted(set(at_edge))

    # The live view shows polled against published readings, and the uplink rates.
    lines = render(agent, elapsed_s=elapsed)
    meter_line = next(line for line in lines if line.startswith("meter ") and "/" in line)
    counts = thinned.counts["meter"]
    assert f"{counts.readings_published}/{counts.readings_polled}" in meter_line
    assert agent.encoders["meter"].messages == counts.messages
    # A poll made before the first connect goes up as backlog, its "historical":false
    # flipped to true: one byte shorter than it was encoded.
    assert agent.encoders["meter"].bytes == sum(
        len(m.payload) + orjson.loads(m.payload)["historical"]
        for m in sub.messages
        if m.topic.endswith("/meter/data")
    )


V2 = jsonschema.Draft202012Validator(
    json.loads((ROOT / "edge_agent/schemas/data-v2.schema.json").read_text())
)


async def test_batched_and_thinned_uplink_carries_the_same_signal(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    """Batches of thinned polls (v2) unpack into the polls the filter let through."""
    _metered_profile(tmp_path)
    spec = SimDeviceSpec(
        name="meter",
        url="tcp://127.0.0.1:0",
        profile=load_profile(tmp_path / "profiles/dtsu666-metered.yaml"),
        seed=21,
    )
    async with serve([spec]) as sim:
        device = {
            "name": "meter",
            "driver": "modbus",
            "url": sim.device("meter").url,
            "profile": "dtsu666-metered",
            "interval_s": INTERVAL_S,
            "report": {"deadband_pct": PCT["meter"], "max_interval_s": HEARTBEAT_S},
            "batch": {"max_polls": 8, "max_age_s": 0.5},
        }
        site = tmp_path / "site.yaml"
        site.write_text(
            "site: plant-a\ngateway: gw-01\n"
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{unique_prefix}"}}\n{INGEST}'
            f"devices:\n  - {json.dumps(device)}\n"
        )
        loaded = load_config(site)
        agent = Agent(loaded)
        ingest = Ingest(loaded, worker=unique_prefix.replace("/", "-"))
        assert agent.batcher is not None and isinstance(agent.uplink_filter, ReportFilter)
        recorder = Recorder()
        agent.stages.append(recorder)
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        async with ingesting(ingest):
            async with running(agent):
                await _until(lambda: len(recorder.polls.get("meter", [])) >= 30, what="30 polls")
            counts = agent.uplink_filter.counts["meter"]
            batches, _ = agent.batcher.sent("meter")
            # The ingest unpacks each batch into its polls, each stored at its own time.
            await _until(
                lambda: ingest.stats.stored_messages >= counts.messages,
                what=f"{counts.messages} polls stored by the ingest",
            )
        await _until(
            lambda: sum(1 for m in sub.messages if m.topic.endswith("/data")) >= batches,
            what=f"{batches} batches at the subscriber",
        )

    docs = [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]
    assert len(docs) == batches < counts.messages  # fewer messages than thinned polls
    for doc in docs:
        V2.validate(doc)
        assert doc["ts_ms"] == doc["polls"][0]["ts_ms"]
        assert len(doc["polls"]) <= 8
        spread = doc["polls"][-1]["ts_ms"] - doc["polls"][0]["ts_ms"]
        assert spread <= 500 + 100, spread  # max_age_s, give or take one poll's jitter
    polls = [{"ts_ms": p["ts_ms"], "points": p["points"]} for d in docs for p in d["polls"]]
    # Every poll the filter let through arrived (the last batch was flushed at the stop).
    assert len(polls) == counts.messages
    checked, sent, polled = _replay(recorder.polls["meter"], polls, pct=PCT["meter"])
    assert checked == polled == counts.readings_polled
    stored = _stored(store_path(loaded), "meter")
    assert [x["ts_ms"] for x in stored] == [p["ts_ms"] for p in polls]
    assert _replay(recorder.polls["meter"], stored, pct=PCT["meter"]) == (checked, sent, polled)
    assert sent == counts.readings_published < polled
    messages, sent_bytes = agent.batcher.sent("meter")
    assert sent_bytes == sum(len(m.payload) for m in sub.messages if m.topic.endswith("/data"))
    # Every poll was held in the outbox while its batch filled, and released with it.
    outbox = Outbox(agent.outbox.path, loaded.site.outbox)
    outbox.open()
    assert outbox.held() == [] and outbox.stats.messages == 0
    outbox.close()
    line = next(x for x in render(agent, elapsed_s=10.0) if x.startswith("meter ") and "/" in x)
    assert f"{messages * 360:>8.0f}" in line  # messages per hour over the 10 s given

"""Simulated meters -> whole agent -> energy stage -> platform uplink -> two HTTPS platforms.

Everything real and local: two simulated Modbus meters over TCP, the `Agent` built from a
site file with an `uplink:` block of two endpoints, Mosquitto (the energy topic is the
reference), and two platform receivers (simulators/platform/receiver.py: TLS on loopback,
a self-signed certificate each, given to the uplink as `ca_file`). As in
test_energy_end_to_end, the simulators' clock and the energy stage's clock run 600 times
faster (1 s = 10 min) from 2026-10-31 23:40 local, so 15-minute intervals close every
1.5 s.

The run: both platforms up until the 00:00 intervals are in; then platform 0 answers 503
and then holds its requests past the client's timeout, while platform 1 keeps receiving
(checked while platform 0 is still down); then platform 0 is back and catches up. Checked:
each platform acknowledged every interval of the energy topic exactly once, in the order
the stage published them (by start), with the published values; platform 0's failed
requests were all its oldest unacknowledged batch again; the history in the uplink's file
(after the agent stopped) holds those intervals.
"""

from __future__ import annotations

import asyncio
import csv
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.cli.main import main
from edge_agent.config.site import load_config
from edge_agent.energy.stage import EnergyStage, build_energy_stages
from edge_agent.runtime.agent import Agent
from edge_agent.uplink.config import UplinkConfig, UplinkEndpoint
from edge_agent.uplink.platform import PlatformUplink, UplinkOutlet
from edge_agent.uplink.store import IntervalRecord, UplinkStore
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from simulators.platform.receiver import PlatformReceiver, ReceiverState, self_signed
from tests.energy_reference import local_ms
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.running_agent import running
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
PROFILES = shipped(Kind.PROFILES)
TEMPLATE = shipped(Kind.TEMPLATES, "example-province")
SCALE = 600.0
TOKENS = {"TOKEN_0": "token-zero", "TOKEN_1": "token-one"}
# Series with an interval per boundary: incomer and feeder (import, export, reactive
# import each) and the virtual meter `rest` (electricity, reactive).
SERIES = 8

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[list[PlatformReceiver]]:
    started = [PlatformReceiver(tmp_path / f"platform-{i}").start() for i in range(2)]
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def _site_text(mosquitto: Mosquitto, prefix: str, urls: dict[str, str], platforms: Any) -> str:
    endpoints = [
        f"    - {{name: platform-{i}, url: '{p.url}', template: '{TEMPLATE}',"
        f" token: '${{TOKEN_{i}}}', ca_file: '{p.cert}', timeout_s: 1.0, batch: 4,"
        f" backoff_max_s: 0.2, ack_json: {{code: 0}}{SPANS[i]}}}"
        for i, p in enumerate(platforms)
    ]
    devices = [
        {
            "name": name,
            "driver": "modbus",
            "url": urls[name],
            "device_id": i + 1,
            "profile": profile,
            "interval_s": 0.1,
        }
        for i, (name, profile) in enumerate(METERS)
    ]
    return "\n".join(
        [
            "site: plant-a",
            "gateway: gw-01",
            f'mqtt: {{url: "{mosquitto.url}", prefix: "{prefix}"}}',
            "energy:",
            "  tariff: example-tou",
            "  virtual_meters:",
            '    - {name: rest, formula: "incomer - feeder"}',
            "uplink:",
            "  path: var/uplink.sqlite",
            "  endpoints:",
            *endpoints,
            "devices:",
            *[f"  - {json.dumps(d)}" for d in devices],
            "",
        ]
    )


METERS = [("incomer", "chint-dtsu666"), ("feeder", "acrel-adl400")]
# Platform 1 also takes the daily totals (每日上传), with the province's energy codes.
SPANS = ["", ", spans: [interval, day], codes: {electricity: '0100', reactive: '0190'}"]


def _sent(state: ReceiverState, period: str = "interval") -> list[dict[str, Any]]:
    """The records of a span a platform acknowledged, in the order it acknowledged them."""
    return [rec for body in state.accepted() for rec in body["data"] if rec["period"] == period]


def _answered(state: ReceiverState, mode: str) -> list[Any]:
    with state.lock:
        return [r.body for r in state.received if r.answered == mode]


def _expected(doc: dict[str, Any], codes: dict[str, str] | None = None) -> dict[str, Any]:
    """The template's record for one interval or day message of the energy topic."""
    counter, span = doc["counter"], doc["type"]
    main_point = doc["points"][f"{span}.{counter}"]
    at = "" if span == "interval" else f"{span}/"
    return {
        "dataKey": f"plant-a/gw-01/{doc['device']}/{counter}/{at}{doc['start']}",
        "meter": doc["device"],
        "item": counter,
        "energyType": doc["kind"],
        "statStart": doc["start"],
        "statEnd": doc["end"],
        "value": main_point["value"],
        "unit": main_point["unit"],
        "quality": main_point["quality"],
        "completeness": doc["points"][f"{span}.{counter}.completeness"]["value"],
        "flags": " ".join(doc["flags"]),
        "manual": False,
        "period": span,
        "energyCode": (codes or {}).get(doc["kind"]),
    }


async def test_intervals_reach_two_platforms_once_in_order_through_an_outage(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    platforms: list[PlatformReceiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = time.monotonic()

    def fast_clock() -> float:
        return t0 + (time.monotonic() - t0) * SCALE

    specs = [
        SimDeviceSpec(
            name=name,
            url="tcp://127.0.0.1:0",
            device_id=i + 1,
            profile=load_profile(PROFILES / f"{profile}.yaml"),
            seed=i + 11,
            update_interval_s=0.0,
        )
        for i, (name, profile) in enumerate(METERS)
    ]
    down, up = platforms[0].state, platforms[1].state
    async with serve(specs, clock=fast_clock) as sim:
        site = tmp_path / "site.yaml"
        urls = {name: sim.device(name).url for name, _ in METERS}
        site.write_text(_site_text(mosquitto, unique_prefix, urls, platforms))
        loaded = load_config(site, environ=TOKENS)
        agent = Agent(loaded)
        (uplink,) = [s for s in agent.stages if isinstance(s, PlatformUplink)]
        (wired,) = [s for s in agent.stages if isinstance(s, EnergyStage)]
        # The agent gave its energy stage the uplink's outlet; the same outlet feeds the
        # stage on the fast clock that replaces it.
        assert isinstance(wired.outlet, UplinkOutlet) and wired.outlet.uplink is uplink
        stage = build_energy_stages(
            loaded,
            wired.outlet,
            time_scale=SCALE,
            time_origin_ms=local_ms(2026, 10, 31, 23, 40),
        )[0]
        agent.stages[:] = [stage if s is wired else s for s in agent.stages]
        energy_topic = f"{unique_prefix}/plant-a/gw-01/energy"
        sub = subscribe(mosquitto.host, mosquitto.port, energy_topic)

        def published(span: str = "interval") -> list[dict[str, Any]]:
            docs = [orjson.loads(m.payload) for m in sub.messages]
            return [d for d in docs if d["type"] == span]

        def ending(state: ReceiverState, hour: int, minute: int) -> int:
            end = f"2026-11-01T{hour:02d}:{minute:02d}:00+08:00"
            return sum(rec["statEnd"] == end for rec in _sent(state))

        async with running(agent):
            await until(
                lambda: ending(down, 0, 0) == ending(up, 0, 0) == SERIES,
                what="both platforms to acknowledge the intervals ending 00:00",
            )
            down.set_mode("fail")
            before = [rec["dataKey"] for rec in _sent(down)]
            await until(
                lambda: ending(up, 0, 30) == SERIES and len(_answered(down, "fail")) >= 2,
                what="platform 1 to get the 00:15 and 00:30 intervals while platform 0 fails",
            )
            # Platform 1 was not held up: it has two more boundaries, platform 0 none.
            assert uplink.store.depth("platform-1") < SERIES
            assert [rec["dataKey"] for rec in _sent(down)] == before
            assert uplink.store.depth("platform-0") >= 2 * SERIES
            down.hold_s = 3.0
            down.set_mode("timeout")  # held past the client's 1 s timeout, then resent
            await until(
                lambda: len(_answered(down, "timeout")) >= 2 and ending(up, 0, 45) == SERIES,
                what="platform 0 to time out twice and platform 1 to get the 00:45 intervals",
            )
            assert [rec["dataKey"] for rec in _sent(down)] == before
            assert uplink.store.depth("platform-0") >= 3 * SERIES
            down.set_mode("ok")
            await until(
                lambda: (
                    ending(down, 1, 0) == ending(up, 1, 0) == SERIES
                    and uplink.store.depth("platform-0") == uplink.store.depth("platform-1") == 0
                ),
                what="platform 0 to catch up through the 01:00 intervals",
            )
            assert uplink.senders[0].stats.failures >= 4
            assert uplink.senders[1].stats.failures == 0

    intervals = published()
    last_end = "2026-11-01T01:00:00+08:00"
    # Stopped once both had everything up to 01:00; later intervals may be on the way.
    expected = [_expected(d) for d in intervals if d["end"] <= last_end]
    # The day of Oct 31 closed at 00:00: platform 1 got its totals (a 20-minute day, so
    # uncertain), with the codes; platform 0 takes intervals only.
    days = published("day")
    assert {d["period"] for d in days} == {"2026-10-31"} and len(days) == SERIES
    codes = {"electricity": "0100", "reactive": "0190"}
    assert _sent(platforms[1].state, "day") == [_expected(d, codes) for d in days]
    assert _sent(platforms[0].state, "day") == []
    assert {r["energyCode"] for r in _sent(platforms[1].state)} == {"0100", "0190"}
    assert expected[0]["statStart"] == "2026-10-31T23:30:00+08:00"  # the first, partial
    assert sum(e["statEnd"] == last_end for e in expected) == SERIES
    for i, p in enumerate(platforms):
        sent = _sent(p.state)
        keys = [rec["dataKey"] for rec in sent]
        assert len(set(keys)) == len(keys), "a key acknowledged twice"
        want = expected if i == 0 else [_expected(d, codes) for d in intervals]
        assert sent[: len(expected)] == want[: len(expected)]
        assert [r["statStart"] for r in sent] == sorted(r["statStart"] for r in sent)
        assert {r.authorization for r in p.state.received} == {f"Bearer {TOKENS[f'TOKEN_{i}']}"}
    # Every request platform 0 failed carried its oldest unacknowledged record first.
    head = expected[len(before)]["dataKey"]
    failed = _answered(down, "fail") + _answered(down, "timeout")
    assert {body["data"][0]["dataKey"] for body in failed} == {head}

    # The history in the uplink's file, read after the agent stopped.
    store = UplinkStore(tmp_path / "var" / "uplink.sqlite", ["platform-0", "platform-1"])
    try:
        history = {r.key: r for r in store.history(0, 2**62)}
    finally:
        store.close()
    for doc in intervals + days:  # everything the energy topic carried, up to 01:00 or beyond
        e = _expected(doc)
        r = history[e["dataKey"]]
        assert (r.start, r.end, r.value, r.unit, r.quality, r.completeness, r.flags) == (
            e["statStart"],
            e["statEnd"],
            e["value"],
            e["unit"],
            e["quality"],
            e["completeness"],
            e["flags"],
        )
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)  # the CLI reads the site file from the environment
    out = tmp_path / "history.csv"
    args = ["uplink", "export", str(site), "--from", "2026-10-31", "--to", "2026-11-02"]
    assert main([*args, "--out", str(out)]) == 0
    with out.open(encoding="utf-8-sig") as f:
        rows = [row for row in csv.DictReader(f) if row["end"] <= last_end]
    keys = [e["dataKey"] for e in expected] + [_expected(d)["dataKey"] for d in days]
    assert sorted(row["key"] for row in rows) == sorted(keys)
    assert {row["span"] for row in rows} == {"interval", "day"}


class _BrokenOff:
    """An HTTPS server whose answers break off: a 200 announcing 100 bytes, then 8 and EOF
    (a proxy dropping the connection mid-answer). The client gets IncompleteRead."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert, key = self_signed(cert_dir)
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b'{"code":')
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/upload"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


async def test_a_platform_breaking_off_its_answers_stops_neither_the_uplink_nor_the_other(
    tmp_path: Path, platforms: list[PlatformReceiver]
) -> None:
    # Regression: http.client.IncompleteRead is no OSError; it escaped the sender, ended the
    # uplink's TaskGroup and with it the agent's (data collection stopped).
    broken = _BrokenOff(tmp_path / "broken")
    healthy = platforms[1]
    endpoints = tuple(
        UplinkEndpoint(
            name=name, url=url, template=TEMPLATE, ca_file=ca, timeout_s=1.0, batch=2,
            backoff_max_s=0.1, ack_json={"code": 0},
        )
        for name, url, ca in (
            ("broken", broken.url, broken.cert),
            ("healthy", healthy.url, healthy.cert),
        )
    )  # fmt: skip
    uplink = PlatformUplink(
        UplinkConfig(path=Path("uplink.sqlite"), endpoints=endpoints),
        site="plant-a",
        gateway="gw-01",
        base=tmp_path,
        backoff_min_s=0.02,
    )
    records = [
        IntervalRecord(
            "plant-a", "gw-01", "incomer", "energy_import", "electricity",
            f"2026-11-01T00:{15 * i:02d}:00+08:00", f"2026-11-01T00:{15 * i + 15:02d}:00+08:00",
            1_793_462_400_000 + 900_000 * i, 1_793_462_400_000 + 900_000 * (i + 1),
            1.5 + i, "kWh", "good", 1.0,
        )
        for i in range(3)
    ]  # fmt: skip
    task = asyncio.create_task(uplink.run())
    try:
        uplink.record(records)
        await until(
            lambda: task.done() or (broken.requests >= 3 and len(_sent(healthy.state)) == 3),
            what="three broken-off answers and the healthy platform to get all three",
        )
        assert not task.done(), task.exception()  # still sending, not ended by an exception
        assert [r["dataKey"] for r in _sent(healthy.state)] == [r.key for r in records]
        assert uplink.store.depth("broken") == 3  # nothing acknowledged, nothing dropped
        assert uplink.senders[0].stats.last_error == (
            "IncompleteRead: IncompleteRead(8 bytes read, 92 more expected)"
        )
        assert uplink.senders[0].stats.acked_records == 0
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        broken.stop()
        uplink.store.close()
    assert done == {task}

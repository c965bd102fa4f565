"""The 能耗在线监测 uplink in /metrics and /status.json: agent -> real local HTTPS receivers.

The agent runs with its HTTP port on a free loopback port and an `uplink:` block naming two
receivers (simulators/platform/receiver.py, self-signed TLS trusted through `ca_file`).
One answers 503, the other acknowledges. To read exact numbers while an endpoint fails,
the failing receiver is then told to hold the next request: its sender waits for that
answer, so nothing changes under the scrape. Released and told to acknowledge, the queue
drains and every number is checked again. The queue depth is an in-memory count kept by
the store; a test checks it against SQL, across a reopen and another process's writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.remote.webdriver import WebDriver

from edge_agent import __version__
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.ops.http_server import serving_http
from edge_agent.ops.metrics import platform_uplink
from edge_agent.runtime.agent import Agent
from edge_agent.uplink.platform import PlatformUplink
from edge_agent.uplink.store import IntervalRecord, UplinkStore
from simulators.platform.receiver import PlatformReceiver, ReceiverState
from tests.e2e.test_status_page import browser  # noqa: F401  (the headless Chromium fixture)
from tests.fixtures.mosquitto import Mosquitto
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

TEMPLATE = shipped(Kind.TEMPLATES, "example-province")
TOKEN = "secret-token-4711"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2026, 11, 1, 0, 0, tzinfo=SHANGHAI)
P = "edge_agent_platform_uplink_"


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[PlatformReceiver]]:
    started = [PlatformReceiver(tmp_path / f"recv-{i}").start() for i in range(2)]
    try:
        yield started
    finally:
        for r in started:
            r.stop()


def _site(
    tmp_path: Path, broker: Mosquitto, prefix: str, receivers: list[PlatformReceiver]
) -> LoadedConfig:
    # timeout_s 10: a request the receiver holds is answered by releasing it, never by the
    # client giving up while the test reads the numbers.
    endpoints = "\n".join(
        f"    - {{name: platform-{i}, url: '{r.url}', template: '{TEMPLATE}',"
        f" token: '${{PLATFORM_TOKEN}}', ca_file: '{r.cert}', timeout_s: 10, batch: 3,"
        f" backoff_max_s: 0.2, ack_json: {{code: 0}}}}"
        for i, r in enumerate(receivers)
    )
    uplink = f"uplink:\n  path: var/uplink.sqlite\n  endpoints:\n{endpoints}\n" if receivers else ""
    text = f"""site: plant-a
gateway: gw-01
mqtt: {{url: "{broker.url}", prefix: "{prefix}", backoff_max_s: 0.5}}
outbox: {{path: var/outbox.sqlite}}
energy: {{timezone: Asia/Shanghai, interval_min: 15}}
{uplink}devices:
  - name: main-incomer
    driver: modbus
    url: tcp://127.0.0.1:1
    interval_s: 60
    points:
      - {{name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
          energy: {{kind: electricity, direction: import}}}}
"""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path, environ={"PLATFORM_TOKEN": TOKEN})


def _records(n: int, *, first: int = 0) -> list[IntervalRecord]:
    out = []
    for i in range(first, first + n):
        start = T0 + dt.timedelta(minutes=15 * i)
        end = start + dt.timedelta(minutes=15)
        out.append(
            IntervalRecord(
                "plant-a", "gw-01", "main-incomer", "energy_import", "electricity",
                start.isoformat(), end.isoformat(),
                int(start.timestamp() * 1000), int(end.timestamp() * 1000),
                10.0 + i, "kWh", "good", 1.0,
            )
        )  # fmt: skip
    return out


@asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[str]:
    async with serving_http(agent, "127.0.0.1", 0) as http:
        task = asyncio.create_task(agent.run(), name="agent")
        try:
            host, port = http.server.address
            yield f"http://{host}:{port}"
        finally:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=15)
            assert done == {task}, "the agent did not stop within 15 s"


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(base: str) -> tuple[str, Samples]:
    text = await asyncio.to_thread(_get_text, f"{base}/metrics")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def _endpoint(samples: Samples, endpoint: str) -> dict[str, float]:
    """The platform uplink samples of one endpoint, by name without the common prefix."""
    want = frozenset({("endpoint", endpoint)})
    return {n.removeprefix(P): v for (n, labels), v in samples.items() if labels == want}


async def _status(base: str) -> tuple[str, dict[str, Any]]:
    text = await asyncio.to_thread(_get_text, f"{base}/status.json")
    return text, json.loads(text)


def _uplink(agent: Agent) -> PlatformUplink:
    uplink = platform_uplink(agent)
    assert uplink is not None
    return uplink


def _answered(state: ReceiverState, mode: str) -> int:
    with state.lock:
        return sum(r.answered == mode for r in state.received)


def _delivered(state: ReceiverState) -> list[str]:
    """Keys of the records answered positively, in order. A held request (`timeout` mode)
    that is released instead of timing out is answered with an acknowledgement too."""
    with state.lock:
        bodies = [r.body for r in state.received if r.answered in ("ok", "timeout")]
    return [rec["dataKey"] for body in bodies for rec in body["data"]]


async def test_queue_failures_and_recovery_of_each_endpoint_in_metrics_and_status(
    mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    down, up = receivers[0].state, receivers[1].state
    down.set_mode("fail")
    down.hold_s = 30.0  # a held request ends when the test releases it
    agent = Agent(_site(tmp_path, mosquitto, unique_prefix, receivers), grace_s=0.2)
    uplink = _uplink(agent)
    failing, healthy = uplink.senders
    loop = asyncio.get_running_loop()
    async with _running(agent) as base:
        _, m = await _scrape(base)
        idle = {"queue_depth": 0, "requests_total": 0, "acked_records_total": 0,
                "failures_total": 0, "failing": 0}  # fmt: skip
        # Nothing sent and nothing failed yet: no age to tell.
        assert _endpoint(m, "platform-0") == _endpoint(m, "platform-1") == idle

        records = _records(7)
        queued_at = loop.time()
        uplink.record(records)
        await until(
            lambda: failing.stats.failures >= 2 and healthy.stats.acked_records == 7,
            what="two 503s from platform-0 and all seven acknowledged by platform-1",
        )
        down.set_mode("timeout")
        await until(lambda: _answered(down, "timeout") == 1, what="platform-0 holding a request")
        # platform-0's sender now waits for the held answer: its numbers stand still.
        fails = _answered(down, "fail")
        assert fails >= 2
        text, m = await _scrape(base)
        after = loop.time()
        p0, p1 = _endpoint(m, "platform-0"), _endpoint(m, "platform-1")
        age0 = p0.pop("last_ack_age_seconds")
        assert 0 < age0 < after - queued_at  # since failing started: nothing acknowledged
        assert p0 == {"queue_depth": 7, "requests_total": fails, "acked_records_total": 0,
                      "failures_total": fails, "failing": 1}  # fmt: skip
        age1 = p1.pop("last_ack_age_seconds")
        assert 0 <= age1 < after - queued_at
        # 7 records in batches of 3: 3 requests.
        assert p1 == {"queue_depth": 0, "requests_total": 3, "acked_records_total": 7,
                      "failures_total": 0, "failing": 0}  # fmt: skip
        raw, doc = await _status(base)
        s0, s1 = doc["platform_uplink"]
        assert 0 <= s0.pop("failing_s") <= loop.time() - queued_at + 0.05  # rounded to 0.1 s
        assert s0 == {"name": "platform-0", "state": "failing", "last_error": "HTTP 503",
                      "queue_depth": 7, "requests": fails, "acked": 0, "failures": fails,
                      "last_ack_ms": None}  # fmt: skip
        assert abs(s1.pop("last_ack_ms") - time.time_ns() // 1_000_000) < 10_000
        assert s1 == {"name": "platform-1", "state": "ok", "last_error": None, "failing_s": None,
                      "queue_depth": 0, "requests": 3, "acked": 7, "failures": 0}  # fmt: skip
        assert TOKEN not in text and TOKEN not in raw

        # Released and acknowledging: the held batch of 3, then 3, then 1.
        released_at, released_ms = loop.time(), time.time_ns() // 1_000_000
        down.set_mode("ok")
        down.release.set()
        await until(lambda: uplink.store.depth("platform-0") == 0, what="platform-0's queue empty")
        _, m = await _scrape(base)
        after = loop.time()
        p0 = _endpoint(m, "platform-0")
        assert 0 <= p0.pop("last_ack_age_seconds") < after - released_at
        assert p0 == {"queue_depth": 0, "requests_total": fails + 3, "acked_records_total": 7,
                      "failures_total": fails, "failing": 0}  # fmt: skip
        _, doc = await _status(base)
        s0 = doc["platform_uplink"][0]
        assert released_ms <= s0["last_ack_ms"] <= time.time_ns() // 1_000_000
        # The last error stays for the record; the state says it is over.
        assert (s0["state"], s0["last_error"], s0["failing_s"]) == ("ok", "HTTP 503", None)
        assert (s0["queue_depth"], s0["acked"], s0["failures"]) == (0, 7, fails)

    keys = [r.key for r in records]
    assert _delivered(down) == _delivered(up) == keys
    assert {r.authorization for r in down.received} == {f"Bearer {TOKEN}"}


async def test_a_negative_answer_is_the_last_error_without_the_token(
    mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    state = receivers[0].state
    state.set_mode("reject")
    agent = Agent(_site(tmp_path, mosquitto, unique_prefix, receivers[:1]), grace_s=0.2)
    uplink = _uplink(agent)
    async with _running(agent) as base:
        uplink.record(_records(1))
        await until(lambda: uplink.senders[0].stats.failures >= 1, what="a rejection")
        raw, doc = await _status(base)
        [endpoint] = doc["platform_uplink"]
        assert (endpoint["state"], endpoint["last_error"]) == (
            "failing",
            'not acknowledged: b\'{"code": 1, "message": "rejected"}\'',
        )
        assert TOKEN not in raw


def test_a_refusal_that_echoes_the_token_is_redacted(
    tmp_path: Path, mosquitto: Mosquitto, receivers: list[PlatformReceiver]
) -> None:
    agent = Agent(_site(tmp_path, mosquitto, "p", receivers[:1]))
    sender = _uplink(agent).senders[0]
    echoed = f'{{"code": 401, "authorization": "Bearer {TOKEN}"}}'.encode()
    assert sender._redacted(echoed) == b'{"code": 401, "authorization": "Bearer ***"}'


async def test_no_platform_uplink_metrics_or_status_without_an_uplink_block(
    mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    agent = Agent(_site(tmp_path, mosquitto, unique_prefix, []), grace_s=0.2)
    assert platform_uplink(agent) is None
    async with _running(agent) as base:
        text, m = await _scrape(base)
        info = frozenset({("version", __version__), ("site", "plant-a"), ("gateway", "gw-01")})
        assert m[("edge_agent_info", info)] == 1  # a real scrape, only without these:
        assert "platform_uplink" not in text
        _, doc = await _status(base)
        assert doc["platform_uplink"] is None


def test_queue_depth_is_counted_in_memory_and_follows_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite"

    def counted(endpoint: str) -> int:
        other = UplinkStore(path, [])
        try:
            row = other.db.execute("SELECT count(*) FROM queue WHERE endpoint = ?", (endpoint,))
            return int(row.fetchone()[0])
        finally:
            other.close()

    store = UplinkStore(path, ["a", "b"])
    assert (store.depth("a"), store.depth("b")) == (0, 0)
    store.add(_records(5))
    assert (store.depth("a"), store.depth("b")) == (5, 5)
    batch = store.pending("a", 3)
    store.ack("a", batch[-1][0])
    assert (store.depth("a"), store.depth("b")) == (2, 5) == (counted("a"), counted("b"))
    store.close()

    # A reopened file starts from what is queued in it.
    store = UplinkStore(path, ["a", "b"])
    assert (store.depth("a"), store.depth("b")) == (2, 5)
    # `edge-agent uplink manual` queues from another process: counted from the next pending().
    manual = UplinkStore(path, ["a", "b"])
    manual.add(_records(2, first=5))
    manual.close()
    assert store.depth("a") == 2
    batch = store.pending("a", 10)
    assert len(batch) == 4 and store.depth("a") == 4 and store.depth("b") == 7
    store.ack("a", batch[-1][0])
    assert (store.depth("a"), store.depth("b")) == (0, 7) == (counted("a"), counted("b"))
    # An endpoint no longer configured keeps the depth of what it left behind.
    store.close()
    store = UplinkStore(path, ["a"])
    assert (store.depth("a"), store.depth("b")) == (0, 7)
    store.close()


async def test_status_page_shows_the_platform_endpoints(
    browser: WebDriver,  # noqa: F811  (the imported fixture, requested by name)
    mosquitto: Mosquitto,
    unique_prefix: str,
    tmp_path: Path,
    receivers: list[PlatformReceiver],
) -> None:
    down = receivers[0].state
    down.set_mode("fail")
    agent = Agent(_site(tmp_path, mosquitto, unique_prefix, receivers), grace_s=0.2)
    uplink = _uplink(agent)
    async with _running(agent) as base:
        uplink.record(_records(4))
        await until(
            lambda: uplink.senders[0].stats.failing and uplink.store.depth("platform-1") == 0,
            what="platform-0 failing, platform-1 done",
        )
        await asyncio.to_thread(browser.get, f"{base}/")
        p0, p1 = await _rows_until(
            browser,
            lambda rows: [r[:2] for r in rows] == [["platform-0", "failing"], ["platform-1", "ok"]],
            what="platform-0 failing and platform-1 ok on the page",
        )
        # [endpoint, state, then the cells: name, state, queued, acknowledged, last ack]
        assert p0[3].startswith("failing ") and p0[3].endswith(" s HTTP 503")
        assert (p0[4], p0[5], p0[6]) == ("4", "0", "—")
        assert (p1[3], p1[4], p1[5]) == ("ok", "0", "4") and p1[6] != "—"
        down.set_mode("ok")
        await until(lambda: uplink.store.depth("platform-0") == 0, what="platform-0 recovered")
        p0, _ = await _rows_until(
            browser, lambda rows: rows[0][4] == "0", what="platform-0's queue empty on the page"
        )
        assert (p0[1], p0[3], p0[5]) == ("ok", "ok", "4") and p0[6] != "—"


ROWS_JS = """
return [...document.querySelectorAll("tr[data-endpoint]")].map(
  (r) => [r.dataset.endpoint, r.dataset.state, ...[...r.cells].map((c) => c.innerText)]);
"""


async def _rows_until(
    driver: WebDriver, condition: Callable[[list[list[str]]], bool], *, what: str
) -> list[list[str]]:
    """The page's endpoint rows once `condition` holds; read off the loop (Selenium blocks,
    and the page is served by this loop)."""
    deadline = time.monotonic() + 10
    while True:
        rows: list[list[str]] = await asyncio.to_thread(driver.execute_script, ROWS_JS)
        if condition(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the page shows {rows}")
        await asyncio.sleep(0.1)  # a poll interval bounded by the deadline, not a sync

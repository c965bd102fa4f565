"""Platform uplink against real local HTTPS receivers (simulators/platform/receiver.py).

Each receiver is a real TLS server on a loopback port with a self-signed certificate that
the uplink trusts through `ca_file`; it is told to fail (503), reject (negative JSON
acknowledgement) or time out (holds the request past the client's timeout). Checked:
nothing lost, order kept, duplicates identifiable by the interval key, two endpoints
independent, the queue surviving a restart, the energy stage's intervals reaching the
platform through the template, manual entries and the CSV export.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from drivers.reading import PointSpec, Poll
from edge_agent.catalog import Kind, shipped
from edge_agent.cli.main import main
from edge_agent.config.errors import ConfigError
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.energy.stage import build_energy_stages
from edge_agent.uplink.platform import PlatformUplink, with_uplink
from edge_agent.uplink.store import IntervalRecord, UplinkStore
from simulators.platform.receiver import PlatformReceiver, ReceiverState

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = shipped(Kind.TEMPLATES, "example-province")
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2026, 11, 1, 0, 0, tzinfo=SHANGHAI)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[PlatformReceiver]]:
    started = [PlatformReceiver(tmp_path / f"recv-{i}").start() for i in range(2)]
    try:
        yield started
    finally:
        for r in started:
            r.stop()


def _site(tmp_path: Path, receivers: list[PlatformReceiver], *, batch: int = 3) -> LoadedConfig:
    """A site with one meter and the uplink to each receiver (their certs as CA files)."""
    endpoints = "\n".join(
        f"    - {{name: platform-{i}, url: '{r.url}', template: '{TEMPLATE}',"
        f" token: '${{PLATFORM_TOKEN}}', ca_file: '{r.cert}', timeout_s: 0.5, batch: {batch},"
        f" backoff_max_s: 0.2, ack_json: {{code: 0}}}}"
        for i, r in enumerate(receivers)
    )
    text = f"""site: plant-a
gateway: gw-01
energy: {{timezone: Asia/Shanghai, interval_min: 15}}
uplink:
  path: var/uplink.sqlite
  history_days: 190
  endpoints:
{endpoints}
devices:
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
    return load_config(path, environ={"PLATFORM_TOKEN": "secret-token"})


def _records(n: int, *, device: str = "main-incomer", first: int = 0) -> list[IntervalRecord]:
    out = []
    for i in range(first, first + n):
        start = T0 + dt.timedelta(minutes=15 * i)
        end = start + dt.timedelta(minutes=15)
        out.append(
            IntervalRecord(
                "plant-a", "gw-01", device, "energy_import", "electricity",
                start.isoformat(), end.isoformat(),
                int(start.timestamp() * 1000), int(end.timestamp() * 1000),
                10.0 + i, "kWh", "good", 1.0,
            )
        )  # fmt: skip
    return out


def _uplink(loaded: LoadedConfig) -> PlatformUplink:
    assert loaded.site.uplink is not None
    return PlatformUplink(
        loaded.site.uplink,
        site=loaded.site.site,
        gateway=loaded.site.gateway,
        base=loaded.path.parent,
        backoff_min_s=0.02,
    )


@asynccontextmanager
async def _running(uplink: PlatformUplink) -> AsyncIterator[PlatformUplink]:
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done == {task}


async def _until(state: ReceiverState, what: str, pred: Callable[[ReceiverState], bool]) -> None:
    ok = await asyncio.to_thread(state.wait_for, pred, 10.0)
    assert ok, f"timed out waiting for {what}; received {len(state.received)}"


async def _settled(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll a condition of the uplink on the loop until true (the ack follows the answer)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # a poll interval, not a synchronisation


def _keys(state: ReceiverState) -> list[str]:
    """Interval keys of the acknowledged records, in the order they were accepted."""
    return [rec["dataKey"] for body in state.accepted() for rec in body["data"]]


def _answered(mode: str, n: int) -> Callable[[ReceiverState], bool]:
    return lambda s: sum(r.answered == mode for r in s.received) >= n


async def test_nothing_lost_order_kept_through_failures_rejections_and_timeouts(
    tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    loaded = _site(tmp_path, receivers[:1])
    recv = receivers[0].state
    recv.set_mode("fail")
    records = _records(10)
    uplink = _uplink(loaded)
    async with _running(uplink):
        uplink.record(records)
        await _until(recv, "two 503s", _answered("fail", 2))
        recv.set_mode("reject")
        await _until(recv, "a negative acknowledgement", _answered("reject", 1))
        recv.hold_s = 2.0
        recv.set_mode("timeout")
        # The second held request can only come after the client gave up on the first.
        await _until(recv, "a request resent after a timeout", _answered("timeout", 2))
        recv.set_mode("ok")
        await _until(recv, "all ten acknowledged", lambda s: len(_keys(s)) >= 10)
        await _settled(lambda: uplink.store.depth("platform-0") == 0, "the queue to empty")

        # The same interval again (e.g. `partial` after a restart): the same key, sent again.
        again = IntervalRecord(**{**records[3].__dict__, "value": 99.0, "flags": "partial"})
        uplink.record([again])
        await _until(recv, "the resent interval", lambda s: len(_keys(s)) >= 11)

    keys = _keys(recv)
    assert keys == [r.key for r in records] + [records[3].key]  # nothing lost, in order
    last = [rec for body in recv.accepted() for rec in body["data"]][-1]
    assert (last["value"], last["flags"]) == (99.0, "partial")
    # Every request body carried whole batches of at most 3, oldest first, with the token.
    assert all(len(r.body["data"]) <= 3 for r in recv.received)
    assert {r.authorization for r in recv.received} == {"Bearer secret-token"}
    # The failed batches were the same records, resent: their keys repeat, never reorder.
    first_keys = [rec["dataKey"] for rec in recv.received[0].body["data"]]
    assert first_keys == [r.key for r in records[:3]]
    assert uplink.senders[0].stats.failures >= 4


async def test_two_endpoints_are_independent(
    tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    loaded = _site(tmp_path, receivers)
    down, up = receivers[0].state, receivers[1].state
    down.set_mode("fail")
    records = _records(7)
    uplink = _uplink(loaded)
    async with _running(uplink):
        uplink.record(records)
        await _until(up, "the healthy endpoint to get all 7", lambda s: len(_keys(s)) >= 7)
        assert _keys(down) == []
        await _settled(lambda: uplink.store.depth("platform-1") == 0, "the healthy queue empty")
        assert uplink.store.depth("platform-0") == 7
        down.set_mode("ok")
        await _until(down, "the recovered endpoint to catch up", lambda s: len(_keys(s)) >= 7)
    assert _keys(down) == _keys(up) == [r.key for r in records]


async def test_queue_survives_a_restart(tmp_path: Path, receivers: list[PlatformReceiver]) -> None:
    loaded = _site(tmp_path, receivers[:1])
    recv = receivers[0].state
    recv.set_mode("fail")
    records = _records(5)
    first = _uplink(loaded)
    async with _running(first):
        first.record(records)
        await _until(recv, "a failed attempt", _answered("fail", 1))
    first.store.close()  # the agent stops; the queue is on disk

    recv.set_mode("ok")
    second = _uplink(loaded)  # a new process would open the same file
    assert second.store.depth("platform-0") == 5
    async with _running(second):
        second.record(_records(2, first=5))
        await _until(recv, "everything after the restart", lambda s: len(_keys(s)) >= 7)
    assert _keys(recv) == [r.key for r in records + _records(2, first=5)]
    assert len(second.store.history(0, 2**62)) == 7


class _Collect:
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def send(self, suffix: str, doc: Any, *, device: str = "", readings: int = 1) -> int:
        self.docs.append(dict(doc))
        return len(self.docs)


async def test_energy_stage_intervals_reach_the_platform_in_the_template_format(
    tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    loaded = _site(tmp_path, receivers[:1], batch=50)
    collect = _Collect()
    stages: list[Any] = []
    outlet = with_uplink(loaded, collect, stages)
    (uplink,) = stages
    (energy,) = build_energy_stages(loaded, outlet)
    specs = (PointSpec("energy_import", "kWh"),)
    # One poll a minute for an hour: 0.5 kWh a minute.
    for k in range(62):
        ts = T0 + dt.timedelta(minutes=k)
        energy.observe(Poll("main-incomer", int(ts.timestamp() * 1e9), specs, [100.0 + 0.5 * k]))
    intervals = [d for d in collect.docs if d["type"] == "interval"]
    assert len(intervals) == 4  # forwarded to the agent's outlet unchanged
    recv = receivers[0].state
    async with _running(uplink):
        await _until(recv, "four intervals", lambda s: len(_keys(s)) >= 4)
    (body,) = recv.accepted()
    assert (body["unitCode"], body["gatewayId"], body["count"]) == ("plant-a", "gw-01", 4)
    data = body["data"]
    assert [d["statStart"] for d in data] == [
        (T0 + dt.timedelta(minutes=15 * i)).isoformat() for i in range(4)
    ]
    assert [d["value"] for d in data] == [
        d["points"]["interval.energy_import"]["value"] for d in intervals
    ]
    assert data[1]["value"] == pytest.approx(7.5)
    assert data[0]["dataKey"] == "plant-a/gw-01/main-incomer/energy_import/" + T0.isoformat()
    assert {d["manual"] for d in data} == {False}


async def test_manual_entries_are_sent_flagged_and_history_exports_to_csv(
    tmp_path: Path, receivers: list[PlatformReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _site(tmp_path, receivers[:1])
    monkeypatch.setenv("PLATFORM_TOKEN", "secret-token")
    entries = tmp_path / "manual.csv"
    entries.write_text(
        "device,counter,kind,start,end,value,unit\n"
        "plant,production_output,production,2026-11-01T00:00,2026-11-02T00:00,120.5,t\n"
        "boiler-house,unmetered_coal,raw_coal,2026-11-01T00:00,2026-11-02T00:00,3.2,t\n",
        encoding="utf-8",
    )
    assert main(["uplink", "manual", str(loaded.path), str(entries)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("device,counter,kind,start,end,value,unit\nx,y,z,2026-11-02,2026-11-01,1,t\n")
    assert main(["uplink", "manual", str(loaded.path), str(bad)]) == 2

    uplink = _uplink(loaded)
    uplink.record(_records(2))  # measured, beside the manual ones
    recv = receivers[0].state
    async with _running(uplink):
        await _until(recv, "manual and measured", lambda s: len(_keys(s)) >= 4)
    sent = [rec for body in recv.accepted() for rec in body["data"]]
    assert [(d["item"], d["manual"], d["value"]) for d in sent[:2]] == [
        ("production_output", True, 120.5),
        ("unmetered_coal", True, 3.2),
    ]
    assert sent[0]["statStart"] == "2026-11-01T00:00:00+08:00"  # local time from energy:
    uplink.store.close()

    out = tmp_path / "nov.csv"
    args = ["uplink", "export", str(loaded.path), "--from", "2026-11-01", "--to", "2026-11-02"]
    assert main([*args, "--out", str(out)]) == 0
    with out.open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    # By interval start, then key: the manual day entries start with the first interval.
    assert [(r["device"], r["counter"], r["manual"]) for r in rows] == [
        ("boiler-house", "unmetered_coal", "1"),
        ("main-incomer", "energy_import", "0"),
        ("plant", "production_output", "1"),
        ("main-incomer", "energy_import", "0"),
    ]
    assert rows[1]["key"] == _records(1)[0].key
    assert len(rows) == 4


def test_history_is_kept_for_the_configured_days_then_pruned(tmp_path: Path) -> None:
    store = UplinkStore(tmp_path / "u.sqlite", ["a"])
    records = _records(3)
    store.add(records)
    end_ms = records[-1].end_ms
    assert store.prune(190, now_ms=end_ms + 189 * 86_400_000) == 0
    assert store.prune(190, now_ms=records[0].end_ms + 191 * 86_400_000) == 3
    assert store.history(0, 2**62) == []
    assert store.depth("a") == 3  # unsent records stay queued whatever their age


class _Outlet:
    """Keeps what the uplink publishes (the agent's Outlet puts it in the outbox)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(self, suffix: str, doc: Any, *, device: str = "", readings: int = 1) -> int:
        self.sent.append((suffix, dict(doc), device))
        return len(self.sent)


@pytest.mark.looptime
async def test_idle_senders_do_not_wake_until_another_process_queues_entries(
    tmp_path: Path, receivers: list[PlatformReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing queued: the senders wait without a timer; the file is looked at every
    idle_check_s (30 s) at multiples on the loop's clock, and a commit of `uplink manual`
    wakes them."""
    loaded = _site(tmp_path, receivers)
    monkeypatch.setenv("PLATFORM_TOKEN", "secret-token")
    assert loaded.site.uplink is not None
    outlet = _Outlet()
    uplink = PlatformUplink(
        loaded.site.uplink, site="plant-a", gateway="gw-01", base=loaded.path.parent,
        outlet=outlet,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    looked: list[tuple[float, str]] = []
    pending = uplink.store.pending

    def pending_counted(endpoint: str, limit: int) -> list[tuple[int, IntervalRecord]]:
        looked.append((loop.time(), endpoint))
        return pending(endpoint, limit)

    uplink.store.pending = pending_counted  # type: ignore[method-assign]
    entries = tmp_path / "manual.csv"
    entries.write_text(
        "device,counter,kind,start,end,value,unit\n"
        "plant,cement,production,2026-11-01T00:00,2026-11-02T00:00,120.5,t\n",
        encoding="utf-8",
    )
    task = asyncio.create_task(uplink.run())
    try:
        await asyncio.sleep(600)
        assert looked == [(0.0, "platform-0"), (0.0, "platform-1")]  # once at the start
        await asyncio.sleep(5)  # t=605: another process queues an entry
        assert main(["uplink", "manual", str(loaded.path), str(entries)]) == 0
        await asyncio.sleep(24.9)
        assert len(looked) == 2 and outlet.sent == []
        await asyncio.sleep(0.2)  # t=630.1: seen at the next multiple of 30 s
        assert [s[1]["device"] for s in outlet.sent] == ["plant"]
        assert [e for t, e in looked[2:4] if t == 630.0] == ["platform-0", "platform-1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_manual_entries_are_published_once_on_the_energy_topic(
    tmp_path: Path, receivers: list[PlatformReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uplink manual` (another process) -> the agent publishes each entry once, so the
    ingest stores it and Grafana's overview lists it (tests/grafana/test_grafana_dashboards.py)."""
    loaded = _site(tmp_path, receivers[:1])
    monkeypatch.setenv("PLATFORM_TOKEN", "secret-token")
    entries = tmp_path / "manual.csv"
    entries.write_text(
        "device,counter,kind,start,end,value,unit\n"
        "plant,cement,production,2026-11-01T00:00,2026-11-02T00:00,120.5,t\n"
        "boiler-house,coal_in,raw_coal,2026-11-01T00:00,2026-11-02T00:00,3.2,t\n",
        encoding="utf-8",
    )
    assert loaded.site.uplink is not None
    outlet = _Outlet()
    uplink = PlatformUplink(
        loaded.site.uplink,
        site="plant-a",
        gateway="gw-01",
        base=loaded.path.parent,
        outlet=outlet,
        idle_check_s=0.05,
    )
    uplink.record(_records(1))  # measured: never announced
    async with _running(uplink):
        assert main(["uplink", "manual", str(loaded.path), str(entries)]) == 0
        await _settled(lambda: len(outlet.sent) >= 2, "the manual entries published")
    good = {"unit": "t", "quality": "good"}
    assert [(s, d["type"], d["device"], d["points"], dev) for s, d, dev in outlet.sent] == [
        ("energy", "manual", "plant", {"manual.cement": {"value": 120.5, **good}}, "plant"),
        ("energy", "manual", "boiler-house", {"manual.coal_in": {"value": 3.2, **good}},
         "boiler-house"),
    ]  # fmt: skip
    first = outlet.sent[0][1]
    assert first["ts_ms"] == int(T0.timestamp() * 1000) and first["flags"] == ["manual"]
    assert first["key"] == "plant-a/gw-01/plant/cement/2026-11-01T00:00:00+08:00"
    # Published once: a restarted agent does not publish them again.
    uplink.store.close()
    again = PlatformUplink(
        loaded.site.uplink, site="plant-a", gateway="gw-01", base=loaded.path.parent,
        outlet=outlet,
    )  # fmt: skip
    assert again.announce() == 0
    assert len(outlet.sent) == 2
    again.store.close()
    # A device name the ingest would refuse is refused at entry, with its line.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "device,counter,kind,start,end,value,unit\n锅炉房,coal,raw_coal,2026-11-01,2026-11-02,1,t\n"
    )
    assert main(["uplink", "manual", str(loaded.path), str(bad)]) == 2


def test_check_names_a_broken_template_or_ca_file_with_its_line(
    tmp_path: Path, receivers: list[PlatformReceiver]
) -> None:
    """`edge-agent check` (load_config) finds what would stop the uplink at start."""
    loaded = _site(tmp_path, receivers[:1])
    text = loaded.path.read_text()
    (tmp_path / "typo.yaml").write_text(
        'envelope: "{\\"data\\": [$records]}"\nrecord: "{\\"v\\": $valu}"\n'
    )
    (tmp_path / "not.pem").write_text("not a certificate\n")
    cases = {
        "missing.yaml": f"{tmp_path / 'missing.yaml'}: No such file or directory",
        "typo.yaml": f"{tmp_path / 'typo.yaml'}: record: unknown placeholder $valu",
    }
    for name, message in cases.items():
        loaded.path.write_text(text.replace(str(TEMPLATE), str(tmp_path / name)))
        with pytest.raises(ConfigError) as err:
            load_config(loaded.path, environ={"PLATFORM_TOKEN": "t"})
        assert str(err.value).splitlines()[0] == (
            f"{loaded.path}:8 uplink.endpoints[0].template: {message}"
        )
    loaded.path.write_text(text.replace(str(receivers[0].cert), str(tmp_path / "not.pem")))
    with pytest.raises(ConfigError) as err:
        load_config(loaded.path, environ={"PLATFORM_TOKEN": "t"})
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{loaded.path}:8 uplink.endpoints[0].ca_file: {tmp_path}/not.pem:")
    assert "NO_CERTIFICATE" in first


def test_days_go_only_to_endpoints_that_take_them_and_have_their_own_key(
    tmp_path: Path,
) -> None:
    store = UplinkStore(
        tmp_path / "u.sqlite", ["a", "b"], spans={"a": ("interval",), "b": ("interval", "day")}
    )
    interval = _records(1)[0]
    day = dataclasses.replace(interval, span="day", end=T0.replace(day=2).isoformat(), tce=1.5)
    manual = dataclasses.replace(interval, counter="cement", manual=True)
    store.add([interval, day, manual])
    assert (store.depth("a"), store.depth("b")) == (2, 3)
    assert [r.key for _, r in store.pending("a", 10)] == [interval.key, manual.key]
    assert [r.span for _, r in store.pending("b", 10)] == ["interval", "day", "interval"]
    assert day.key == f"plant-a/gw-01/main-incomer/energy_import/day/{T0.isoformat()}"
    assert interval.key == f"plant-a/gw-01/main-incomer/energy_import/{T0.isoformat()}"
    assert len(store.history(0, 2**62)) == 3  # the history keeps every span
    store.close()

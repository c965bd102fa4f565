"""Diagnosis tools against the simulators: read, probe, scan; and the log line formats.

The simulators serve real profiles (the same files the agent reads), so the test knows
each register's true type, order and scale and checks that `read` shows the served value
in the right order, that `probe` finds the profile's own type/order/scale from nothing but
the value, and that `scan` finds exactly the unit ids that are served on TCP, RTU over TCP
and RTU on a pseudo-terminal pair. The console script itself runs once per command in a
subprocess: the real entry point, arguments, exit codes and the progress bar on stderr.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus.codec import Order, PointType, Table
from drivers.modbus.config import ModbusProfile
from edge_agent.catalog import Kind, shipped
from edge_agent.diagnose.probe import find_candidates, rank, run_probe
from edge_agent.diagnose.read import ReadFailed, decode_orders, parse_address, run_read
from edge_agent.diagnose.scan import ProgressBar, parse_ids, scan_ids
from edge_agent.ops.log_format import HumanFormatter, JsonFormatter
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PROFILES = shipped(Kind.PROFILES)
CHINT = load_profile(PROFILES / "chint-dtsu666.yaml")
SDM630 = load_profile(PROFILES / "eastron-sdm630.yaml")


def _point(profile: ModbusProfile, name: str) -> tuple[int, PointType, Order, float]:
    p = next(p for p in profile.points if p.name == name)
    order = p.order or profile.order
    assert p.type is not None and order is not None
    return p.address, p.type, order, p.scale


@asynccontextmanager
async def _meters(url: str, ids: Sequence[int] = (1, 3)) -> AsyncIterator[SimSite]:
    specs = [SimDeviceSpec(name=f"m{i}", url=url, profile=CHINT, device_id=i, seed=i) for i in ids]
    async with serve(specs) as sim:
        for i in ids:
            sim.device(f"m{i}").freeze()
        yield sim


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", *args],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        # Decoded by hand: text mode would turn the progress bar's \r into \n.
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    return await asyncio.to_thread(run)


async def test_read_shows_the_served_value_in_the_right_order() -> None:
    async with _meters("tcp://127.0.0.1:0") as sim:
        meter = sim.device("m1")
        address, point_type, order, scale = _point(CHINT, "voltage_a")
        served = meter.served_values()["voltage_a"]
        lines = await run_read(meter.url, address, point_type=point_type, scale=scale)
        assert lines[0].startswith(f"{meter.url} id 1, holding {address} (0x2006), 2 registers: ")
        assert lines[1] == "order  float32 × 0.1"
        by_order = dict(line.split(None, 1) for line in lines[2:])
        assert list(by_order) == ["ABCD", "BADC", "CDAB", "DCBA"]
        assert float(by_order[str(order)]) == pytest.approx(served, rel=1e-7)
        assert all(abs(float(v) - served) > 1 for o, v in by_order.items() if o != str(order))

        # Through the console script: same lines, exit 0; a silent id: exit 1 and why.
        done = await _cli("read", meter.url, "0x2006", "--type", "float32", "--scale", "0.1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == lines
        silent = await _cli("read", meter.url, "0x2006", "--device-id", "9", "--timeout", "0.3")
        assert silent.returncode == 1
        assert "exception 11 (gateway target failed to respond)" in silent.stderr


async def test_read_every_type_and_table_and_failures() -> None:
    async with _meters("tcp://127.0.0.1:0", ids=(1,)) as sim:
        url = sim.device("m1").url
        # Input registers mirror nothing here: exception 02 is the answer, shown as such.
        with pytest.raises(ReadFailed, match="exception 02"):
            await run_read(url, 0x2006, point_type=PointType.FLOAT32, table=Table.INPUT)
        lines = await run_read(url, 0x2006, point_type=PointType.UINT16)
        raw = int(lines[0].rsplit(" ", 1)[1], 16)
        # One register has no word order: only the byte orders that differ are shown.
        assert [line.split() for line in lines[2:]] == [
            ["ABCD", str(raw)],
            ["BADC", str(int.from_bytes(raw.to_bytes(2, "big"), "little"))],
        ]
    with pytest.raises(ReadFailed, match="connection refused"):
        await run_read(f"tcp://127.0.0.1:{free_port()}", 0, point_type=PointType.UINT16)


async def test_read_count_and_poll_like_mbpoll() -> None:
    async with _meters("tcp://127.0.0.1:0", ids=(1,)) as sim:
        meter = sim.device("m1")
        served = meter.served_values()
        lines = await run_read(meter.url, 0x2006, point_type=PointType.FLOAT32, scale=0.1, count=3)
        assert lines[0].startswith(f"{meter.url} id 1, holding 8198 (0x2006), 6 registers: ")
        assert lines[1].split() == [
            "address",
            "ABCD",
            "BADC",
            "CDAB",
            "DCBA",
            "(float32",
            "×",
            "0.1)",
        ]
        rows = [line.split() for line in lines[2:]]
        assert [r[:2] for r in rows] == [
            ["8198", "(0x2006)"],
            ["8200", "(0x2008)"],
            ["8202", "(0x200A)"],
        ]
        for row, name in zip(rows, ("voltage_a", "voltage_b", "voltage_c"), strict=True):
            assert float(row[2]) == pytest.approx(served[name], rel=1e-7)
        words = await run_read(meter.url, 0x2006, point_type=PointType.UINT16, count=2)
        assert words[1].split() == ["address", "ABCD", "BADC", "(uint16)"]
        with pytest.raises(ValueError, match="--count 70 needs 140 registers from 8198"):
            await run_read(meter.url, 0x2006, point_type=PointType.FLOAT32, count=70)

        done = await _cli("read", meter.url, "0x2006", "--type", "float32", "--poll", "0.05",
                          "--polls", "3")  # fmt: skip
        assert done.returncode == 0, done.stderr
        heads = [line for line in done.stdout.splitlines() if line.startswith("-- poll ")]
        assert [h.split()[2] for h in heads] == ["1", "2", "3"]
        assert done.stdout.count("ABCD   ") == 3
    # Polling goes on through failures and says why; exit 1 when nothing answered.
    dead = f"tcp://127.0.0.1:{free_port()}"
    done = await _cli("read", dead, "0", "--poll", "0.05", "--polls", "2")
    assert done.returncode == 1
    assert done.stdout.count(f"{dead}: connection refused") == 2


def test_decode_orders_and_addresses() -> None:
    # 230.5 as float32 ABCD: 0x4366 0x8000 (the codec's docstring example).
    values = {v.order: v.value for v in decode_orders([0x4366, 0x8000], PointType.FLOAT32)}
    assert values[Order.ABCD] == 230.5
    assert values[Order.CDAB] != 230.5
    bcd = decode_orders([0x12AB], PointType.BCD16)
    assert bcd[0].error is not None and bcd[0].value is None
    scaled = decode_orders([2305], PointType.UINT16, scale=0.1)
    assert scaled[0].value == 230.5  # divided by 10, not multiplied by 0.1
    assert parse_address("0x2006") == 8198 and parse_address("40") == 40
    with pytest.raises(ValueError):
        parse_address("70000")


async def test_probe_finds_the_profiles_type_order_and_scale() -> None:
    async with _meters("tcp://127.0.0.1:0", ids=(1,)) as sim:
        meter = sim.device("m1")
        for name in ("voltage_a", "current_a", "frequency"):
            address, point_type, order, scale = _point(CHINT, name)
            served = meter.served_values()[name]
            # The engineer knows the value only roughly.
            _, found = await run_probe(meter.url, address, expected=round(served))
            best = found[0]
            assert (best.table, best.point_type, best.order, best.scale) == (
                Table.HOLDING,
                point_type,
                order,
                scale,
            ), name
            assert best.value == pytest.approx(served, rel=1e-7)

        done = await _cli("probe", meter.url, "0x2006", "--expect", "230")
        assert done.returncode == 0, done.stderr
        out = done.stdout.splitlines()
        assert out[-1] == "profile point: {address: 0x2006, type: float32, order: ABCD, scale: 0.1}"
        header = next(i for i, line in enumerate(out) if line.startswith("table"))
        assert out[header + 1].split()[:4] == ["holding", "float32", "ABCD", "0.1"]
        # Nothing near a value this far off.
        missing = await _cli(
            "probe", meter.url, "0x2006", "--expect", "-7777", "--table", "holding"
        )
        assert missing.returncode == 1
        assert "nothing reads within 5% of -7777" in missing.stdout


async def test_probe_word_swapped_and_integer_registers() -> None:
    # The SDM630 keeps floats; the word-swapped and scaled-integer readings come from the
    # pure matcher, on registers with a known meaning.
    cdab = find_candidates([0x8000, 0x4366], 230, table=Table.HOLDING, tolerance=0.01)
    assert (rank(cdab)[0].point_type, rank(cdab)[0].order) == (PointType.FLOAT32, Order.CDAB)
    scaled = rank(find_candidates([2305], 230, table=Table.INPUT, tolerance=0.01))
    assert [(c.point_type, c.scale, c.value) for c in scaled[:2]] == [
        (PointType.UINT16, 0.1, 230.5),
        (PointType.INT16, 0.1, 230.5),
    ]
    assert scaled[0].profile_point(7) == "{table: input, address: 0x0007, type: uint16, scale: 0.1}"
    async with serve([SimDeviceSpec(name="s", url="tcp://127.0.0.1:0", profile=SDM630)]) as sim:
        sim.device("s").freeze()
        address, point_type, order, _ = _point(SDM630, "voltage_a")
        served = sim.device("s").served_values()["voltage_a"]
        _, found = await run_probe(sim.device("s").url, address, expected=served, tolerance=0.001)
        # Measurements are input registers: the holding table answers exception 02 there.
        assert (found[0].table, found[0].point_type, found[0].order) == (
            Table.INPUT,
            point_type,
            order,
        )


async def test_probe_says_when_a_reading_splices_two_values() -> None:
    """Issue 18.3: one register past a float's start (a 1-based address), the word-swapped
    reading pairs the float's low word with the next float's high word."""
    async with _meters("tcp://127.0.0.1:0", ids=(1,)) as sim:
        meter = sim.device("m1")
        served = meter.served_values()["voltage_a"]  # float32 ABCD × 0.1 at 0x2006-0x2007
        lines, found = await run_probe(meter.url, 0x2007, expected=round(served))
        assert (found[0].point_type, found[0].order) == (PointType.FLOAT32, Order.CDAB)
        header = next(i for i, line in enumerate(lines) if line.startswith("table"))
        assert lines[header + 1].endswith("  *")
        assert lines[-2] == (
            "* may splice two values: register 8199 (0x2007) is the second word of 8198 "
            f"(0x2006), which reads {served:.9g} as holding float32 ABCD × 0.1; a "
            "multi-register reading at 8199 joins it to 8200. Was the address 1-based?"
        )
        assert lines[-1] == (
            "profile point: {address: 0x2006, type: float32, order: ABCD, scale: 0.1} "
            "(starting one register earlier), or {address: 0x2007, type: float32, "
            "order: CDAB, scale: 0.1} if the value starts at 8199"
        )
        # At the float's own start nothing is marked.
        lines, _ = await run_probe(meter.url, 0x2006, expected=round(served))
        assert not any(line.endswith("*") or line.startswith("*") for line in lines)
        assert lines[-1] == (
            "profile point: {address: 0x2006, type: float32, order: ABCD, scale: 0.1}"
        )


async def test_scan_finds_the_served_ids_on_tcp_and_rtu_over_tcp() -> None:
    for url in ("tcp://127.0.0.1:0", "rtu+tcp://127.0.0.1:0"):
        async with _meters(url, ids=(1, 3, 7)) as sim:
            target = sim.device("m1").url
            progress: list[tuple[int, int]] = []

            def seen(done: int, device_id: int, _hits: object, into: list[Any] = progress) -> None:
                into.append((done, device_id))

            hits = await scan_ids(target, range(1, 9), address=0x2000, timeout_s=0.1, progress=seen)
            assert [h.device_id for h in hits] == [1, 3, 7], url
            assert all(h.answer.startswith("registers ") for h in hits)
            assert progress == [(i, i) for i in range(1, 9)]

    async with _meters("rtu+tcp://127.0.0.1:0", ids=(2, 5)) as sim:
        done = await _cli(
            "scan", sim.device("m2").url, "--ids", "1-6", "--timeout", "0.1", "--address", "0x2000"
        )
        assert done.returncode == 0, done.stderr
        assert [line.split()[0] for line in done.stdout.splitlines()] == ["id", "2", "5"]
        # The bar: redrawn in place on stderr, ending full.
        assert done.stderr.endswith("\n")
        final = done.stderr.rstrip("\n").rsplit("\r", 1)[1]
        assert final.startswith("scan [" + "#" * 30 + "] 6/6  id 6  found 2")


async def test_scan_a_serial_line(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    async with _meters(f"rtu://{server_end}?baudrate=19200", ids=(4, 6)):
        hits = await scan_ids(f"rtu://{client_end}?baudrate=19200", parse_ids("1-8"), timeout_s=0.1)
    # Register 0 is in no point of the profile: the units answer exception 02, still there.
    assert [(h.device_id, h.answer) for h in hits] == [
        (4, "exception 02 (illegal data address)"),
        (6, "exception 02 (illegal data address)"),
    ]


async def test_scan_of_nothing() -> None:
    port = free_port()
    done = await _cli("scan", f"tcp://127.0.0.1:{port}", "--ids", "1-3", "--timeout", "0.1")
    assert done.returncode == 1
    assert "connection refused" in done.stderr
    bad = await _cli("scan", "ftp://x", "--ids", "1")
    assert bad.returncode == 2 and "unknown scheme 'ftp'" in bad.stderr
    with pytest.raises(ValueError):
        parse_ids("5-1")
    assert parse_ids("1,3,10-12,3") == [1, 3, 10, 11, 12]


async def test_another_protocols_url_is_named_before_its_address_is_read() -> None:
    # An OPC UA node id is no register number: the answer names the right tool instead.
    ua = await _cli("read", "opc.tcp://127.0.0.1:4840", "ns=2;s=Tank1.Temperature")
    assert ua.returncode == 2 and ua.stdout == ""
    assert ua.stderr.splitlines()[-1] == (
        "edge-agent read: error: argument url: 'opc.tcp://127.0.0.1:4840': read, probe, scan "
        "and write speak Modbus; for OPC UA use asyncua's uaread -u URL -n NODE and "
        "uals -u URL -l -d 2 (installed with edge-agent), or a device with its point in a "
        "site file: edge-agent plan"
    )
    s7 = await _cli("scan", "S7://10.0.0.1")
    assert s7.returncode == 2 and "speak Modbus; for Siemens S7" in s7.stderr
    assert "Traceback" not in ua.stderr + s7.stderr


def test_progress_bar_draws_in_place() -> None:
    out = io.StringIO()
    bar = ProgressBar(4, out=out)
    bar.update(1, "id 1")
    bar.update(2, "id 2")  # within 0.1 s of the last draw: skipped
    bar.update(4, "id 4")  # the last one always draws
    bar.finish()
    frames = out.getvalue().split("\r")[1:]
    assert [f.split("]")[1].split()[0] for f in frames] == ["1/4", "4/4"]
    assert frames[-1].startswith("scan [" + "#" * 30 + "]") and frames[-1].endswith("\n")


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "edge_agent.runtime.poller", logging.WARNING, __file__, 1, msg, args, exc_info
    )


def test_log_lines_are_one_per_event() -> None:
    human = HumanFormatter().format(_record("config not reloaded:\n%s", "a.yaml:1 x\na.yaml:2 y"))
    assert "\n" not in human
    assert human.endswith(
        "WARNING edge_agent.runtime.poller: config not reloaded: | a.yaml:1 x | a.yaml:2 y"
    )
    line = JsonFormatter().format(_record("meter-%d: no answer (%s)", 1, "timeout", exc=True))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "edge_agent.runtime.poller"
    assert doc["msg"] == "meter-1: no answer (timeout)"
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == len("2026-05-01T12:00:00.123Z")
    assert "RuntimeError: boom" in doc["exc"]


async def _run_agent_logs(site: Path, *flags: str, http: str) -> tuple[int | None, list[str]]:
    """Start `edge-agent run`, wait for the status-page line and a device warning, stop it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", *flags, "run", str(site), "--http", http,
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not (
                any("/healthz on http://127.0.0.1:" in x for x in lines)
                and any("no answer (connection refused)" in x for x in lines)
            ):
                line = await proc.stderr.readline()
                if not line:
                    break  # exited
                lines.append(line.decode().rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.terminate()
        rest = await asyncio.wait_for(proc.stderr.read(), 20)
        await asyncio.wait_for(proc.wait(), 20)
    lines.extend(x for x in rest.decode().splitlines() if x)
    return proc.returncode, lines


def _site_without_peers(tmp_path: Path, *, broker: str | None = None) -> Path:
    site = tmp_path / "site.yaml"
    broker = broker or f"mqtt://127.0.0.1:{free_port()}"
    site.write_text(
        f'site: s\ngateway: g\nmqtt: {{url: "{broker}"}}\n'
        "outbox: {path: var/outbox.sqlite}\n"
        f"devices:\n  - {{name: meter, driver: modbus, url: 'tcp://127.0.0.1:{free_port()}', "
        "profile: chint-dtsu666, interval_s: 0.1}\n"
    )
    return site


async def test_run_logs_one_json_object_per_line_with_the_flag(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # A real broker, so the agent stops at once (nothing waits for acknowledgements).
    site = _site_without_peers(tmp_path, broker=mosquitto.url)
    code, lines = await _run_agent_logs(site, "--log-json", http="127.0.0.1:0")
    assert code == 0, lines
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(d) >= {"ts", "level", "logger", "msg"} for d in docs)
    warning = next(d for d in docs if "no answer" in d["msg"])
    assert warning == {
        "ts": warning["ts"],
        "level": "WARNING",
        "logger": "edge_agent.runtime.poller",
        "msg": "meter: no answer (connection refused); retrying with backoff up to 30 s",
        "priority": 4,
    }

    code, lines = await _run_agent_logs(site, http="127.0.0.1:0")
    assert code == 0, lines
    warning_line = next(line for line in lines if "no answer" in line)
    assert warning_line.split(" ", 2)[2] == (
        "WARNING edge_agent.runtime.poller: meter: no answer (connection refused); "
        "retrying with backoff up to 30 s"
    )


async def test_run_refuses_a_busy_http_port(tmp_path: Path) -> None:
    site = _site_without_peers(tmp_path)
    busy = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        port = busy.sockets[0].getsockname()[1]
        done = await _cli("run", str(site), "--http", f"127.0.0.1:{port}")
    finally:
        busy.close()
        await busy.wait_closed()
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--http): address already in use" in (
        done.stderr.lower()
    )


async def test_read_probe_and_scan_take_addresses_as_manuals_print_them() -> None:
    """--addressing one_based / modicon name the register a site file's `addressing:` does;
    a 0-based number that looks like Modicon is read as typed, with a note."""
    async with _meters("tcp://127.0.0.1:0", ids=(1,)) as sim:
        meter = sim.device("m1")
        served = meter.served_values()["voltage_a"]
        args = ("--type", "float32", "--scale", "0.1")
        plain = await _cli("read", meter.url, "0x2006", *args)
        assert plain.returncode == 0, plain.stderr
        for address, addressing in (
            ("8199", "one_based"),
            ("48199", "modicon"),
            ("408199", "modicon"),
        ):
            done = await _cli("read", meter.url, address, *args, "--addressing", addressing)
            assert (done.returncode, done.stdout, done.stderr) == (0, plain.stdout, "")
        typed = await _cli("read", meter.url, "40001", "--timeout", "0.3")
        assert typed.stderr.splitlines()[0] == (
            "note: 40001 is read counting from 0 (holding 40001, 0x9C41); if the manual "
            "prints Modicon numbers, --addressing modicon reads holding 0"
        )
        wrong = await _cli("read", meter.url, "25000", "--addressing", "modicon")
        assert wrong.returncode == 2 and "25000 is not a Modicon number" in wrong.stderr
        clash = await _cli(
            "read", meter.url, "48199", "--addressing", "modicon", "--table", "input"
        )
        assert clash.returncode == 2
        assert "48199 is a holding register in Modicon notation, but table is input" in clash.stderr

        probe = await _cli(
            "probe", meter.url, "48199", "--addressing", "modicon", "--expect", f"{served:.1f}"
        )
        assert probe.returncode == 0, probe.stderr
        assert "profile point: {address: 0x2006, type: float32, order: ABCD, scale: 0.1}" in (
            probe.stdout
        )
        assert all(" input " not in line for line in probe.stdout.splitlines())
        scan = await _cli("scan", meter.url, "--ids", "1-2", "--addressing", "modicon",
                          "--address", "48199", "--timeout", "0.3")  # fmt: skip
        assert scan.returncode == 0, scan.stderr
        assert [line.split()[0] for line in scan.stdout.splitlines()[1:]] == ["1"]

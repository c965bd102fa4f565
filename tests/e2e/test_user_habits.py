"""What users of other collectors bring (issue 18.5): their type and order names, a serial
adapter that is not plugged in, `journalctl -p err` on JSON logs, crashes as one JSON line.

The config errors are golden (tests/configs/invalid/foreign-type-names); here the names we
accept, the command line, and the log lines of real processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.modbus.codec import Order, PointType, Table
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile, parse_endpoint
from drivers.modbus.connection import ModbusConnection
from drivers.reading import DeviceUnreachable
from edge_agent.catalog import Kind, shipped
from edge_agent.ops.log_format import JsonFormatter, syslog_priority
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.server_process import free_port

CHINT = load_profile(shipped(Kind.PROFILES) / "chint-dtsu666.yaml")

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def test_our_type_and_order_names_in_any_case_are_accepted() -> None:
    point = ModbusPoint.model_validate(
        {"name": "v", "address": 0, "type": "FLOAT32", "order": "cdab"}
    )
    assert (point.type, point.order) == (PointType.FLOAT32, Order.CDAB)
    padded = ModbusPoint.model_validate({"name": "v", "address": 0, "type": " Int16 "})
    assert padded.type is PointType.INT16
    profile = ModbusProfile.model_validate(
        {"order": "badc", "points": [{"name": "v", "address": 0}]}
    )
    assert profile.order is Order.BADC
    device = ModbusDevice.model_validate(
        {"name": "m", "driver": "modbus", "url": "tcp://h:502", "profile": "p", "order": "Dcba"}
    )
    assert device.order is Order.DCBA


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_read_takes_other_collectors_type_names_or_names_ours() -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    done = _cli("read", dead, "0", "--type", "FLOAT32", "--timeout", "0.3")
    assert (done.returncode, done.stderr) == (1, f"{dead}: connection refused\n")
    done = _cli("read", dead, "0", "--type", "32float")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "edge-agent read: error: argument --type: unknown type '32float': write float32"
    )
    done = _cli("read", dead, "0", "--type", "bit")
    assert done.returncode == 2 and "read a bit's register as uint16" in done.stderr
    assert "<PointType" not in done.stderr


def test_a_missing_serial_adapter_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    done = _cli("read", f"rtu://{missing}", "0")
    assert (done.returncode, done.stderr) == (
        1,
        f"rtu://{missing}: no such serial device: {missing}\n",
    )


async def test_the_agent_reports_a_missing_serial_adapter_as_its_reason(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    line = ModbusConnection(
        parse_endpoint(f"rtu://{missing}?baudrate=9600"), name="bus", timeout_s=1
    )
    with pytest.raises(DeviceUnreachable) as info:
        await line.connect()
    assert info.value.reason == f"no such serial device: {missing}"


def test_json_lines_carry_the_syslog_priority() -> None:
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [syslog_priority(x) for x in levels] == [7, 6, 4, 3, 2]
    record = logging.LogRecord("edge_agent.x", logging.ERROR, __file__, 1, "bad %s", ("x",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["msg"], doc["level"], doc["priority"]) == ("bad x", "ERROR", 3)


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        f'site: s\ngateway: g\nmqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}\n'
        "outbox: {path: var/outbox.sqlite}\n"
        f"devices:\n  - {{name: meter, driver: modbus, url: 'tcp://127.0.0.1:{free_port()}', "
        "profile: chint-dtsu666, interval_s: 0.1}\n"
    )
    return site


async def test_under_journald_every_line_starts_with_its_priority(tmp_path: Path) -> None:
    """stderr is "the journal" when JOURNAL_STREAM names its device and inode (systemd)."""
    log_path = tmp_path / "journal-stream"
    with log_path.open("wb") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "edge_agent", "--log-json", "run", str(_site(tmp_path))),
            "--http", "off", cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stream, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while "no answer" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.05)  # polling the file, bounded by the deadline
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
    lines = log_path.read_text().splitlines()
    assert lines
    for line in lines:
        prefix, brace, rest = line.partition(">{")
        assert prefix.startswith("<") and brace, line
        doc = json.loads("{" + rest)
        level = logging.getLevelNamesMapping()[doc["level"]]
        assert int(prefix[1:]) == doc["priority"] == syslog_priority(level)
    warning = next(line for line in lines if "no answer" in line)
    assert warning.startswith('<4>{"ts":')


def test_a_crash_with_json_logs_is_one_json_line(tmp_path: Path) -> None:
    code = (
        "from edge_agent.ops.log_format import configure_logging\n"
        "configure_logging('INFO', json_lines=True)\n"
        "def fail():\n"
        "    raise RuntimeError('boom')\n"
        "fail()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    doc = json.loads(lines[0])
    assert (doc["level"], doc["priority"]) == ("CRITICAL", 2)
    assert doc["msg"] == "stopped by an unexpected error: boom"
    assert doc["exc"].startswith("Traceback") and doc["exc"].endswith("RuntimeError: boom")
    assert "in fail" in doc["exc"]


@pytest.mark.parametrize("parity", ["E", "O", "N"])
async def test_an_rtu_line_on_a_pty_opens_with_any_parity_start_after_start(
    serial_pair: tuple[str, str], parity: str
) -> None:
    """socat bridges and virtual COM ports are ptys: 8E1, Modbus RTU's default, must open,
    also on the second start, when the pty already holds every setting but parity."""
    sim_tty, agent_tty = serial_pair
    url = f"rtu://{sim_tty}?baudrate=9600&parity={parity}"
    spec = SimDeviceSpec(name="m1", url=url, profile=CHINT, device_id=1, seed=1)
    async with serve([spec]) as sim:
        sim.device("m1").freeze()
        for start in range(3):
            line = ModbusConnection(
                parse_endpoint(f"rtu://{agent_tty}?baudrate=9600&parity={parity}"),
                name="bus",
                timeout_s=1,
            )
            await line.connect()
            answer = await line.read(Table.HOLDING, 0x2006, 2, device_id=1)
            line.close()
            assert isinstance(answer, bytes) and len(answer) == 4, (start, answer)

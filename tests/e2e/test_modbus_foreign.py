"""Our Modbus stack beside another vendor's: libmodbus (Debian's libmodbus-dev, in C).

Our simulators and our driver were written together, so a mistake both share (a word order
read backwards, a frame detail) passes every test that pairs them. Here each side meets
libmodbus instead: the agent polls and writes a libmodbus server (TCP, and RTU on a serial
line), and a libmodbus client reads our simulator (TCP and RTU). The two small C programs
live in tests/foreign/modbus/ and are compiled once per run with the machine's gcc; the
register image the server holds is written out word by word in server.c.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.modbus.codec import Order, PointType
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber, publish_once
from tests.running_agent import running
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

SOURCES = Path(__file__).resolve().parents[1] / "foreign" / "modbus"
HEADERS = Path("/usr/include/modbus")
PROFILES = shipped(Kind.PROFILES)

# What server.c holds, as the agent must publish it.
EXPECTED = {
    "f_abcd": 230.5,
    "f_cdab": 50.25,
    "i16": -5,
    "u16": 4321,
    "u32": 123456789,
    "i32": -1234567,
    "f_badc": 1.5,
    "f_dcba": -7.25,
    "in_f": 12.5,
    "in_v": 220.5,
    "run": True,
    "door": True,
}
POINTS = """\
      - {name: f_abcd, address: 0, type: float32, order: ABCD}
      - {name: f_cdab, address: 2, type: float32, order: CDAB}
      - {name: i16, address: 4, type: int16}
      - {name: u16, address: 5, type: uint16}
      - {name: u32, address: 6, type: uint32}
      - {name: i32, address: 8, type: int32}
      - {name: f_badc, address: 10, type: float32, order: BADC}
      - {name: f_dcba, address: 12, type: float32, order: DCBA}
      - {name: in_f, table: input, address: 0, type: float32}
      - {name: in_v, table: input, address: 2, type: uint16, scale: 0.1, unit: V}
      - {name: run, table: coil, address: 5, write: {}}
      - {name: door, table: discrete, address: 3}
      - {name: setpoint, address: 100, type: float32, order: CDAB, write: {min: 0, max: 50}}
      - {name: past_the_map, address: 200, type: uint16}
"""


@pytest.fixture(scope="session")
def libmodbus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """server and client, compiled against Debian's libmodbus (scripts/test installs it)."""
    if not (HEADERS / "modbus.h").exists() or shutil.which("gcc") is None:
        reason = "libmodbus-dev and gcc are needed (scripts/test installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("libmodbus")
    built = {}
    for name in ("server", "client"):
        source, binary = SOURCES / f"{name}.c", out / name
        subprocess.run(
            [
                "gcc",
                "-O1",
                "-Wall",
                "-Werror",
                "-o",
                str(binary),
                str(source),
                "-I",
                str(HEADERS),
                "-lmodbus",
            ],
            check=True,
            timeout=60,
        )
        built[name] = out / name
    return built


class ForeignServer:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # until it listens or dies; the test timeout bounds it
        assert line.startswith("listening"), (line, self.proc.stderr and self.proc.stderr.read())
        self.listening = line.split()[1]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


@pytest.fixture
def foreign_tcp(libmodbus: dict[str, Path]) -> Iterator[ForeignServer]:
    server = ForeignServer([str(libmodbus["server"]), "tcp"])
    yield server
    server.stop()


def _site(tmp_path: Path, broker: Mosquitto, prefix: str, url: str, extra: str = "") -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}\n'
        "outbox: {path: var/outbox.sqlite}\n"
        "writes: {enabled: true}\n"
        "devices:\n"
        f"  - name: lm\n    driver: modbus\n    url: '{url}'\n    device_id: 7\n"
        f"    interval_s: 0.2\n    timeout_s: 1.0\n{extra}    points:\n{POINTS}"
    )
    return site


def _data(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/lm/data")]


def _check_poll(doc: dict[str, Any]) -> None:
    points = doc["points"]
    got = {name: points[name]["value"] for name in EXPECTED}
    assert got == EXPECTED
    assert {points[name]["quality"] for name in EXPECTED} == {"good"}
    assert points["in_v"]["unit"] == "V"
    # libmodbus answers past its map with exception 02: only that point is bad.
    assert points["past_the_map"]["quality"] == "bad"
    assert points["past_the_map"]["reason"] == "exception 02 (illegal data address)"


async def test_the_agent_reads_every_type_and_order_from_a_libmodbus_tcp_server(
    foreign_tcp: ForeignServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    url = f"tcp://127.0.0.1:{foreign_tcp.listening}"
    loaded = load_config(_site(tmp_path, mosquitto, unique_prefix, url))
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with running(Agent(loaded)):
        await until(lambda: len(_data(sub)) >= 3, what="3 polls of the libmodbus server")
    for doc in _data(sub)[:3]:
        _check_poll(doc)


async def test_the_agent_writes_to_a_libmodbus_server_and_libmodbus_reads_what_was_written(
    libmodbus: dict[str, Path],
    foreign_tcp: ForeignServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    port = foreign_tcp.listening
    loaded = load_config(_site(tmp_path, mosquitto, unique_prefix, f"tcp://127.0.0.1:{port}"))
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    topic = f"{unique_prefix}/plant-a/gw-01/lm/cmd"

    def replies() -> dict[str, dict[str, Any]]:
        docs = [orjson.loads(m.payload) for m in sub.messages if m.topic == f"{topic}/reply"]
        return {d["id"]: d for d in docs}

    async with running(Agent(loaded)):
        await until(lambda: len(_data(sub)) >= 1, what="a first poll")
        for request in (
            {"id": "sp", "point": "setpoint", "value": 42.5},
            {"id": "stop", "point": "run", "value": False},
            {"id": "high", "point": "setpoint", "value": 51},
        ):
            publish_once(mosquitto.host, mosquitto.port, topic, orjson.dumps(request))
            await until(lambda r=request: r["id"] in replies(), what=f"reply {request['id']}")
        seen = len(_data(sub))
        await until(lambda: len(_data(sub)) >= seen + 2, what="polls after the writes")
    got = replies()
    assert got["sp"] == {"id": "sp", "result": "done", "value": 42.5}
    assert got["stop"] == {"id": "stop", "result": "done", "value": False}
    assert got["high"]["result"] == "rejected" and got["high"]["reason"] == "above max 50"
    last = _data(sub)[-1]["points"]
    assert (last["setpoint"]["value"], last["run"]["value"]) == (42.5, False)

    # libmodbus, not our codec, reads the registers: 42.5 in word order CDAB, coil 5 off.
    words = await _client(libmodbus, "tcp", "127.0.0.1", port, "7", "3", "100", "2")
    assert struct.unpack(">f", struct.pack(">HH", words[1], words[0]))[0] == 42.5
    assert await _client(libmodbus, "tcp", "127.0.0.1", port, "7", "1", "5", "1") == [0]


async def test_the_agent_polls_a_libmodbus_rtu_server_on_a_serial_line(
    libmodbus: dict[str, Path],
    serial_pair: tuple[str, str],
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    server_tty, agent_tty = serial_pair
    server = ForeignServer([str(libmodbus["server"]), "rtu", server_tty, "19200", "E", "7"])
    try:
        url = f"rtu://{agent_tty}?baudrate=19200&parity=E"
        loaded = load_config(_site(tmp_path, mosquitto, unique_prefix, url))
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        async with running(Agent(loaded)):
            await until(lambda: len(_data(sub)) >= 3, what="3 polls over RTU", timeout_s=20)
    finally:
        server.stop()
    for doc in _data(sub)[:3]:
        _check_poll(doc)


async def _client(libmodbus: dict[str, Path], *args: str) -> list[int]:
    def run() -> str:
        done = subprocess.run(
            [str(libmodbus["client"]), *args], capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return [int(word) for word in (await asyncio.to_thread(run)).split()]


def _decode(words: list[int], point_type: PointType, order: Order) -> float:
    raw = struct.pack(f">{len(words)}H", *words)
    if order in (Order.CDAB, Order.DCBA):
        raw = raw[2:] + raw[:2]
    if order in (Order.BADC, Order.DCBA):
        raw = bytes(b for pair in zip(raw[1::2], raw[::2], strict=True) for b in pair)
    fmt = {PointType.FLOAT32: ">f", PointType.UINT32: ">I", PointType.INT32: ">i"}
    fmt |= {PointType.UINT16: ">H", PointType.INT16: ">h"}
    return float(struct.unpack(fmt[point_type], raw)[0])


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_a_libmodbus_client_reads_what_our_simulator_serves(
    libmodbus: dict[str, Path], serial_pair: tuple[str, str], transport: str
) -> None:
    profile = load_profile(PROFILES / "chint-dtsu666.yaml")
    server_tty, client_tty = serial_pair
    url = "tcp://127.0.0.1:0" if transport == "tcp" else f"rtu://{server_tty}?baudrate=9600"
    spec = SimDeviceSpec(name="m3", url=url, profile=profile, device_id=3, seed=3)
    async with serve([spec]) as sim:
        meter = sim.device("m3")
        meter.freeze()
        served = meter.served_values()
        where = (
            ["tcp", "127.0.0.1", meter.url.rsplit(":", 1)[1]]
            if transport == "tcp"
            else ["rtu", client_tty, "9600", "N"]
        )
        checked = 0
        for point in profile.points:
            point_type = point.type or PointType.UINT16
            if point_type not in (PointType.FLOAT32, PointType.UINT32, PointType.INT32):
                continue
            fc = "4" if point.table and point.table.value == "input" else "3"
            words = await _client(libmodbus, *where, "3", fc, str(point.address), "2")
            order = point.order or profile.order or Order.ABCD
            value = _decode(words, point_type, order) * point.scale + point.offset
            assert value == pytest.approx(served[point.name], rel=1e-6), point.name
            checked += 1
        assert checked >= 10  # the meter's whole map, not one lucky register
    print(json.dumps({"checked": checked}))

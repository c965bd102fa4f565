"""Hostile answers through the agent's own Modbus driver and connection (issue 16).

A small asyncio server on loopback answers each read with bytes a test scripts: valid,
truncated, oversized, undersized, another transaction or unit, another function, an
exception, a byte count that lies, a bad CRC, garbage; then it keeps the connection, closes
it (FIN) or resets it (RST). Modbus TCP and RTU over TCP go through the same
`ModbusDriver` -> `ModbusConnection` -> pymodbus path the agent polls with. The property:
no traceback is logged (log records at ERROR, asyncio's exception handler), a point is
good only when its answer was exactly right (and then its value is what was encoded), and
a refused answer says what was wrong and is counted.

The simulators' own `corrupt` fault is run through the driver over TCP and over a pty pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import PointType, Table
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.driver import ModbusDriver, exception_reason
from drivers.reading import DeviceUnreachable, Poll, Quality
from edge_agent.catalog import Kind, shipped
from edge_agent.diagnose.read import ReadFailed, open_line, read_raw
from edge_agent.diagnose.scan import scan_ids
from simulators.modbus.frames import mbap_frame, pack_bits, rtu_frame
from simulators.modbus.site import SimDeviceSpec, load_profile, serve

pytestmark = pytest.mark.timeout(300)

LOOPBACK = "127.0.0.1"
PROFILES = shipped(Kind.PROFILES)
UNIT = 17
# One request per table, so every read function code is in every poll (plan order:
# coils, discrete inputs, holding, input registers).
PROFILE = ModbusProfile(
    name="hostile",
    points=(
        ModbusPoint(name="c0", table=Table.COIL, address=0),
        ModbusPoint(name="c5", table=Table.COIL, address=5),
        ModbusPoint(name="c9", table=Table.COIL, address=9),
        ModbusPoint(name="d2", table=Table.DISCRETE, address=2),
        ModbusPoint(name="h0", address=0, type=PointType.UINT16),
        ModbusPoint(name="h1", address=1, type=PointType.INT16),
        ModbusPoint(name="h3", address=3, type=PointType.UINT16),
        ModbusPoint(name="i10", table=Table.INPUT, address=10, type=PointType.UINT16),
        ModbusPoint(name="i11", table=Table.INPUT, address=11, type=PointType.INT16),
    ),
)
GOOD = ()  # the expected reasons of an answer that must give good points


@dataclass(frozen=True, slots=True)
class Request:
    tid: int
    unit: int
    fc: int
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Scripted:
    """How the server answers one read, and what the driver must make of it."""

    kind: str
    truth: tuple[int, ...]  # the registers (or 0/1 bits) the answer is built from
    params: tuple[int, ...] = ()
    garbage: bytes = b""
    after: str = "keep"  # keep | fin | rst
    # None: any bad outcome is fine; GOOD; or the reasons (prefixes) the points must carry
    expect: tuple[str, ...] | None = None
    counted: bool = False  # a refused answer: the bad-answer counter goes up by one


def _data(fc: int, truth: tuple[int, ...]) -> bytes:
    if fc in (1, 2):
        return pack_bits(bytes(truth))
    return b"".join(v.to_bytes(2, "big") for v in truth)


def _frame(rtu: bool, tid: int, unit: int, pdu: bytes) -> bytes:
    return rtu_frame(unit, pdu) if rtu else mbap_frame(tid, unit, pdu)


def build_answer(s: Scripted, req: Request, *, rtu: bool) -> bytes:
    """The bytes the server sends for one scripted answer to one request."""
    fc, data, p = req.fc, _data(req.fc, s.truth), s.params
    valid = _frame(rtu, req.tid, req.unit, bytes((fc, len(data))) + data)
    if s.kind == "valid":
        return valid
    if s.kind == "exception":
        return _frame(rtu, req.tid, req.unit, bytes((fc | 0x80, p[0])))
    if s.kind == "oversized":
        more = data + bytes(range(p[0]))
        return _frame(rtu, req.tid, req.unit, bytes((fc, len(more))) + more)
    if s.kind == "undersized":
        less = data[: len(data) - p[0]]
        return _frame(rtu, req.tid, req.unit, bytes((fc, len(less))) + less)
    if s.kind == "wrong_fc":
        return _frame(rtu, req.tid, req.unit, bytes((p[0], len(data))) + data)
    if s.kind == "wrong_unit":
        return _frame(rtu, req.tid, p[0], bytes((fc, len(data))) + data)
    if s.kind in ("stale", "stale_then_valid"):
        # TCP: an answer to another transaction; RTU: a (late) answer of another unit.
        pdu = bytes((fc, len(data))) + data
        other = rtu_frame(p[1], pdu) if rtu else mbap_frame((req.tid + p[0]) % 65536, req.unit, pdu)
        return other + (valid if s.kind == "stale_then_valid" else b"")
    if s.kind == "bytecount_lie":
        return _frame(rtu, req.tid, req.unit, bytes((fc, p[0])) + data)
    if s.kind == "bad_crc":
        frame = bytearray(valid)
        at = (0, *range(3, len(frame)))[p[0] % (len(frame) - 2)]  # never fc / byte count
        frame[at] ^= p[1]
        return bytes(frame)
    if s.kind == "truncated":
        return valid[: p[0] % len(valid)]
    assert s.kind == "garbage"
    return s.garbage


class HostileServer:
    """Answers each read request with the next scripted answer (TCP or RTU framing)."""

    def __init__(self, *, rtu: bool) -> None:
        self.rtu = rtu
        self.scripts: deque[Scripted] = deque()
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"{'rtu+tcp' if self.rtu else 'tcp'}://{LOOPBACK}:{self.port}"


class _Connection(asyncio.Protocol):
    def __init__(self, server: HostileServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        server, transport = self.server, self.transport
        assert transport is not None
        self.buffer += data
        size = 8 if server.rtu else 12
        while len(self.buffer) >= size and not transport.is_closing():
            raw, self.buffer = self.buffer[:size], self.buffer[size:]
            if server.rtu:
                unit, fc, address, count = struct.unpack_from(">BBHH", raw)
                req = Request(0, unit, fc, address, count)
            else:
                tid, _, _, unit, fc, address, count = struct.unpack(">HHHBBHH", raw)
                req = Request(tid, unit, fc, address, count)
            server.requests.append(req)
            if not server.scripts:
                continue  # not scripted: silence
            script = server.scripts.popleft()
            transport.write(build_answer(script, req, rtu=server.rtu))
            if script.after == "fin":
                transport.close()
            elif script.after == "rst":
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()


class Trouble(logging.Handler):
    """Every log record at ERROR or with a traceback, and every asyncio exception-handler call."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.seen.append(f"{record.name} {record.levelname}: {record.getMessage()}")

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.seen.append(f"asyncio exception handler: {context.get('message')}")


class Harness:
    """A loop, a hostile server and the agent's driver polling it, kept across examples."""

    def __init__(self, *, rtu: bool, timeout_s: float = 2.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.trouble = Trouble()
        self.loop.set_exception_handler(self.trouble.loop_handler)
        logging.getLogger().addHandler(self.trouble)
        self.server = HostileServer(rtu=rtu)
        self.loop.run_until_complete(self.server.start())
        device = ModbusDevice(
            name="hostile",
            driver="modbus",
            url=self.server.url,
            device_id=UNIT,
            profile="hostile",
            timeout_s=timeout_s,
        )
        self.driver = ModbusDriver(device, PROFILE)
        self.requests = self.driver.plan.requests

    def poll(self, scripts: list[Scripted]) -> Poll | DeviceUnreachable:
        # Trouble between two polls shows in the next one; each poll starts clean.
        self.trouble.seen.clear()
        self.server.scripts = deque(scripts)
        try:
            return self.loop.run_until_complete(self.driver.read())
        except DeviceUnreachable as exc:
            return exc
        finally:
            if any(s.after != "keep" for s in scripts):
                # The server hung up: whether the client noticed before this poll ended
                # is a race, so the next example starts on a fresh connection.
                self.loop.run_until_complete(self.driver.close())

    def close(self) -> None:
        self.loop.run_until_complete(self.driver.close())
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()
        logging.getLogger().removeHandler(self.trouble)


@pytest.fixture(scope="module")
def tcp_harness() -> Iterator[Harness]:
    harness = Harness(rtu=False)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def rtu_harness() -> Iterator[Harness]:
    harness = Harness(rtu=True)
    yield harness
    harness.close()


# -- what to answer ------------------------------------------------------------------------


def _asked(fc: int, count: int) -> str:
    word = "bit" if fc in (1, 2) else "register"
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@st.composite
def scripted(draw: st.DrawFn, fc: int, count: int, *, rtu: bool) -> Scripted:
    """One answer to a read of `count` registers/bits with function `fc`, and its verdict."""
    truth = tuple(draw(st.lists(st.integers(0, 1 if fc in (1, 2) else 65535), min_size=count,
                                max_size=count)))  # fmt: skip
    nbytes = len(_data(fc, truth))
    kinds = ["valid", "exception", "oversized", "undersized", "wrong_fc", "bytecount_lie",
             "stale", "stale_then_valid", "truncated", "garbage"]  # fmt: skip
    kinds += ["bad_crc"] if rtu else ["wrong_unit"]
    kind = draw(st.sampled_from(kinds))
    params: tuple[int, ...] = ()
    garbage = b""
    expect: tuple[str, ...] | None = None
    stalls = False  # the client may wait for bytes that never come: end with FIN or RST
    if kind in ("valid", "stale_then_valid"):
        expect = GOOD
        if kind == "stale_then_valid":
            params = (
                draw(st.integers(1, 65535)),
                draw(st.integers(0, 255).filter(lambda u: u != UNIT)),
            )
    elif kind == "exception":
        # Not 06 (busy): the driver repeats that request (tests/e2e/test_device_fault.py), which a
        # scripted answer per request cannot follow.
        params = (draw(st.integers(0, 255).filter(lambda c: c != 6)),)
        expect = (exception_reason(params[0]),)
    elif kind in ("oversized", "undersized"):
        step = 1 if fc in (1, 2) else 2
        if kind == "oversized":
            params = (step * draw(st.integers(1, (250 - nbytes) // step)),)
            said = nbytes + params[0]
        else:
            params = (draw(st.integers(1, nbytes)),)
            said = nbytes - params[0]
        expect = (f"wrong answer: {said} data bytes (asked {_asked(fc, count)})",)
    elif kind == "wrong_fc":
        other = draw(st.integers(1, 126))
        params = (other + (other >= fc),)  # 1..127 without fc
        if rtu and params[0] not in (1, 2, 3, 4):
            stalls = True  # an RTU frame of another shape may look longer than it is
        else:
            expect = (f"wrong answer: function code {params[0]} (asked {fc})",)
    elif kind == "wrong_unit":
        params = (draw(st.integers(0, 255).filter(lambda u: u != UNIT)),)
        expect = (f"wrong answer: unit {params[0]} (asked {UNIT})",)
    elif kind == "bytecount_lie":
        params = (draw(st.integers(0, 255).filter(lambda n: n != nbytes)),)
        if not rtu:
            expect = (f"malformed answer: byte count {params[0]} but {nbytes} data bytes",)
        elif params[0] < nbytes:
            expect = ("malformed answer: bad CRC", "wrong answer: ")
        else:
            stalls = True  # RTU: the frame is cut by its byte count
    elif kind == "bad_crc":
        params = (draw(st.integers(0, 1000)), draw(st.integers(1, 255)))
        expect = ("malformed answer: bad CRC",)
    elif kind == "stale":  # another transaction (TCP) or unit (RTU), and nothing after it
        params = (
            draw(st.integers(1, 65535)),
            draw(st.integers(0, 255).filter(lambda u: u != UNIT)),
        )
        stalls = True
    elif kind == "truncated":
        params = (draw(st.integers(0, 1000)),)  # where to cut, modulo the frame's length
        stalls = True
    else:
        garbage = draw(st.binary(min_size=1, max_size=300))
        stalls = True
    after = draw(st.sampled_from(("fin", "rst") if stalls else ("keep", "keep", "keep", "fin")))
    counted = expect is not None and expect != GOOD and kind != "exception"
    return Scripted(kind, truth, params, garbage, after, expect, counted)


@st.composite
def polls(draw: st.DrawFn, shapes: tuple[tuple[int, int], ...], *, rtu: bool) -> list[Scripted]:
    """One scripted answer per read of a poll; `shapes`: (function code, count) per read."""
    return [draw(scripted(fc, count, rtu=rtu)) for fc, count in shapes]


# -- the verdict -----------------------------------------------------------------------------


def _expected_value(point_type: PointType | None, table: Table, raw: int) -> object:
    if table.is_bits:
        return bool(raw)
    if point_type is PointType.INT16:
        return raw - 65536 if raw >= 32768 else raw
    return raw


def check_poll(
    harness: Harness, scripts: list[Scripted], got: Poll | DeviceUnreachable, counted: int
) -> None:
    """No traceback; good only when exactly right; the deterministic part exactly as scripted."""
    assert harness.trouble.seen == [], harness.trouble.seen
    by_name = {p.name: p for p in PROFILE.points}
    # The answers whose outcome is fixed: up to and including the first that closes the
    # line or may leave the client waiting.
    fixed = 0
    for s in scripts:
        fixed += 1
        if s.after != "keep" or s.expect is None:
            break
    last = scripts[fixed - 1]
    if isinstance(got, DeviceUnreachable):
        assert last.after != "keep" or last.expect is None, (got.reason, scripts)
        if last.kind in ("truncated", "stale"):
            # Cut off mid-answer by a FIN or a reset: a lost connection, not a timeout.
            assert got.reason == "connection lost", (got.reason, last)
        return
    index = 0
    for i, (req, s) in enumerate(zip(harness.requests, scripts, strict=True)):
        for name in req.point_names:
            point = by_name[name]
            issue = got.issues.get(index)
            if issue is None:
                # Good only when the answer was exactly right, and then with the encoded value.
                assert s.expect == GOOD, (name, s)
                raw = s.truth[point.address - req.start]
                assert got.values[index] == _expected_value(point.type, point.table, raw), (name, s)
            else:
                quality, reason = issue
                assert quality is Quality.BAD and got.values[index] is None
                if i < fixed and s.expect is not None:
                    assert s.expect != GOOD, (name, reason, s)
                    assert reason.startswith(s.expect), (name, reason, s)
            if i < fixed and s.expect == GOOD:
                assert issue is None, (name, issue, s)
            index += 1
    if fixed == len(scripts) and scripts[-1].after == "keep":
        assert counted == sum(s.counted for s in scripts), scripts


def _run(harness: Harness, scripts: list[Scripted]) -> None:
    before = harness.driver.bad_answers
    got = harness.poll(scripts)
    check_poll(harness, scripts, got, harness.driver.bad_answers - before)


def _shapes(harness: Harness) -> tuple[tuple[int, int], ...]:
    return tuple((r.table.function_code, r.count) for r in harness.requests)


SHAPES = ((1, 10), (2, 1), (3, 4), (4, 2))  # the plan of PROFILE, checked below
PROPERTY = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_plan_is_one_read_per_function_code(tcp_harness: Harness) -> None:
    assert _shapes(tcp_harness) == SHAPES


@PROPERTY
@given(polls(SHAPES, rtu=False))
def test_hostile_tcp_answers_are_never_good_unless_exactly_right(
    tcp_harness: Harness, scripts: list[Scripted]
) -> None:
    _run(tcp_harness, scripts)


@PROPERTY
@given(polls(SHAPES, rtu=True))
def test_hostile_rtu_answers_are_never_good_unless_exactly_right(
    rtu_harness: Harness, scripts: list[Scripted]
) -> None:
    _run(rtu_harness, scripts)


# -- one case at a time: the reasons, the simulators' own fault, the diagnosis tools --------


@contextlib.asynccontextmanager
async def hostile(
    *, rtu: bool, timeout_s: float = 2.0
) -> AsyncIterator[tuple[HostileServer, ModbusDriver, Trouble]]:
    """A hostile server, the driver polling it, and what got logged as trouble meanwhile."""
    trouble = Trouble()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(trouble.loop_handler)
    logging.getLogger().addHandler(trouble)
    server = HostileServer(rtu=rtu)
    await server.start()
    device = ModbusDevice(
        name="hostile", driver="modbus", url=server.url, device_id=UNIT, profile="hostile",
        timeout_s=timeout_s,
    )  # fmt: skip
    driver = ModbusDriver(device, PROFILE)
    try:
        yield server, driver, trouble
    finally:
        await driver.close()
        await server.stop()
        logging.getLogger().removeHandler(trouble)
        loop.set_exception_handler(None)


def _valid(truths: tuple[tuple[int, ...], ...]) -> list[Scripted]:
    return [Scripted("valid", t, expect=GOOD) for t in truths]


TRUTHS = ((1, 0, 0, 0, 0, 1, 0, 0, 0, 1), (1,), (7, 65535, 0, 513), (40000, 2))


def _reasons(poll: Poll) -> dict[str, str]:
    return {poll.points[i].name: reason for i, (_, reason) in poll.issues.items()}


async def test_an_fc04_answer_or_more_registers_than_asked_make_those_points_bad() -> None:
    async with hostile(rtu=False) as (server, driver, trouble):
        fc04 = Scripted("wrong_fc", TRUTHS[2], (4,))
        more = Scripted("oversized", TRUTHS[3], (2,))
        server.scripts = deque([*_valid(TRUTHS[:2]), fc04, more])
        poll = await driver.read()
        assert _reasons(poll) == {
            "h0": "wrong answer: function code 4 (asked 3)",
            "h1": "wrong answer: function code 4 (asked 3)",
            "h3": "wrong answer: function code 4 (asked 3)",
            "i10": "wrong answer: 6 data bytes (asked 2 registers)",
            "i11": "wrong answer: 6 data bytes (asked 2 registers)",
        }
        assert poll.values[:4] == [True, True, True, True]  # c0 c5 c9 d2: their answers were right
        assert driver.bad_answers == 2
        # The line stays in step: the next poll is good throughout.
        server.scripts = deque(_valid(TRUTHS))
        poll = await driver.read()
        assert poll.issues == {}
        assert poll.values == [True, True, True, True, 7, -1, 513, 40000, 2]
        assert driver.bad_answers == 2
        assert [r.fc for r in server.requests] == [1, 2, 3, 4] * 2
    assert trouble.seen == []


async def test_a_byte_count_beyond_the_data_is_a_malformed_answer_not_a_traceback() -> None:
    async with hostile(rtu=False) as (server, driver, trouble):
        lie = Scripted("bytecount_lie", TRUTHS[2], (10,))
        server.scripts = deque([*_valid(TRUTHS[:2]), lie, *_valid(TRUTHS[3:])])
        poll = await driver.read()
        assert set(_reasons(poll).values()) == {"malformed answer: byte count 10 but 8 data bytes"}
        assert sorted(_reasons(poll)) == ["h0", "h1", "h3"]
        assert poll.values[-2:] == [40000, 2]
    assert trouble.seen == []


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu+tcp"])
async def test_a_reset_mid_answer_is_a_lost_connection_and_the_next_poll_reconnects(
    rtu: bool,
) -> None:
    async with hostile(rtu=rtu) as (server, driver, trouble):
        cut = Scripted("truncated", TRUTHS[2], (7,), after="rst")
        server.scripts = deque([*_valid(TRUTHS[:2]), cut])
        with pytest.raises(DeviceUnreachable) as lost:
            await driver.read()
        assert lost.value.reason == "connection lost"
        server.scripts = deque(_valid(TRUTHS))
        poll = await driver.read()
        assert poll.issues == {} and poll.values[4:] == [7, -1, 513, 40000, 2]
    assert trouble.seen == []


@pytest.mark.parametrize(
    ("rtu", "script", "reason"),
    [
        (
            False,
            Scripted("truncated", TRUTHS[0], (10,)),
            "incomplete answer: 10 bytes, then nothing",
        ),
        (True, Scripted("truncated", TRUTHS[0], (4,)), "incomplete answer: 4 bytes, then nothing"),
        (
            False,
            Scripted("stale", TRUTHS[0], (5, 0)),
            "wrong answer: transaction {stale} (asked {tid}), then nothing",
        ),
        (
            True,
            Scripted("stale", TRUTHS[0], (0, 9)),
            "wrong answer: unit 9 (asked 17), then nothing",
        ),
        (
            False,
            Scripted("garbage", TRUTHS[0], garbage=b"\x00"),
            "incomplete answer: 1 byte, then nothing",
        ),
        (True, None, "timeout"),
    ],
    ids=[
        "tcp-truncated",
        "rtu-truncated",
        "tcp-other-transaction",
        "rtu-other-unit",
        "tcp-1-byte",
        "silence",
    ],
)
async def test_what_came_before_a_timeout_is_the_reason(
    rtu: bool, script: Scripted | None, reason: str
) -> None:
    async with hostile(rtu=rtu, timeout_s=0.2) as (server, driver, trouble):
        server.scripts = deque([script] if script else [])
        with pytest.raises(DeviceUnreachable) as silent:
            await driver.read()
        tid = server.requests[0].tid
        assert silent.value.reason == reason.format(tid=tid, stale=(tid + 5) % 65536)
        assert driver.bad_answers == (0 if script is None else 1)
    assert trouble.seen == []


CHINT = load_profile(PROFILES / "chint-dtsu666.yaml")


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_the_simulators_corrupt_fault_is_a_malformed_answer(
    transport: str, request: pytest.FixtureRequest
) -> None:
    if transport == "rtu":
        server_end, client_end = request.getfixturevalue("serial_pair")
        serve_url, poll_url = (f"rtu://{end}?baudrate=19200" for end in (server_end, client_end))
    else:
        serve_url = poll_url = f"tcp://{LOOPBACK}:0"
    spec = SimDeviceSpec(name="m", url=serve_url, profile=CHINT, device_id=3)
    trouble = Trouble()
    logging.getLogger().addHandler(trouble)
    asyncio.get_running_loop().set_exception_handler(trouble.loop_handler)
    try:
        async with serve([spec]) as sim:
            meter = sim.device("m")
            meter.freeze()
            url = meter.url if transport == "tcp" else poll_url
            device = ModbusDevice(
                name="m", driver="modbus", url=url, device_id=3, profile="chint-dtsu666"
            )
            driver = ModbusDriver(device, CHINT)
            try:
                meter.faults.set("corrupt")
                poll = await driver.read()  # answered: the device is there, its answers broken
                reasons = {reason for _, reason in poll.issues.values()}
                assert len(poll.issues) == len(poll.points) and len(reasons) >= 1
                if transport == "tcp":
                    # The byte count claims 2 bytes more than the frame carries.
                    assert all(r.startswith("malformed answer: byte count ") for r in reasons)
                    assert all(r.endswith(" data bytes") for r in reasons)
                else:
                    assert reasons == {"malformed answer: bad CRC"}
                assert driver.bad_answers == len(driver.plan.requests)
                meter.faults.clear()
                poll = await driver.read()
                assert poll.issues == {}
                assert dict(zip((p.name for p in poll.points), poll.values, strict=True)) == (
                    meter.served_values()
                )
                assert driver.bad_answers == len(driver.plan.requests)
            finally:
                await driver.close()
    finally:
        logging.getLogger().removeHandler(trouble)
        asyncio.get_running_loop().set_exception_handler(None)
    assert trouble.seen == []


async def test_diagnosis_tools_show_a_wrong_answer_as_such() -> None:
    async with hostile(rtu=False) as (server, _, trouble):
        server.scripts = deque([Scripted("wrong_fc", (1, 2), (4,))])
        with pytest.raises(ReadFailed, match=r"^wrong answer: function code 4 \(asked 3\)$"):
            await read_raw(open_line(server.url, timeout_s=1), Table.HOLDING, 0, 2, device_id=UNIT)
        # scan: a unit that answers wrongly is still a unit there.
        server.scripts = deque(
            [Scripted("valid", (5,)), Scripted("wrong_unit", (6,), (9,)), Scripted("valid", (7,))]
        )
        hits = await scan_ids(server.url, [1, 2, 3], timeout_s=1)
        assert [(h.device_id, h.answer) for h in hits] == [
            (1, "registers 0005"),
            (2, "wrong answer: unit 9 (asked 2)"),
            (3, "registers 0007"),
        ]
    assert trouble.seen == []

"""How the agent's own Modbus line protocol times and pipelines its requests (issue 20.4).

A request's timeout runs from when that request was sent, however long the requests
before it in the poll took; the deadline timer is armed lazily (once per timeout period
at full speed, and dropped at the end of a poll when it would fire before the next one,
into an idle line) instead of once per request; a line carries
one request at a time, or with `max_in_flight` (Modbus TCP) up to that many requests of a
poll, their answers matched back by transaction id in whatever order they come. A small
asyncio server on loopback answers each request with a valid frame after a scripted delay.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers.modbus.codec import PointType, Table
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.driver import ModbusDriver
from drivers.reading import DeviceUnreachable
from simulators.modbus.frames import mbap_frame
from tests.waiting import until

LOOPBACK = "127.0.0.1"
# Two requests per poll: holding 0-1, input 0-1.
PROFILE = ModbusProfile(
    name="two",
    points=(
        ModbusPoint(name="h", address=0, type=PointType.UINT32),
        ModbusPoint(name="i", table=Table.INPUT, address=0, type=PointType.UINT32),
    ),
)


class DelayedServer(asyncio.Protocol):
    """Answers read request k with registers (k, k) after delays[k] seconds; None: never."""

    def __init__(self, delays: deque[float | None], seen: list[int]) -> None:
        self.delays = delays
        self.seen = seen
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 12:
            raw, self.buffer = self.buffer[:12], self.buffer[12:]
            tid, _, _, unit, fc, _, count = struct.unpack(">HHHBBHH", raw)
            k = len(self.seen)
            self.seen.append(fc)
            delay = self.delays.popleft() if self.delays else None
            if delay is None:
                continue
            pdu = bytes((fc, 2 * count)) + struct.pack(f">{count}H", *([k] * count))
            asyncio.get_running_loop().call_later(delay, self._send, mbap_frame(tid, unit, pdu))

    def _send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


@asynccontextmanager
async def delayed(
    delays: list[float | None],
    *,
    timeout_s: float,
    profile: ModbusProfile = PROFILE,
    max_in_flight: int = 1,
    interval_s: float = 1.0,
) -> AsyncIterator[tuple[ModbusDriver, list[int]]]:
    seen: list[int] = []
    queue: deque[float | None] = deque(delays)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: DelayedServer(queue, seen), LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    device = ModbusDevice(
        name="m", driver="modbus", url=f"tcp://{LOOPBACK}:{port}", profile="two",
        timeout_s=timeout_s, max_in_flight=max_in_flight, interval_s=interval_s,
    )  # fmt: skip
    driver = ModbusDriver(device, profile)
    try:
        yield driver, seen
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()


async def test_each_request_has_its_whole_timeout_from_when_it_was_sent() -> None:
    # The first answer takes most of the timeout, the second less than a timeout but more
    # than what was left of the first's: one deadline per poll would drop the second.
    async with delayed([0.3, 0.25], timeout_s=0.4) as (driver, seen):
        poll = await driver.read()
    assert poll.issues == {}
    assert poll.values == [0x00000000, 0x00010001]
    assert seen == [3, 4]


async def test_a_silent_second_request_times_out_and_the_line_starts_afresh() -> None:
    async with delayed([0.0, None, 0.0, 0.0], timeout_s=0.2) as (driver, seen):
        with pytest.raises(DeviceUnreachable) as silent:
            await driver.read()
        assert silent.value.reason == "timeout"
        assert not driver.connection.connected  # a silent TCP peer: closed, reopened next
        poll = await driver.read()
    assert poll.issues == {} and poll.values == [0x00020002, 0x00030003]
    assert seen == [3, 4, 3, 4]


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the timers armed through it, by the callback's name."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: list[str] = []

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        self.armed.append(getattr(callback, "__qualname__", repr(callback)))
        return super().call_at(when, callback, *args, context=context)


@pytest.fixture
def counting_loop() -> CountingLoop:
    return CountingLoop()


def test_back_to_back_polls_arm_one_deadline_timer_not_one_per_request(
    counting_loop: CountingLoop,
) -> None:
    timeout_s = 0.5
    took: list[float] = []

    async def main() -> None:
        # Polled faster than the timeout (full speed): the timer is kept from poll to poll.
        async with delayed([0.0] * 100, timeout_s=timeout_s, interval_s=0.01) as (driver, seen):
            await driver.connect()
            began = counting_loop.time()
            for _ in range(50):
                poll = await driver.read()
                assert poll.issues == {}
            took.append(counting_loop.time() - began)
            assert len(seen) == 100
            line = driver.connection._line
            assert line is not None
            # Idle: the timer fires once past the last deadline, finds nothing waiting
            # and arms nothing more.
            await until(lambda: line._timer is None, what="the idle line's timer to lapse")

    counting_loop.run_until_complete(main())
    counting_loop.close()
    # 100 requests answered at once: one timer, plus one re-arm per timeout period the
    # polls took (pymodbus armed one per request: 100).
    expires = [name for name in counting_loop.armed if name == "LineProtocol._expire"]
    assert 1 <= len(expires) <= 2 + took[0] / timeout_s, (expires, took)


def test_slow_polls_leave_no_deadline_timer_to_fire_into_the_idle_line(
    counting_loop: CountingLoop,
) -> None:
    """Polled every 10 s with a 0.5 s timeout: the timer a poll armed would fire 0.5 s
    later into an idle process; the end of the poll drops it instead."""

    async def main() -> None:
        async with delayed([0.0] * 10, timeout_s=0.5, interval_s=10.0) as (driver, seen):
            for _ in range(5):
                poll = await driver.read()
                assert poll.issues == {}
                line = driver.connection._line
                assert line is not None and line._timer is None
            assert len(seen) == 10

    counting_loop.run_until_complete(main())
    counting_loop.close()
    # One timer per poll (two requests, one after the other): armed, then dropped unfired.
    assert counting_loop.armed.count("LineProtocol._expire") == 5


async def test_a_line_refuses_a_second_request_while_one_is_in_flight() -> None:
    async with delayed([0.2, 0.0], timeout_s=1.0) as (driver, _):
        await driver.connect()
        conn = driver.connection
        first = asyncio.create_task(conn.read(Table.HOLDING, 0, 2, device_id=1))
        await until(lambda: conn._line is not None and conn._line._waiter is not None,
                    what="the first request in flight")  # fmt: skip
        with pytest.raises(RuntimeError, match="one request at a time"):
            await conn.read(Table.INPUT, 0, 2, device_id=1)
        assert await first == b"\x00\x00\x00\x00"


# Four requests per poll: holding 0-1, 20-21, 40-41, 60-61 (gaps too wide to join).
FOUR = ModbusProfile(
    name="four",
    points=tuple(
        ModbusPoint(name=f"h{20 * k}", address=20 * k, type=PointType.UINT32) for k in range(4)
    ),
)


async def test_pipelined_answers_in_any_order_go_to_their_own_requests() -> None:
    # All four are sent before the first answer; they come back 4th, 2nd, 3rd, 1st.
    async with delayed(
        [0.3, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0], timeout_s=2.0, profile=FOUR, max_in_flight=4
    ) as (driver, seen):
        poll = await driver.read()
        assert poll.issues == {}
        assert poll.values == [0x00000000, 0x00010001, 0x00020002, 0x00030003]
        assert seen == [3, 3, 3, 3]
        poll = await driver.read()  # the line stays in step
        assert poll.values == [0x00040004, 0x00050005, 0x00060006, 0x00070007]
        assert driver.bad_answers == 0


async def test_a_pipelined_window_waits_for_its_answers_before_the_next_one() -> None:
    # max_in_flight 2: requests 0 and 1, then 2 and 3 once both answered.
    async with delayed([0.2, 0.0, 0.0, 0.0], timeout_s=2.0, profile=FOUR, max_in_flight=2) as (
        driver,
        seen,
    ):
        first = asyncio.create_task(driver.read())
        await until(lambda: len(seen) == 2, what="the first window")
        assert not first.done() and len(seen) == 2  # answer 0 is still on its way
        poll = await first
    assert poll.issues == {} and len(seen) == 4
    assert poll.values == [0x00000000, 0x00010001, 0x00020002, 0x00030003]


async def test_a_silent_pipelined_request_times_out_the_poll() -> None:
    async with delayed([0.0, None, 0.0, 0.0], timeout_s=0.2, profile=FOUR, max_in_flight=4) as (
        driver,
        _,
    ):
        with pytest.raises(DeviceUnreachable) as silent:
            await driver.read()
        assert silent.value.reason == "timeout"
        assert not driver.connection.connected


async def test_a_broken_pipelined_answer_costs_its_request_and_the_rest_are_sent_again() -> None:
    # The hostile server of test_modbus_answers answers each request as it arrives.
    from tests.e2e.test_modbus_answers import PROFILE as HOSTILE
    from tests.e2e.test_modbus_answers import TRUTHS, UNIT, HostileServer, Scripted, _valid

    server = HostileServer(rtu=False)
    await server.start()
    device = ModbusDevice(
        name="hostile", driver="modbus", url=server.url, device_id=UNIT, profile="hostile",
        max_in_flight=4,
    )  # fmt: skip
    driver = ModbusDriver(device, HOSTILE)
    try:
        broken = Scripted("garbage", TRUTHS[1], garbage=b"\x00\x01\x00\x07\x00\x03\x11\x02")
        server.scripts = deque([*_valid(TRUTHS[:1]), broken, *_valid(TRUTHS[2:] * 2)])
        poll = await driver.read()
        reasons = {poll.points[i].name: r for i, (_, r) in poll.issues.items()}
        assert reasons == {"d2": "malformed answer: protocol id 7"}
        assert poll.values == [True, True, True, None, 7, -1, 513, 40000, 2]
        assert driver.bad_answers == 1
        # Four sent together, then the two left unanswered again on a fresh connection.
        assert [r.fc for r in server.requests] == [1, 2, 3, 4, 3, 4]
    finally:
        await driver.close()
        await server.stop()

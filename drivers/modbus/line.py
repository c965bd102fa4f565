"""The byte stream of one Modbus line: a request out, its answer in, one at a time.

Or, on Modbus TCP to a device that takes them (`max_in_flight`), several requests of a
poll in one write, their answers matched back by transaction id.

An asyncio Protocol instead of pymodbus's client: pymodbus's transaction path costs a
lock, a fresh PDU object, an `asyncio.wait_for` and a response future per request
(about 75 µs of CPU per request measured, issue 20). Here a request is a prebuilt frame
(drivers/modbus/exchange.py), the answer is cut and checked by our framers
(drivers/modbus/answers.py), and there is one future per request and no timer per
request: the deadline timer is armed once and re-armed only when it fires while a
request is still waiting, so at full speed it fires about once per timeout period. At
the end of a poll the driver says how long the line will rest (`idle_for`): a timer that
would fire before the next request, into an idle process, is dropped (at slow polls that
wake-up cost more than the poll, issue 20).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from drivers.modbus.answers import Answer, Asked, RtuAnswers, TcpAnswers
from drivers.modbus.exchange import Exchange

_LAST_TID = 65000  # pymodbus's wrap-around point, kept: devices have seen it for years


class LineLost(Exception):
    """The connection closed or reset while a request waited for its answer."""


class NoAnswer(Exception):
    """No complete answer within the timeout."""


class LineProtocol(asyncio.Protocol):
    """One connection (TCP socket, serial port, RTU over TCP) and the request in flight."""

    def __init__(self, *, tcp: bool, timeout_s: float) -> None:
        self.tcp = tcp
        self.framer = TcpAnswers(None) if tcp else RtuAnswers(None)  # type: ignore[arg-type]
        self.timeout_s = timeout_s
        self.transport: asyncio.BaseTransport | None = None
        self.up = False
        self.buffer = b""  # bytes of an answer not complete yet
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[Answer] | None = None
        self._unit = 0
        self._tid = 0
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # Pipelined requests waiting, by transaction id (in sending order), and what each
        # answer must look like; empty unless `send_all` is in use.
        self._batch: dict[int, asyncio.Future[Answer | None]] = {}
        self._expected: dict[int, tuple[int, Asked]] = {}

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.up = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.up = False
        self._fail(LineLost())

    def data_received(self, data: bytes) -> None:
        if self._batch:
            self._batch_received(data)
            return
        waiter = self._waiter
        if waiter is None:
            return  # nothing asked: a late answer, dropped like pymodbus drops it
        buffer = self.buffer + data if self.buffer else data
        used, answer = self.framer.cut(buffer, self._unit, self._tid)
        if answer is None:
            self.buffer = buffer[used:]
            return
        self.buffer = b""
        self._waiter = None
        if not waiter.done():
            waiter.set_result(answer)

    # -- requests ---------------------------------------------------------------------

    def send(self, exchange: Exchange) -> asyncio.Future[Answer]:
        """Send one request; the future gets its Answer, LineLost or NoAnswer."""
        transport = self.transport
        if self._batch or (self._waiter is not None and not self._waiter.done()):
            raise RuntimeError("a Modbus line carries one request at a time")
        if transport is None or not self.up:
            raise LineLost()
        self.framer.expect(exchange.asked)
        self._unit = exchange.unit
        self.buffer = b""
        if self.tcp:
            tid = self._tid + 1 if self._tid < _LAST_TID else 1
            self._tid = tid
            transport.write(tid.to_bytes(2, "big") + exchange.frame)  # type: ignore[attr-defined]
        else:
            transport.write(exchange.frame)  # type: ignore[attr-defined]
        waiter = self._waiter = self._loop.create_future()
        self._deadline = self._loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expire)
        return waiter

    def send_all(self, exchanges: Sequence[Exchange]) -> list[asyncio.Future[Answer | None]]:
        """Modbus TCP: send several requests in one write; a future per request gets its
        Answer, LineLost or NoAnswer, or None when a broken answer before it ended the
        stream (the request may be sent again on a fresh connection)."""
        transport = self.transport
        assert self.tcp, "pipelining needs transaction ids"
        if self._batch or (self._waiter is not None and not self._waiter.done()):
            raise RuntimeError("a Modbus line carries one request at a time")
        if transport is None or not self.up:
            raise LineLost()
        self.framer.passed_over = None
        self.buffer = b""
        parts = []
        futures: list[asyncio.Future[Answer | None]] = []
        tid = self._tid
        for exchange in exchanges:
            tid = tid + 1 if tid < _LAST_TID else 1
            parts.append(tid.to_bytes(2, "big") + exchange.frame)
            future = self._loop.create_future()
            futures.append(future)
            self._batch[tid] = future
            self._expected[tid] = (exchange.unit, exchange.asked)
        self._tid = tid
        transport.write(b"".join(parts))  # type: ignore[attr-defined]
        self._deadline = self._loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expire)
        return futures

    def _batch_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        batch = self._batch
        while batch:
            used, tid, answer = self.framer.cut_any(buffer, self._expected)  # type: ignore[union-attr]
            buffer = buffer[used:]
            if answer is None:
                break
            if tid < 0:
                # Out of step: the oldest request gets the broken answer; the others
                # never got theirs, which a fresh connection may still give.
                oldest = next(iter(batch))
                batch.pop(oldest).set_result(answer)
                for future in batch.values():
                    future.set_result(None)
                batch.clear()
                self._expected.clear()
                buffer = b""
                break
            self._expected.pop(tid)
            future = batch.pop(tid)
            if not future.done():
                future.set_result(answer)
        self.buffer = buffer

    @property
    def pending(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._batch) or int(self._waiter is not None and not self._waiter.done())

    @property
    def transaction_id(self) -> int:
        """The Modbus TCP transaction id of the last request sent (0 on RTU)."""
        return self._tid

    def idle_for(self, seconds: float) -> None:
        """Nothing will be sent for about `seconds`: drop a deadline timer that would
        fire before then with nothing to watch."""
        timer = self._timer
        if timer is not None and not self.pending and timer.when() < self._loop.time() + seconds:
            timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self.pending:
            return  # idle: no timer until the next request
        if self._loop.time() >= self._deadline - 1e-6:
            self._fail(NoAnswer())
        else:
            self._timer = self._loop.call_at(self._deadline, self._expire)

    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        for future in self._batch.values():
            if not future.done():
                future.set_exception(exc)
        self._batch.clear()
        self._expected.clear()

    def close(self) -> None:
        """Close the connection; a request waiting ends as LineLost."""
        self.up = False
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        self._fail(LineLost())

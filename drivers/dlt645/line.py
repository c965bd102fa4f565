"""One DL/T 645 line: a serial port (pyserial) or serial-over-TCP, one transaction at a time.

This is the only module of the driver that touches pyserial or sockets; their errors stop
here and become `DeviceUnreachable` (cannot open, lost, timeout). What a meter says is
data: an error answer is a `MeterError`, a garbled answer a `BadAnswer`.

    exchange:   wait out frame_gap_s since the line's last traffic
                forget stale bytes (a late answer to an earlier, timed-out request)
                send  FE.. 68 A 68 C L DATA CS 16
                wait  for the answer of that address and function:
                      timeout_s after the request has left the wire (its airtime at the
                      line's baud rate), extended while an answer is arriving by the airtime
                      of its missing bytes, so a long answer at 2400 baud is not cut off
                      frames of other functions, addresses or DIs (an adapter's echo of our
                      own request, a late answer to an earlier request) are skipped; a bad
                      checksum ends the wait

A serial port is read with `loop.add_reader` on its non-blocking file descriptor, so
nothing blocks the event loop and no thread is involved. Several meters share a line
object; a lock keeps their transactions apart even outside the line's poller.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from drivers.dlt645.config import LineEndpoint
from drivers.dlt645.frame import (
    READ_ADDRESS,
    READ_DATA,
    READ_NEXT,
    BadFrame,
    Frame,
    FrameParser,
    address_matches,
    address_text,
    di_bytes,
    error_reason,
    read_address_request,
    read_next_request,
    read_request,
)
from drivers.fd_writer import FdWriter
from drivers.pyserial_urls import line_url
from drivers.reading import DeviceUnreachable

log = logging.getLogger(__name__)

PARTIAL_GRACE_S = 0.1  # a converter or USB adapter may hold bytes back for this long
MAX_SUBSEQUENT = 64  # subsequent frames of one value before giving up on it


@dataclass(frozen=True, slots=True)
class MeterError:
    """An error answer: the meter's ERR byte."""

    code: int

    @property
    def reason(self) -> str:
        """Quality reason, e.g. 'error 02 (no requested data)'."""
        return error_reason(self.code)


@dataclass(frozen=True, slots=True)
class BadAnswer:
    """An answer that cannot be used: bad checksum, wrong DI, broken continuation."""

    reason: str


ReadResult = bytes | MeterError | BadAnswer


class _TcpStream(asyncio.Protocol):
    def __init__(self, line: Dlt645Line) -> None:
        self._line = line
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._line._tcp is self._transport:
            self._line._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only the line's current connection counts: one it closed itself is history.
        if self._line._tcp is self._transport:
            self._line._lost("connection lost")


class Dlt645Line:
    """The meters behind one serial port or converter: frames out, answers in, in turn."""

    def __init__(self, endpoint: LineEndpoint, *, name: str, frame_gap_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.name = name
        self.frame_gap_s = frame_gap_s
        self._parser = FrameParser()
        self._frames: collections.deque[Frame | BadFrame] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._port: Any = None  # serial.Serial
        self._fd = -1
        self._tcp: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: FdWriter | None = None
        self._broken: str | None = None
        self._last_rx = 0.0
        self._quiet_until = 0.0

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the port or connection is open and working."""
        return (self._port is not None or self._tcp is not None) and self._broken is None

    async def connect(self, *, timeout_s: float = 5.0) -> None:
        """Open the line if it is not open; DeviceUnreachable when that fails."""
        if self.connected:
            return
        self.close()
        loop = self._loop = asyncio.get_running_loop()
        ep = self.endpoint
        if ep.transport == "rtu":
            try:
                port = serial.serial_for_url(
                    line_url(ep.path),
                    baudrate=ep.baudrate,
                    bytesize=ep.bytesize,
                    parity=ep.parity,
                    stopbits=ep.stopbits,
                    timeout=0,
                    write_timeout=0,
                    exclusive=True,  # a second opener would garble the bus
                )
                fd = port.fileno()
                os.set_blocking(fd, False)
            except Exception as exc:  # SerialException, OSError, termios.error, ValueError
                raise DeviceUnreachable(self.name, f"cannot open line: {exc}") from exc
            self._port, self._fd = port, fd
            self._writer = FdWriter(loop, fd, on_error=self._write_failed)
            loop.add_reader(fd, self._on_readable)
            return
        try:
            async with asyncio.timeout(timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: _TcpStream(self), ep.host, ep.port
                )
        except TimeoutError as exc:
            raise DeviceUnreachable(self.name, "connect timeout") from exc
        except OSError as exc:
            raise DeviceUnreachable(self.name, f"cannot connect: {exc.strerror or exc}") from exc
        assert isinstance(transport, asyncio.Transport)
        self._tcp = transport

    def close(self) -> None:
        """Close the port or connection; idempotent."""
        if self._port is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            try:
                self._port.close()
            except Exception:  # already gone (USB adapter unplugged)
                log.debug("%s: closing the port failed", self.name, exc_info=True)
            self._port, self._fd = None, -1
        if self._tcp is not None:
            tcp, self._tcp = self._tcp, None
            tcp.abort()
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._frames.clear()
        self._parser.reset()
        self._broken = None

    # -- bytes in and out ------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        assert self._loop is not None
        self._last_rx = self._loop.time()
        frames = self._parser.feed(data)
        if frames:
            self._frames.extend(frames)
        self._wake.set()

    def _lost(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
        self._wake.set()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._stop_io()
            self._lost(f"connection lost: {exc.strerror or exc}")
            return
        if not data:
            self._stop_io()
            self._lost("connection lost: the port closed")
            return
        self._received(data)

    def _stop_io(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        if self._writer is not None:
            self._writer.stop()

    def _write_failed(self, exc: OSError) -> None:
        self._stop_io()
        self._lost(f"connection lost: {exc.strerror or exc}")

    def _write(self, data: bytes) -> None:
        if self._tcp is not None:
            self._tcp.write(data)
            return
        assert self._writer is not None
        self._writer.write(data)

    # -- transactions ----------------------------------------------------------------------

    async def exchange(
        self, request: bytes, *, timeout_s: float, accept: Callable[[Frame], bool]
    ) -> Frame | BadFrame:
        """Send a request and return the first answer `accept` takes (or a bad frame)."""
        async with self._lock:
            if not self.connected:
                await self.connect(timeout_s=timeout_s)
            loop = asyncio.get_running_loop()
            gap = self._quiet_until - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            self._parser.reset()
            self._frames.clear()
            self._write(request)
            ep = self.endpoint
            deadline = loop.time() + ep.airtime_s(len(request)) + timeout_s
            try:
                return await self._answer(accept, deadline)
            finally:
                self._quiet_until = max(loop.time(), self._last_rx) + self.frame_gap_s

    async def _answer(self, accept: Callable[[Frame], bool], deadline: float) -> Frame | BadFrame:
        loop = asyncio.get_running_loop()
        frames = self._frames
        while True:
            while frames:
                item = frames.popleft()
                if isinstance(item, BadFrame) or accept(item):
                    return item
            if self._broken is not None:
                reason = self._broken
                self.close()
                raise DeviceUnreachable(self.name, reason)
            pending = self._parser.pending()
            if pending:
                more = self._last_rx + self.endpoint.airtime_s(pending) + PARTIAL_GRACE_S
                deadline = max(deadline, more)
            left = deadline - loop.time()
            if left <= 0:
                raise DeviceUnreachable(self.name, "timeout")
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                continue  # look once more: bytes may have completed a frame meanwhile

    async def read_data(
        self, address: bytes, di: int, *, timeout_s: float, preamble: int = 4
    ) -> ReadResult:
        """Read one data identifier: its value bytes, subsequent frames joined.

        Raises DeviceUnreachable when the meter does not answer (or the line is gone).
        """
        di_wire = di_bytes(di)

        def reply_to(function: int) -> Callable[[Frame], bool]:
            # A normal answer for another DI is a late answer to an earlier request.
            return lambda f: (
                f.is_reply
                and f.function == function
                and address_matches(address, f.address)
                and (f.is_error or f.data[:4] == di_wire)
            )

        answer = await self.exchange(
            read_request(address, di, preamble=preamble),
            timeout_s=timeout_s,
            accept=reply_to(READ_DATA),
        )
        if isinstance(answer, BadFrame):
            return BadAnswer(answer.reason)
        if answer.is_error:
            return MeterError(answer.data[0] if answer.data else 0)
        value = bytearray(answer.data[4:])
        seq = 0
        while answer.has_more:
            seq += 1
            if seq > MAX_SUBSEQUENT:
                return BadAnswer(f"more than {MAX_SUBSEQUENT} subsequent frames")
            answer = await self.exchange(
                read_next_request(answer.address, di, seq, preamble=preamble),
                timeout_s=timeout_s,
                accept=reply_to(READ_NEXT),
            )
            if isinstance(answer, BadFrame):
                return BadAnswer(f"{answer.reason} in subsequent frame {seq}")
            if answer.is_error:
                return MeterError(answer.data[0] if answer.data else 0)
            if len(answer.data) < 5:
                return BadAnswer(f"subsequent frame {seq} without its SEQ")
            if answer.data[-1] != seq:
                return BadAnswer(f"subsequent frame {answer.data[-1]} instead of {seq}")
            value += answer.data[4:-1]
        return bytes(value)

    async def read_address(self, *, timeout_s: float, preamble: int = 4) -> str:
        """The address of the only meter on the line (read-address to AAAAAAAAAAAA).

        With several meters on the line their answers collide: expect a timeout or a
        bad checksum, both raised as DeviceUnreachable.
        """
        answer = await self.exchange(
            read_address_request(preamble=preamble),
            timeout_s=timeout_s,
            accept=lambda f: f.is_reply and f.function == READ_ADDRESS,
        )
        if isinstance(answer, BadFrame):
            raise DeviceUnreachable(self.name, answer.reason)
        if answer.is_error or len(answer.data) != 6:
            raise DeviceUnreachable(self.name, "no usable answer to the address query")
        return address_text(answer.data)

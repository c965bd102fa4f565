"""Transports every protocol's simulators share: the reply queue of a connection or line,
and a listener on a tty path (one end of a pty pair, or a real serial port)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import serial

from drivers.fd_writer import FdWriter
from drivers.pyserial_urls import line_url

log = logging.getLogger(__name__)


class SerialEndpoint(Protocol):
    """A serial line's settings, as every protocol's endpoint model gives them."""

    @property
    def path(self) -> str: ...
    @property
    def baudrate(self) -> int: ...
    @property
    def parity(self) -> str: ...
    @property
    def stopbits(self) -> int: ...
    @property
    def bytesize(self) -> int: ...


class ReplyQueue:
    """Answers of one connection or line, written in request order, some after a delay."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[bytes], None],
        close: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._write = write
        self._close = close
        self._batch: list[bytes] = []
        self._delayed: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False

    def put(self, data: bytes | None, delay_s: float = 0.0) -> None:
        """Queue an answer (None closes the connection once everything before it is out)."""
        if self.closing:
            return  # nothing may follow a close, not even answers to later requests
        if data is None:
            self.closing = True
        if delay_s <= 0.0 and not self._delayed:
            if data is None:
                self.flush()
                self._close()
            else:
                self._batch.append(data)
            return
        self.flush()
        due = self._loop.time() + delay_s
        if self._delayed and due < self._delayed[-1][0]:
            due = self._delayed[-1][0]  # never overtake an earlier, slower answer
        self._delayed.append((due, data))
        if self._timer is None:
            self._timer = self._loop.call_at(self._delayed[0][0], self._fire)

    @property
    def pending(self) -> int:
        """Answers queued and not written yet: requests the client has outstanding."""
        return len(self._batch) + len(self._delayed)

    def flush(self) -> None:
        """Write the answers batched so far (one write for a burst of pipelined requests)."""
        if self._batch:
            data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
            self._batch.clear()
            self._write(data)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time() + 1e-6  # the loop may fire a timer a clock tick early
        while self._delayed and self._delayed[0][0] <= now:
            _, data = self._delayed.popleft()
            if data is None:
                self._delayed.clear()
                self._close()
                return
            self._write(data)
        if self._delayed:
            self._timer = self._loop.call_at(self._delayed[0][0], self._fire)

    def cancel(self) -> None:
        """Forget pending answers (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delayed.clear()
        self._batch.clear()


class TtyListener:
    """Answers requests on a tty path (one end of a pty pair, or a real port).

    Reads with loop.add_reader on a non-blocking fd and hands the bytes to `on_bytes`,
    which protocol subclasses (Modbus RTU here, DL/T 645 in dlt645_server.py) implement.
    """

    protocol = "serial"

    def __init__(self, endpoint: SerialEndpoint, names: Sequence[str]) -> None:
        self.endpoint = endpoint
        self.names = list(names)
        self._port: Any = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: FdWriter | None = None
        self._replies: ReplyQueue | None = None
        self._broken = False

    @property
    def url(self) -> str:
        """The URL clients use."""
        return f"rtu://{self.endpoint.path}"

    def on_bytes(self, data: bytes, replies: ReplyQueue, now: float) -> None:
        """Feed received bytes to the protocol and queue its answers."""
        raise NotImplementedError

    async def start(self) -> None:
        """Open the serial path and start answering."""
        ep = self.endpoint
        self._port = serial.serial_for_url(
            line_url(ep.path),
            baudrate=ep.baudrate,
            bytesize=ep.bytesize,
            parity=ep.parity,
            stopbits=ep.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,  # two simulators on one line would garble each other
        )
        self._fd = self._port.fileno()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._writer = FdWriter(
            self._loop, self._fd, on_error=lambda exc: self._fail(f"write failed: {exc}")
        )
        self._replies = ReplyQueue(self._loop, self._write, self._cannot_close)
        self._loop.add_reader(self._fd, self._on_readable)
        log.info("simulating %s %s on %s", self.protocol, ", ".join(self.names), self.url)

    def _cannot_close(self) -> None:
        raise AssertionError("a serial line is never closed by a fault")

    def _on_readable(self) -> None:
        assert self._loop is not None and self._replies is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"read failed: {exc}")
            return
        if not data:
            self._fail("the other end of the line is gone")
            return
        self.on_bytes(data, self._replies, self._loop.time())

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def _fail(self, reason: str) -> None:
        if not self._broken:
            self._broken = True
            log.warning("serial line %s stopped: %s", self.endpoint.path, reason)
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        if self._writer is not None:
            self._writer.stop()

    async def close(self) -> None:
        """Stop answering and close the port."""
        if self._port is None:
            return
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        if self._writer is not None:
            self._writer.stop()
        if self._replies is not None:
            self._replies.cancel()
        self._port.close()
        self._port = None
        self._fd = -1

"""DL/T 645 transports of the simulator: meters on a serial path, or behind a TCP converter.

    Dlt645SerialLine    frames on a tty path (one end of a pty pair), pyserial opened,
                        non-blocking, read with loop.add_reader; several meters share it
    Dlt645TcpListener   the same frames over TCP, as a transparent serial-to-Ethernet
                        converter passes them (rtu+tcp://host:port)

Both cut the byte stream with the driver's own `FrameParser` and hand each request to the
meters of the line, as an RS-485 bus does:

    address of one meter (or a wildcard only one meter fits)   that meter answers
    wildcard several meters fit                                 their answers collide: a
                                                                garbled frame (bad checksum)
    broadcast 999999999999, nobody's address, garbled frames,
    frames sent by meters (an echo)                             no answer

Answers leave through a `ReplyQueue` (shared with the Modbus simulator), which keeps them in
request order when a `slow` meter delays one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

import serial

from drivers.dlt645.config import LineEndpoint
from drivers.dlt645.frame import (
    BROADCAST_ADDRESS,
    BadFrame,
    Frame,
    FrameParser,
    address_bytes,
    address_matches,
)
from drivers.fd_writer import FdWriter
from simulators.dlt645_meter import Dlt645Meter, corrupt
from simulators.modbus_device import Action
from simulators.modbus_server import ReplyQueue

log = logging.getLogger(__name__)

_BROADCAST = address_bytes(BROADCAST_ADDRESS)


def answer_frames(
    meters: Sequence[Dlt645Meter],
    frames: Sequence[Frame | BadFrame],
    replies: ReplyQueue,
    *,
    closable: bool,
) -> None:
    """Give each request to the meter(s) it addresses and queue what they answer.

    `drop` closes a TCP connection (closable); a serial line stays silent instead.
    """
    for frame in frames:
        if isinstance(frame, BadFrame) or frame.is_reply or frame.address == _BROADCAST:
            continue
        fitting = [m for m in meters if address_matches(frame.address, m.address)]
        if not fitting:
            continue
        answers = [m.serve(frame) for m in fitting]
        if closable and any(action is Action.CLOSE for action, _, _ in answers):
            replies.put(None)
            return
        sent = [(out, delay) for action, out, delay in answers if action is Action.SEND]
        if len(sent) == 1:
            replies.put(sent[0][0], sent[0][1])
        elif sent:
            log.debug("wildcard request answered by %d meters: collision", len(sent))
            replies.put(corrupt(sent[0][0]), max(delay for _, delay in sent))
    replies.flush()


class Dlt645SerialLine:
    """Meters on a tty path, read with loop.add_reader on a non-blocking fd."""

    def __init__(self, endpoint: LineEndpoint, meters: Sequence[Dlt645Meter]) -> None:
        self.endpoint = endpoint
        self.meters = list(meters)
        self.parser = FrameParser()
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

    async def start(self) -> None:
        """Open the serial path and start answering."""
        ep = self.endpoint
        self._port = serial.serial_for_url(
            ep.path,
            baudrate=ep.baudrate,
            bytesize=ep.bytesize,
            parity=ep.parity,
            stopbits=ep.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )
        self._fd = self._port.fileno()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._writer = FdWriter(
            self._loop, self._fd, on_error=lambda exc: self._fail(f"write failed: {exc}")
        )
        self._replies = ReplyQueue(self._loop, self._write, self._cannot_close)
        self._loop.add_reader(self._fd, self._on_readable)
        log.info("simulating DL/T 645 %s on %s", ", ".join(m.name for m in self.meters), self.url)

    def _cannot_close(self) -> None:
        raise AssertionError("a serial line is never closed by a fault")

    def _on_readable(self) -> None:
        assert self._replies is not None
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
        frames = self.parser.feed(data)
        if frames:
            answer_frames(self.meters, frames, self._replies, closable=False)

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


class _Connection(asyncio.Protocol):
    """One client of a Dlt645TcpListener: its own frame parser and reply order."""

    def __init__(self, listener: Dlt645TcpListener) -> None:
        self._listener = listener
        self._parser = FrameParser()
        self._transport: asyncio.Transport | None = None
        self._replies: ReplyQueue | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._replies = ReplyQueue(asyncio.get_running_loop(), transport.write, transport.close)
        self._listener.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._replies is not None:
            self._replies.cancel()
        if self._transport is not None:
            self._listener.connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        assert self._replies is not None
        frames = self._parser.feed(data)
        if frames:
            answer_frames(self._listener.meters, frames, self._replies, closable=True)


class Dlt645TcpListener:
    """Meters behind a simulated transparent serial-to-Ethernet converter."""

    def __init__(self, endpoint: LineEndpoint, meters: Sequence[Dlt645Meter]) -> None:
        self.endpoint = endpoint
        self.meters = list(meters)
        self.connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self.port = endpoint.port

    @property
    def url(self) -> str:
        """The URL clients use, with the port actually bound."""
        return f"rtu+tcp://{self.endpoint.host}:{self.port}"

    async def start(self) -> None:
        """Listen on the endpoint's host and port (port 0: any free port, see `port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.endpoint.host, self.endpoint.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulating DL/T 645 %s on %s", ", ".join(m.name for m in self.meters), self.url)

    def drop_connections(self) -> None:
        """Close every client connection (the listener stays)."""
        for transport in list(self.connections):
            transport.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()
        self._server = None

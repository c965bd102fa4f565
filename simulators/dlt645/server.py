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
from collections.abc import Sequence

from drivers.dlt645.config import LineEndpoint
from drivers.dlt645.frame import (
    BROADCAST_ADDRESS,
    BadFrame,
    Frame,
    FrameParser,
    address_bytes,
    address_matches,
)
from simulators.common.requests import Action
from simulators.common.transport import ReplyQueue, TtyListener
from simulators.dlt645.meter import Dlt645Meter, corrupt

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


class Dlt645SerialLine(TtyListener):
    """DL/T 645 meters on a tty path."""

    protocol = "DL/T 645"

    def __init__(self, endpoint: LineEndpoint, meters: Sequence[Dlt645Meter]) -> None:
        super().__init__(endpoint, [m.name for m in meters])
        self.meters = list(meters)
        self.parser = FrameParser()

    def on_bytes(self, data: bytes, replies: ReplyQueue, now: float) -> None:
        """Frames found in the stream; answers from the addressed meters."""
        frames = self.parser.feed(data)
        if frames:
            answer_frames(self.meters, frames, replies, closable=False)


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

"""Modbus transports of the simulator on plain asyncio: TCP, RTU on a serial path, RTU over TCP.

pymodbus's server caps at about 14k requests/s and drops pipelined requests, and it cannot
break frames on purpose, so the simulator frames bytes itself (`simulators.modbus.frames`)
and answers from each device's precomputed image (`simulators.modbus.device`).

    TcpListener      MBAP frames; several device ids share one listener; pipelined
                     requests are answered in order; an unknown device id gets
                     exception 0B (gateway target failed to respond)
    RtuTcpListener   RTU frames (with CRC) over a TCP stream
    SerialLine       RTU frames on a tty path (pyserial, non-blocking, loop.add_reader);
                     several device ids share one line

On the RTU transports a request for a device id nobody serves, or a frame with a bad CRC,
gets no answer at all, as on a real RS-485 line; a byte stream is cut into frames by the
request lengths, and a silence longer than `frame_gap_s` discards a partial frame.

Answers leave through a `ReplyQueue` per connection or line, which keeps them in request
order when a `slow` device delays one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from drivers.modbus.config import Endpoint
from simulators.common.requests import Action
from simulators.common.transport import ReplyQueue, TtyListener
from simulators.modbus.device import SimDevice
from simulators.modbus.frames import (
    GATEWAY_TARGET_FAILED,
    MAX_PDU,
    MBAP,
    MBAP_SIZE,
    exception_pdu,
    mbap_frame,
    rtu_frame,
    rtu_frame_end,
    rtu_frame_pending,
)

log = logging.getLogger(__name__)

FRAME_GAP_S = 0.05
MAX_RTU_FRAME = 256
_BROADCAST = 0
_WRITE_FUNCTIONS = frozenset({5, 6, 15, 16})


def _corrupt_mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    """A broken TCP answer: reads claim more data than they carry, others a wrong length."""
    if pdu[0] in (1, 2, 3, 4) and len(pdu) >= 2:
        return mbap_frame(tid, unit, bytes((pdu[0], min(pdu[1] + 2, 255))) + pdu[2:])
    return MBAP.pack(tid, 0, len(pdu) + 1 + 4, unit) + pdu


def _corrupt_rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytearray(rtu_frame(unit, pdu))
    frame[-1] ^= 0xFF
    return bytes(frame)


class RtuFramer:
    """Cuts an RTU byte stream into request frames: by length, CRC-checked, gap-reset."""

    def __init__(self, *, frame_gap_s: float = FRAME_GAP_S) -> None:
        self.frame_gap_s = frame_gap_s
        self.bad_frames = 0
        self._buffer = bytearray()
        self._last_rx = 0.0

    def feed(self, data: bytes, now: float) -> list[tuple[int, bytes]]:
        """Add received bytes; return the complete (unit, PDU) frames with a good CRC."""
        buf = self._buffer
        if buf and now - self._last_rx > self.frame_gap_s:
            buf.clear()  # the line went quiet mid-frame: what we had was not a frame
            self.bad_frames += 1
        self._last_rx = now
        buf += data
        frames: list[tuple[int, bytes]] = []
        while buf and not rtu_frame_pending(buf):
            # Usually the frame starts the buffer; after line noise, hunt for the first
            # complete frame with a good CRC and drop what came before it.
            found = next(
                ((s, e) for s in range(len(buf) - 3) if (e := rtu_frame_end(buf, s))), None
            )
            if found is None:
                if len(buf) > MAX_RTU_FRAME:
                    del buf[: len(buf) - MAX_RTU_FRAME]
                break
            start, end = found
            if start:
                self.bad_frames += 1
            frames.append((buf[start], bytes(buf[start + 1 : end - 2])))
            del buf[:end]
        return frames


def _serve_rtu(
    devices: Mapping[int, SimDevice],
    frames: list[tuple[int, bytes]],
    replies: ReplyQueue,
    *,
    closable: bool,
) -> None:
    """Answer RTU frames: unknown device ids are ignored, broadcasts write without answer.

    `drop` closes a TCP stream (closable); a serial line cannot be closed, it stays silent.
    """
    for unit, pdu in frames:
        device = devices.get(unit)
        if device is None:
            if unit == _BROADCAST and pdu[0] in _WRITE_FUNCTIONS:
                for each in devices.values():
                    each.respond(pdu)
            continue
        action, out, delay = device.serve(pdu)
        if action is Action.SEND:
            replies.put(rtu_frame(unit, out), delay)
        elif action is Action.CORRUPT:
            replies.put(_corrupt_rtu(unit, out))
        elif action is Action.CLOSE and closable:
            replies.put(None)
            return
    replies.flush()


class _TcpConnection(asyncio.Protocol):
    """One client connection of a TcpListener or RtuTcpListener."""

    def __init__(self, listener: _Listener) -> None:
        self._listener = listener
        self._devices = listener.devices
        self._rtu = listener.rtu
        self._buffer = bytearray()
        self._framer = RtuFramer(frame_gap_s=listener.frame_gap_s)
        self._transport: asyncio.Transport | None = None
        self._replies: ReplyQueue | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._replies = ReplyQueue(asyncio.get_running_loop(), transport.write, transport.close)
        self._listener.connections.add(transport)
        self._listener.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._replies is not None:
            self._replies.cancel()
        if self._transport is not None:
            self._listener.connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        replies = self._replies
        assert replies is not None
        if self._rtu:
            frames = self._framer.feed(data, asyncio.get_running_loop().time())
            if frames:
                _serve_rtu(self._devices, frames, replies, closable=True)
            return
        buf = self._buffer
        buf += data
        devices = self._devices
        pos = 0
        size = len(buf)
        while size - pos >= MBAP_SIZE + 1:
            tid, protocol, length, unit = MBAP.unpack_from(buf, pos)
            if not 2 <= length <= MAX_PDU + 1:
                # The stream is out of step; nothing after this can be trusted.
                log.debug("closing Modbus TCP connection: MBAP length %d", length)
                replies.put(None)
                buf.clear()
                return
            end = pos + 6 + length
            if end > size:
                break
            pdu = bytes(buf[pos + MBAP_SIZE : end])
            pos = end
            if protocol != 0:
                continue
            device = devices.get(unit)
            if device is None:
                replies.put(mbap_frame(tid, unit, exception_pdu(pdu[0], GATEWAY_TARGET_FAILED)))
                continue
            action, out, delay = device.serve(pdu)
            if action is Action.SEND:
                replies.put(mbap_frame(tid, unit, out), delay)
                self._listener.max_outstanding = max(
                    self._listener.max_outstanding, replies.pending
                )
            elif action is Action.CLOSE:
                replies.put(None)
                buf.clear()
                return
            elif action is Action.CORRUPT:
                replies.put(_corrupt_mbap(tid, unit, out))
        if pos:
            del buf[:pos]
        replies.flush()


class _Listener:
    """A TCP listener serving some devices by device id, MBAP or RTU framed."""

    def __init__(
        self,
        endpoint: Endpoint,
        devices: Mapping[int, SimDevice],
        *,
        rtu: bool,
        frame_gap_s: float = FRAME_GAP_S,
    ) -> None:
        self.endpoint = endpoint
        self.devices = dict(devices)
        self.rtu = rtu
        self.frame_gap_s = frame_gap_s
        self.connections: set[asyncio.Transport] = set()
        # What tests ask of a client: how many connections it opened, and the most
        # requests it had outstanding on one connection (1: one transaction at a time).
        self.accepted = 0
        self.max_outstanding = 0
        self._server: asyncio.Server | None = None
        self.port = endpoint.port

    async def start(self) -> None:
        """Listen on the endpoint's host and port (port 0: any free port, see `port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpConnection(self),
            self.endpoint.host,
            self.endpoint.port,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "rtu+tcp" if self.rtu else "tcp"
        log.info(
            "simulating %s on %s://%s:%d",
            ", ".join(d.name for d in self.devices.values()),
            scheme,
            self.endpoint.host,
            self.port,
        )

    @property
    def url(self) -> str:
        """The URL clients use, with the port actually bound."""
        scheme = "rtu+tcp" if self.rtu else "tcp"
        return f"{scheme}://{self.endpoint.host}:{self.port}"

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


class TcpListener(_Listener):
    """Modbus TCP (MBAP) on host:port."""

    def __init__(self, endpoint: Endpoint, devices: Mapping[int, SimDevice]) -> None:
        super().__init__(endpoint, devices, rtu=False)


class RtuTcpListener(_Listener):
    """Modbus RTU frames over a TCP stream on host:port."""

    def __init__(
        self,
        endpoint: Endpoint,
        devices: Mapping[int, SimDevice],
        *,
        frame_gap_s: float = FRAME_GAP_S,
    ) -> None:
        super().__init__(endpoint, devices, rtu=True, frame_gap_s=frame_gap_s)


class SerialLine(TtyListener):
    """Modbus RTU slave(s) on a tty path."""

    protocol = "Modbus RTU"

    def __init__(
        self,
        endpoint: Endpoint,
        devices: Mapping[int, SimDevice],
        *,
        frame_gap_s: float = FRAME_GAP_S,
    ) -> None:
        super().__init__(endpoint, [d.name for d in devices.values()])
        self.devices = dict(devices)
        self.framer = RtuFramer(frame_gap_s=frame_gap_s)

    def on_bytes(self, data: bytes, replies: ReplyQueue, now: float) -> None:
        """RTU frames by length and gap; answers from the addressed units."""
        frames = self.framer.feed(data, now)
        if frames:
            _serve_rtu(self.devices, frames, replies, closable=False)

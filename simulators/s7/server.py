"""The S7 simulator's network side: ISO-on-TCP on asyncio, one CPU per listener.

It answers what a reading client sends a CPU: the COTP connection request (or, with the
`full` fault, a disconnect request, as a CPU whose connection table is full), setup
communication (granting at most MAX_PDU bytes), read-var with several items (per-item
return codes from `SimPlc.read`) and the SZL 0x0424 read of the operating state. Any other
job is answered with an S7 error, so a client sees a refusal, not silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from drivers.s7.config import S7Device, parse_endpoint
from drivers.s7.protocol import (
    ACK_DATA,
    ACK_HEADER,
    COTP_CR,
    DATA_BIT,
    FN_READ_VAR,
    FN_SETUP,
    FN_WRITE_VAR,
    ITEM_HEADER,
    ITEM_SPEC,
    JOB,
    TPKT_HEADER,
    TRANSPORT_BIT,
    USERDATA,
    FrameError,
    Item,
    connection_confirm,
    cotp_kind,
    cpu_state_answer,
    data_frame,
    disconnect_request,
    parse_pdu,
    read_answer,
    setup_answer,
    write_answer,
)
from simulators.s7.plc import SimPlc

log = logging.getLogger(__name__)

MAX_PDU = 480  # what an S7-300/1200 class CPU grants at most here
NOT_SUPPORTED = 0x8104  # object definition error: function not implemented


@dataclass(frozen=True, slots=True)
class S7SimSpec:
    """One CPU to simulate."""

    device: S7Device
    seed: int


class S7Listener:
    """One simulated CPU on its port, with the faults of the control API."""

    def __init__(self, plc: SimPlc, host: str, port: int) -> None:
        self.plc = plc
        self.host = host
        self.port = port
        self.full = False  # connection table full: COTP connects are refused
        self.silent = False  # jobs are read and never answered (a cable pulled mid-way)
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """s7://host:port."""
        return f"s7://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        """Whether connections are accepted."""
        return self._server is not None

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._writers)

    async def start(self) -> None:
        """Listen (port 0: a free one, kept for later restarts)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection: the CPU is unreachable."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        # A closed transport ends its handler's read: wait for them to finish on their own
        # (a cancelled handler is logged by asyncio's stream callback as an error).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                header = await reader.readexactly(4)
                _, _, length = TPKT_HEADER.unpack(header)
                tpdu = await reader.readexactly(max(0, length - 4))
                try:
                    answer = self._answer(tpdu)
                except (IndexError, struct.error, FrameError):
                    answer = self._refusal(tpdu)
                if answer is None:
                    break
                if self.silent and cotp_kind(tpdu) != COTP_CR:
                    continue
                writer.write(answer)
                await writer.drain()
                if cotp_kind(tpdu) == COTP_CR and self.full:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, FrameError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    def _answer(self, tpdu: bytes) -> bytes | None:
        kind = cotp_kind(tpdu)
        if kind == COTP_CR:
            return disconnect_request() if self.full else connection_confirm(tpdu)
        if kind != 0xF0:
            return None
        pdu = parse_pdu(tpdu[3:])
        self.requests += 1
        if pdu.rosctr == JOB and pdu.params[:1] == bytes([FN_SETUP]):
            asked = struct.unpack_from(">H", pdu.params, 6)[0]
            return data_frame(setup_answer(pdu.ref, min(asked, MAX_PDU)))
        if pdu.rosctr == JOB and pdu.params[:1] == bytes([FN_READ_VAR]):
            self.plc.refresh()
            items = []
            for k in range(pdu.params[1]):
                spec = ITEM_SPEC.unpack_from(pdu.params, 2 + k * ITEM_SPEC.size)
                _, _, _, _, count, db, area, address = spec
                items.append(Item(area, db, int.from_bytes(address, "big") >> 3, count))
            return data_frame(read_answer(pdu.ref, [self.plc.read(it) for it in items]))
        if pdu.rosctr == JOB and pdu.params[:1] == bytes([FN_WRITE_VAR]):
            codes = []
            offset = 0
            for k in range(pdu.params[1]):
                spec = ITEM_SPEC.unpack_from(pdu.params, 2 + k * ITEM_SPEC.size)
                _, _, _, transport, count, db, area, address = spec
                where = int.from_bytes(address, "big")
                _, kind, bits = ITEM_HEADER.unpack_from(pdu.data, offset)
                size = 1 if kind == DATA_BIT else (bits + 7) // 8
                data = pdu.data[offset + 4 : offset + 4 + size]
                offset += 4 + size + size % 2
                bit = where & 7 if transport == TRANSPORT_BIT else None
                item = Item(area, db, where >> 3, count)
                codes.append(self.plc.write(item, data, bit))
            return data_frame(write_answer(pdu.ref, codes))
        if pdu.rosctr == USERDATA and len(pdu.data) >= 6 and pdu.data[4:6] == b"\x04\x24":
            return data_frame(cpu_state_answer(pdu.ref, self.plc.cpu_state))
        return self._refusal(tpdu)

    def _refusal(self, tpdu: bytes) -> bytes:
        """An S7 error answer to a job it cannot or will not carry out."""
        ref = int.from_bytes(tpdu[7:9], "big") if len(tpdu) >= 9 else 0
        error = ACK_HEADER.pack(0x32, ACK_DATA, 0, ref, 0, 0, NOT_SUPPORTED >> 8, 0x04)
        return data_frame(error)


class S7Site:
    """The running CPUs of a site, by device name."""

    def __init__(self, listeners: dict[str, S7Listener]) -> None:
        self.listeners = listeners

    def device(self, name: str) -> S7Listener:
        """The listener of one device."""
        return self.listeners[name]


@contextlib.asynccontextmanager
async def serve_s7(specs: Sequence[S7SimSpec]) -> AsyncIterator[S7Site]:
    """Serve every CPU on its URL's host and port; all stop on leaving the block."""
    listeners: dict[str, S7Listener] = {}
    try:
        for spec in specs:
            endpoint = parse_endpoint(spec.device.url)
            plc = SimPlc.for_device(spec.device, spec.seed)
            listener = S7Listener(plc, endpoint.host, endpoint.port)
            await listener.start()
            listeners[spec.device.name] = listener
        yield S7Site(listeners)
    finally:
        for listener in listeners.values():
            await listener.stop()

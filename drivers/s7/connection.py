"""One ISO-on-TCP connection to an S7 CPU: TCP, COTP connect, setup communication.

Every failure to reach or talk to the CPU becomes DeviceUnreachable with a reason a
person can act on: nothing listening, no answer, the CPU refusing the ISO connection
(its connection table is full, or rack/slot/TSAP name no CPU), a broken frame.
"""

from __future__ import annotations

import asyncio
import logging

from drivers.reading import DeviceUnreachable
from drivers.s7.config import Endpoint
from drivers.s7.protocol import (
    COTP_CC,
    COTP_DR,
    TPKT_HEADER,
    Answer,
    FrameError,
    connection_request,
    cotp_kind,
    data_frame,
    parse_pdu,
    parse_setup,
    setup_request,
)

log = logging.getLogger(__name__)

REFUSED_ISO = (
    "PLC refused the ISO connection: its connection table is full, or rack/slot (TSAP) names no CPU"
)


class S7Connection:
    """A connection that is opened on demand and closed on any error."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        name: str,
        local_tsap: int,
        remote_tsap: int,
        pdu_size: int,
        timeout_s: float,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.local_tsap = local_tsap
        self.remote_tsap = remote_tsap
        self.pdu_asked = pdu_size
        self.timeout_s = timeout_s
        self.pdu_size = 0  # granted by the CPU (0: not connected)
        self.bad_answers = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ref = 0

    @property
    def connected(self) -> bool:
        """Whether the ISO connection and the S7 session are up."""
        return self._writer is not None and self.pdu_size > 0

    @property
    def where(self) -> str:
        """host:port."""
        return f"{self.endpoint.host}:{self.endpoint.port}"

    async def connect(self) -> None:
        """TCP, COTP CR/CC and setup communication; DeviceUnreachable when any fails."""
        self.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.endpoint.host, self.endpoint.port),
                self.timeout_s,
            )
        except TimeoutError:
            raise self._down(f"no answer from {self.where} within {self.timeout_s:g} s") from None
        except ConnectionRefusedError:
            raise self._down(f"connection refused by {self.where} (nothing listens)") from None
        except OSError as exc:
            raise self._down(f"cannot reach {self.where}: {exc.strerror or exc}") from None
        self._reader, self._writer = reader, writer
        try:
            writer.write(connection_request(self.local_tsap, self.remote_tsap))
            tpdu = await self._receive("ISO connect")
            kind = cotp_kind(tpdu)
            if kind == COTP_DR:
                raise self._down(REFUSED_ISO)
            if kind != COTP_CC:
                raise self._down(f"not an ISO connection confirm (TPDU 0x{kind:02X})")
            answer = await self.exchange(setup_request(self._next_ref(), self.pdu_asked))
            self.pdu_size = min(parse_setup(answer), self.pdu_asked)
        except FrameError as exc:
            raise self._down(str(exc)) from None
        except DeviceUnreachable:
            self.close()
            raise

    def _down(self, reason: str) -> DeviceUnreachable:
        self.close()
        return DeviceUnreachable(self.name, reason)

    def _next_ref(self) -> int:
        self._ref = self._ref % 0xFFFF + 1
        return self._ref

    async def _receive(self, what: str) -> bytes:
        """One TPKT frame's COTP payload, within the timeout."""
        reader = self._reader
        assert reader is not None
        try:
            # One deadline for the whole frame (cheaper than a wait_for per read).
            async with asyncio.timeout(self.timeout_s):
                header = await reader.readexactly(4)
                version, _, length = TPKT_HEADER.unpack(header)
                if version != 3 or length < 7:
                    raise FrameError(f"not a TPKT frame (version {version}, length {length})")
                return await reader.readexactly(length - 4)
        except FrameError:
            self.bad_answers += 1
            self.close()  # out of step: start over on a fresh connection
            raise
        except TimeoutError:
            raise self._down(f"no answer to {what} within {self.timeout_s:g} s") from None
        except asyncio.IncompleteReadError:
            if what == "ISO connect":
                raise self._down(REFUSED_ISO + " (it closed the connection)") from None
            raise self._down(f"PLC closed the connection during {what}") from None
        except OSError as exc:
            raise self._down(f"connection lost during {what}: {exc.strerror or exc}") from None

    async def exchange(self, pdu: bytes) -> Answer:
        """Send one S7 job and wait for its answer; DeviceUnreachable on no answer, FrameError
        (counted) on an answer that does not parse or belongs to another job."""
        writer = self._writer
        if writer is None:
            raise DeviceUnreachable(self.name, "not connected")
        ref = int.from_bytes(pdu[4:6], "big")
        try:
            writer.write(data_frame(pdu))
        except OSError as exc:
            raise self._down(f"connection lost: {exc.strerror or exc}") from None
        tpdu = await self._receive("a read")
        try:
            if len(tpdu) < 3 or tpdu[1] != 0xF0:
                raise FrameError(f"not a COTP data TPDU (0x{tpdu[1] if len(tpdu) > 1 else 0:02X})")
            answer = parse_pdu(tpdu[3:])
            if answer.ref != ref:
                raise FrameError(f"answer to job {answer.ref}, asked {ref}")
        except FrameError:
            self.bad_answers += 1
            self.close()  # out of step: start over on a fresh connection
            raise
        return answer

    def next_ref(self) -> int:
        """The reference of the next job."""
        return self._next_ref()

    def close(self) -> None:
        """Drop the connection; idempotent."""
        writer, self._writer, self._reader = self._writer, None, None
        self.pdu_size = 0
        if writer is not None:
            writer.close()

"""One connection per line: a TCP connection, a serial port or an RTU-over-TCP socket.

This module, `line` (the asyncio Protocol), `exchange` (requests encoded by pymodbus's PDU
classes and framers) and `answers` (pymodbus's framers, checking answers) are the only
ones that touch Modbus bytes; the serial port is pymodbus's serial transport. Trouble
stops here: no answer or a lost connection becomes `DeviceUnreachable`, an answer that is
malformed or does not match the request becomes `BadAnswer`, and an exception answer
becomes its code (data, not an error), so the rest of the agent never imports pymodbus.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import Counter
from collections.abc import Sequence

from pymodbus.transport.serialtransport import create_serial_connection

from drivers.modbus import exchange as exchanges
from drivers.modbus.answers import Answer
from drivers.modbus.codec import Table
from drivers.modbus.config import Endpoint
from drivers.modbus.exchange import Exchange
from drivers.modbus.line import LineLost, LineProtocol, NoAnswer
from drivers.pyserial_urls import line_url
from drivers.reading import DeviceUnreachable

log = logging.getLogger(__name__)

# pymodbus logs every timeout and reconnect at ERROR; we report device trouble ourselves,
# once per state change, so its per-request noise would drown the useful lines (the
# diagnosis tools and the simulators still use parts of pymodbus that log).
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# The 8 bits of each byte value, least significant first (Modbus packs coils that way).
_BITS = tuple(tuple(bool(b >> i & 1) for i in range(8)) for b in range(256))


class BadAnswer(Exception):
    """The device answered one read, but malformed or not what was asked."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


def _missing_device(endpoint: Endpoint) -> str | None:
    """Why a serial line did not open when its path does not exist; pymodbus only says it
    did not connect, which reads like a refusing peer, while an unplugged adapter is the
    usual cause."""
    if endpoint.transport == "rtu" and not os.path.exists(endpoint.path):
        return f"no such serial device: {endpoint.path}"
    return None


class ModbusConnection:
    """A line to one or more Modbus units; one request at a time."""

    def __init__(self, endpoint: Endpoint, *, name: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.name = name
        self.timeout_s = timeout_s
        self.tcp = endpoint.transport == "tcp"  # MBAP framing; RTU framing otherwise
        # Answers refused (malformed, incomplete, not matching the read) per device id.
        self.bad_answers: Counter[int] = Counter()
        self._line: LineProtocol | None = None

    @property
    def connected(self) -> bool:
        """True while the line is open."""
        return self._line is not None and self._line.up

    def idle_for(self, seconds: float) -> None:
        """Nothing will be sent for about `seconds` (see LineProtocol.idle_for)."""
        if self._line is not None:
            self._line.idle_for(seconds)

    async def connect(self) -> None:
        """Open the line if it is not open; DeviceUnreachable when that fails."""
        if self.connected:
            return
        self.close()
        line = LineProtocol(tcp=self.tcp, timeout_s=self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                transport = await self._open(line)
        except (TimeoutError, OSError) as exc:  # SerialException is an OSError too
            line.close()
            reason = _missing_device(self.endpoint) or "connection refused"
            raise DeviceUnreachable(self.name, reason) from exc
        except Exception as exc:  # termios.error, ValueError of a bad serial setting...
            line.close()
            reason = _missing_device(self.endpoint) or f"cannot open line: {exc}"
            raise DeviceUnreachable(self.name, reason) from exc
        # The serial transport says connection_made a loop turn later; it can send now.
        line.transport = transport
        line.up = True
        self._line = line

    async def _open(self, line: LineProtocol) -> asyncio.BaseTransport:
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        if ep.transport == "rtu":
            transport, _ = await create_serial_connection(
                loop,
                lambda: line,
                line_url(ep.path),
                baudrate=ep.baudrate,
                bytesize=ep.bytesize,
                parity=ep.parity,
                stopbits=ep.stopbits,
                timeout=self.timeout_s,
            )
            return transport
        transport, _ = await loop.create_connection(lambda: line, ep.host, ep.port)
        return transport

    def read_exchange(self, table: Table, start: int, count: int, *, device_id: int) -> Exchange:
        """A read request framed for this line, to send as often as needed."""
        return exchanges.read(table, start, count, device_id=device_id, tcp=self.tcp)

    async def read(
        self, table: Table, start: int, count: int, *, device_id: int
    ) -> bytes | Sequence[bool] | int:
        """Register bytes as on the wire, or bits, or the exception code the device sent.

        BadAnswer when the device answered this read with a malformed frame or one that
        does not match it (unit, function code, byte count); DeviceUnreachable when no
        answer came (the reason names a partial or passed-over answer, if any).
        """
        return await self.fetch(self.read_exchange(table, start, count, device_id=device_id))

    async def fetch(self, exchange: Exchange) -> bytes | Sequence[bool] | int:
        """`read` of a prebuilt read request."""
        answer = await self._ask(exchange)
        if answer.exception is not None:
            return answer.exception
        if exchange.bits:
            return list(itertools.chain.from_iterable(map(_BITS.__getitem__, answer.data)))
        return answer.data

    async def fetch_all(
        self, exchanges: Sequence[Exchange]
    ) -> list[bytes | Sequence[bool] | int | BadAnswer | None]:
        """`fetch` of several prebuilt read requests sent together (Modbus TCP, a device
        that takes pipelined requests): per request its data, exception code or BadAnswer
        (counted, as `fetch` counts it), or None when a broken answer before it closed
        the line (send it again). DeviceUnreachable as for `read`."""
        line = self._line
        if line is None or not line.up:
            raise DeviceUnreachable(self.name, "not connected")
        futures = line.send_all(exchanges)
        results: list[bytes | Sequence[bool] | int | BadAnswer | None] = []
        try:
            for exchange, future in zip(exchanges, futures, strict=True):
                try:
                    answer = await future
                except NoAnswer as exc:
                    reason = self._no_answer_reason(line, exchange.unit)
                    self.close()
                    raise DeviceUnreachable(self.name, reason) from exc
                except (LineLost, OSError) as exc:
                    self.close()
                    raise DeviceUnreachable(self.name, "connection lost") from exc
                if answer is None:
                    results.append(None)
                elif answer.refused is not None:
                    self.bad_answers[exchange.unit] += 1
                    if answer.desync:
                        self.close()
                    results.append(BadAnswer(self.name, answer.refused))
                elif answer.exception is not None:
                    results.append(answer.exception)
                elif exchange.bits:
                    results.append(
                        list(itertools.chain.from_iterable(map(_BITS.__getitem__, answer.data)))
                    )
                else:
                    results.append(answer.data)
        finally:
            if not all(future.done() for future in futures):
                self.close()  # cancelled mid-window: the stream is out of step
            for future in futures:
                # The line fails them all at once; the first one raised, the rest are seen.
                if not future.cancelled():
                    future.exception()
        return results

    async def write(
        self, table: Table, address: int, registers: Sequence[int], *, device_id: int
    ) -> int | None:
        """Write one coil (FC05), one register (FC06) or several (FC16): None when the
        device echoed it, else the exception code it sent. BadAnswer and DeviceUnreachable
        as for `read`."""
        request = exchanges.write(table, address, registers, device_id=device_id, tcp=self.tcp)
        return (await self._ask(request)).exception

    async def _ask(self, exchange: Exchange) -> Answer:
        line = self._line
        if line is None or not line.up:
            raise DeviceUnreachable(self.name, "not connected")
        try:
            answer = await line.send(exchange)
        except NoAnswer as exc:
            reason = self._no_answer_reason(line, exchange.unit)
            if self.tcp:
                # A TCP peer that went silent is usually half-open; start afresh.
                self.close()
            raise DeviceUnreachable(self.name, reason) from exc
        except (LineLost, OSError) as exc:
            self.close()
            raise DeviceUnreachable(self.name, "connection lost") from exc
        if answer.refused is not None:
            self.bad_answers[exchange.unit] += 1
            if answer.desync:
                self.close()  # nothing after a broken MBAP header can be trusted
            raise BadAnswer(self.name, answer.refused)
        return answer

    def _no_answer_reason(self, line: LineProtocol, device_id: int) -> str:
        partial = len(line.buffer)
        if partial:
            self.bad_answers[device_id] += 1
            return f"incomplete answer: {partial} byte{'s' if partial > 1 else ''}, then nothing"
        passed_over = line.framer.passed_over
        if passed_over is not None:
            self.bad_answers[device_id] += 1
            return f"wrong answer: {passed_over}, then nothing"
        return "timeout"

    def close(self) -> None:
        """Close the line; idempotent."""
        line, self._line = self._line, None
        if line is not None:
            line.close()

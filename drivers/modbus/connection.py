"""One pymodbus client per line: a TCP connection, a serial port or an RTU-over-TCP socket.

This module and `answers` (its framers) are the only ones that touch pymodbus. Its
exceptions stop here: no answer or a lost connection becomes `DeviceUnreachable`, an
answer that is malformed or does not match the read becomes `BadAnswer`, and an exception
answer becomes its code (data, not an error), so the rest of the agent never imports
pymodbus.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import DecodePDU

from drivers.modbus.answers import Answer, RtuAnswers, TcpAnswers
from drivers.modbus.codec import Table
from drivers.modbus.config import Endpoint
from drivers.pyserial_urls import line_url
from drivers.reading import DeviceUnreachable

log = logging.getLogger(__name__)

# pymodbus logs every timeout and reconnect at ERROR; we report device trouble ourselves,
# once per state change, so its per-request noise would drown the useful lines.
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
        # Answers refused (malformed, incomplete, not matching the read) per device id.
        self.bad_answers: Counter[int] = Counter()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._framer: TcpAnswers | RtuAnswers | None = None
        self._in_flight = False

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        framer = (
            TcpAnswers(DecodePDU(False))
            if self.endpoint.transport == "tcp"
            else RtuAnswers(DecodePDU(False))
        )
        client = self._new_client(framer)

        def line_changed(up: bool) -> None:
            # pymodbus leaves a read waiting for its timeout when the peer closes or
            # resets the connection; end it now, as a lost connection.
            future = client.ctx.response_future
            if not up and self._in_flight and not future.done():
                future.set_exception(ConnectionException("connection lost"))

        client.ctx.trace_connect = line_changed
        client.ctx.framer = framer
        self._framer = framer
        return client

    def _new_client(
        self, framer: TcpAnswers | RtuAnswers
    ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        # reconnect_delay=0: the poller owns reconnects (capped, jittered, logged once);
        # retries=0: a retry on a shared RS-485 line would steal the other units' time.
        if ep.transport == "rtu":
            return AsyncModbusSerialClient(
                line_url(ep.path),
                framer=FramerType.RTU,
                baudrate=ep.baudrate,
                parity=ep.parity,
                stopbits=ep.stopbits,
                bytesize=ep.bytesize,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=self.name,
                trace_pdu=framer.note_request,
            )
        return AsyncModbusTcpClient(
            ep.host,
            port=ep.port,
            framer=FramerType.RTU if ep.transport == "rtu+tcp" else FramerType.SOCKET,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self.name,
            trace_pdu=framer.note_request,
        )

    @property
    def connected(self) -> bool:
        """True while the line is open."""
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the line if it is not open; DeviceUnreachable when that fails."""
        if self.connected:
            return
        self.close()
        client = self._make_client()
        try:
            ok = await client.connect()
        except Exception as exc:  # OSError, ModbusException, termios.error, SerialException...
            client.close()
            reason = _missing_device(self.endpoint) or f"cannot open line: {exc}"
            raise DeviceUnreachable(self.name, reason) from exc
        if not ok:
            client.close()
            reason = _missing_device(self.endpoint) or "connection refused"
            raise DeviceUnreachable(self.name, reason)
        self._client = client

    async def read(
        self, table: Table, start: int, count: int, *, device_id: int
    ) -> bytes | Sequence[bool] | int:
        """Register bytes as on the wire, or bits, or the exception code the device sent.

        BadAnswer when the device answered this read with a malformed frame or one that
        does not match it (unit, function code, byte count); DeviceUnreachable when no
        answer came (the reason names a partial or passed-over answer, if any).
        """
        client = self._client
        framer = self._framer
        if client is None or framer is None or not client.connected:
            raise DeviceUnreachable(self.name, "not connected")
        self._in_flight = True
        try:
            if table is Table.HOLDING:
                rr = await client.read_holding_registers(start, count=count, device_id=device_id)
            elif table is Table.INPUT:
                rr = await client.read_input_registers(start, count=count, device_id=device_id)
            elif table is Table.COIL:
                rr = await client.read_coils(start, count=count, device_id=device_id)
            else:
                rr = await client.read_discrete_inputs(start, count=count, device_id=device_id)
        except ModbusIOException as exc:
            reason = self._no_answer_reason(client, framer, device_id)
            if self.endpoint.transport == "tcp":
                # A TCP peer that went silent is usually half-open; start afresh.
                self.close()
            raise DeviceUnreachable(self.name, reason) from exc
        except (ConnectionException, OSError) as exc:
            self.close()
            raise DeviceUnreachable(self.name, "connection lost") from exc
        except ModbusException as exc:
            raise DeviceUnreachable(self.name, f"bad answer: {exc}") from exc
        finally:
            self._in_flight = False
        if not isinstance(rr, Answer):
            raise BadAnswer(self.name, f"unexpected answer {type(rr).__name__}")
        if rr.refused is not None:
            self.bad_answers[device_id] += 1
            if rr.desync:
                self.close()  # nothing after a broken MBAP header can be trusted
            raise BadAnswer(self.name, rr.refused)
        if rr.exception is not None:
            return rr.exception
        if table.is_bits:
            return list(itertools.chain.from_iterable(map(_BITS.__getitem__, rr.data)))
        return rr.data

    async def write(
        self, table: Table, address: int, registers: Sequence[int], *, device_id: int
    ) -> int | None:
        """Write one coil (FC05), one register (FC06) or several (FC16): None when the
        device echoed it, else the exception code it sent. BadAnswer and DeviceUnreachable
        as for `read`."""
        client = self._client
        framer = self._framer
        if client is None or framer is None or not client.connected:
            raise DeviceUnreachable(self.name, "not connected")
        self._in_flight = True
        try:
            if table is Table.COIL:
                rr = await client.write_coil(address, bool(registers[0]), device_id=device_id)
            elif len(registers) == 1:
                rr = await client.write_register(address, registers[0], device_id=device_id)
            else:
                rr = await client.write_registers(address, list(registers), device_id=device_id)
        except ModbusIOException as exc:
            reason = self._no_answer_reason(client, framer, device_id)
            if self.endpoint.transport == "tcp":
                self.close()
            raise DeviceUnreachable(self.name, reason) from exc
        except (ConnectionException, OSError) as exc:
            self.close()
            raise DeviceUnreachable(self.name, "connection lost") from exc
        except ModbusException as exc:
            raise DeviceUnreachable(self.name, f"bad answer: {exc}") from exc
        finally:
            self._in_flight = False
        if not isinstance(rr, Answer):
            raise BadAnswer(self.name, f"unexpected answer {type(rr).__name__}")
        if rr.refused is not None:
            self.bad_answers[device_id] += 1
            if rr.desync:
                self.close()
            raise BadAnswer(self.name, rr.refused)
        return rr.exception

    def _no_answer_reason(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        framer: TcpAnswers | RtuAnswers,
        device_id: int,
    ) -> str:
        partial = len(client.ctx.recv_buffer)
        if partial:
            self.bad_answers[device_id] += 1
            return f"incomplete answer: {partial} byte{'s' if partial > 1 else ''}, then nothing"
        if framer.passed_over is not None:
            self.bad_answers[device_id] += 1
            return f"wrong answer: {framer.passed_over}, then nothing"
        return "timeout"

    def close(self) -> None:
        """Close the line; idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

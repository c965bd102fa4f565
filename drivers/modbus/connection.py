"""One pymodbus client per line: a TCP connection, a serial port or an RTU-over-TCP socket.

This is the only module that touches pymodbus. Its exceptions stop here: no answer or a
lost connection becomes `DeviceUnreachable`, an exception answer becomes its code (data,
not an error), so the rest of the agent never imports pymodbus.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from drivers.modbus.codec import Table
from drivers.modbus.config import Endpoint
from drivers.reading import DeviceUnreachable

log = logging.getLogger(__name__)

# pymodbus logs every timeout and reconnect at ERROR; we report device trouble ourselves,
# once per state change, so its per-request noise would drown the useful lines.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class _RawHoldingRegisters(ReadHoldingRegistersResponse):
    """FC03 answer kept as the bytes on the wire.

    pymodbus's own response unpacks every register in a Python loop and renders the whole
    PDU to text for a debug line on every answer; keeping the bytes lets the plan's
    BlockDecoder read every point of the block with one struct call. Registered through
    pymodbus's documented `client.register()` hook for custom responses.
    """

    function_code = 3
    raw = b""

    def decode(self, data: bytes) -> None:
        count = data[0]
        if count >= len(data):
            raise ModbusIOException(
                f"byte_count {count} > length of packet {len(data)}",
                function_code=self.function_code,
            )
        self.raw = bytes(data[1 : 1 + count])

    def __str__(self) -> str:
        return f"{type(self).__name__}(dev_id={self.dev_id}, bytes={len(self.raw)})"


class _RawInputRegisters(_RawHoldingRegisters, ReadInputRegistersResponse):
    """FC04 answer kept as bytes (see _RawHoldingRegisters)."""

    function_code = 4


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
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        client = self._new_client()
        client.register(_RawHoldingRegisters)
        client.register(_RawInputRegisters)
        return client

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        # reconnect_delay=0: the poller owns reconnects (capped, jittered, logged once);
        # retries=0: a retry on a shared RS-485 line would steal the other units' time.
        if ep.transport == "rtu":
            return AsyncModbusSerialClient(
                ep.path,
                framer=FramerType.RTU,
                baudrate=ep.baudrate,
                parity=ep.parity,
                stopbits=ep.stopbits,
                bytesize=ep.bytesize,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=self.name,
            )
        return AsyncModbusTcpClient(
            ep.host,
            port=ep.port,
            framer=FramerType.RTU if ep.transport == "rtu+tcp" else FramerType.SOCKET,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self.name,
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
        """Register bytes as on the wire, or bits, or the exception code the device sent."""
        client = self._client
        if client is None or not client.connected:
            raise DeviceUnreachable(self.name, "not connected")
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
            if self.endpoint.transport == "tcp":
                # A TCP peer that went silent is usually half-open; start afresh.
                self.close()
            raise DeviceUnreachable(self.name, "timeout") from exc
        except (ConnectionException, OSError) as exc:
            self.close()
            raise DeviceUnreachable(self.name, "connection lost") from exc
        except ModbusException as exc:
            raise DeviceUnreachable(self.name, f"bad answer: {exc}") from exc
        if rr.isError():
            return int(getattr(rr, "exception_code", 4))
        if table.is_bits:
            return rr.bits
        if not isinstance(rr, _RawHoldingRegisters):
            raise DeviceUnreachable(self.name, f"unexpected answer {type(rr).__name__}")
        return rr.raw

    def close(self) -> None:
        """Close the line; idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

"""A request built once: its bytes on the wire and what its answer must look like.

The request frames of a poll never change except for the Modbus TCP transaction id, so
each is encoded once, by pymodbus's request PDU classes and framers, when the poll first
runs; sending one is then a two-byte splice (TCP) or nothing at all (RTU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.decoders import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.modbus.answers import Asked
from drivers.modbus.codec import Table

_READS: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
}
_ENCODERS = {"tcp": FramerSocket(DecodePDU(False)), "rtu": FramerRTU(DecodePDU(False))}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request ready to send, and the check its answer goes through."""

    frame: bytes  # RTU: the whole frame; TCP: all but the 2-byte transaction id in front
    unit: int
    asked: Asked
    bits: bool  # a coil or discrete input read: the answer's data are packed bits


def build(pdu: ModbusPDU, *, tcp: bool) -> Exchange:
    """The exchange of one pymodbus request PDU, framed for Modbus TCP or RTU."""
    frame = _ENCODERS["tcp" if tcp else "rtu"].buildFrame(pdu)
    return Exchange(
        frame[2:] if tcp else frame,
        pdu.dev_id,
        Asked.of(pdu),
        pdu.function_code in (1, 2),
    )


def read(table: Table, start: int, count: int, *, device_id: int, tcp: bool) -> Exchange:
    """A read of `count` registers or bits of `table` from `start`."""
    return build(_READS[table](address=start, count=count, dev_id=device_id), tcp=tcp)


def write(
    table: Table, address: int, registers: Sequence[int], *, device_id: int, tcp: bool
) -> Exchange:
    """A write of one coil (FC05), one register (FC06) or several (FC16)."""
    pdu: ModbusPDU
    if table is Table.COIL:
        pdu = WriteSingleCoilRequest(address=address, bits=[bool(registers[0])], dev_id=device_id)
    elif len(registers) == 1:
        pdu = WriteSingleRegisterRequest(
            address=address, registers=[registers[0]], dev_id=device_id
        )
    else:
        pdu = WriteMultipleRegistersRequest(
            address=address, registers=list(registers), dev_id=device_id
        )
    return build(pdu, tcp=tcp)

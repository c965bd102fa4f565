"""Modbus frames on the wire: MBAP (TCP) and RTU (serial, RTU over TCP), CRC-16/Modbus.

These functions only turn bytes into frames and back; what a request means is decided
by `simulators.modbus.device`. All multi-byte fields are big-endian except the RTU CRC.

Modbus TCP (MBAP header + PDU), several frames may follow each other on one stream:

    +---------+---------+---------+------+----------------------+
    | tid  2B | pid  2B | len  2B | unit | PDU: fc, data ...    |
    +---------+---------+---------+------+----------------------+
      echoed    always 0  = 1 + len(PDU)

RTU (serial line and RTU over TCP), frames are delimited by silence on a real line, so
a slave has to know the request lengths to cut a byte stream into frames:

    +------+----+----------------------+--------+--------+
    | unit | fc | data ...             | CRC lo | CRC hi |
    +------+----+----------------------+--------+--------+
    FC 1-6:  unit fc addr(2) count-or-value(2) crc(2)          = 8 bytes
    FC 15/16: unit fc addr(2) count(2) nbytes(1) data(nbytes) crc(2) = 9 + nbytes

Request PDUs handled (responses mirror them):

    FC 1/2/3/4  read:   fc addr(2) count(2)      -> fc nbytes(1) data(nbytes)
    FC 5/6      write:  fc addr(2) value(2)      -> echo of the request
    FC 15/16    write:  fc addr(2) count(2) nbytes(1) data -> fc addr(2) count(2)
    exception:                                   -> fc|0x80 code(1)
"""

from __future__ import annotations

import struct

MBAP = struct.Struct(">HHHB")
MBAP_SIZE = MBAP.size  # 7: the header up to and including the unit id
MAX_PDU = 253  # the largest PDU Modbus allows (RTU frame 256 - unit - CRC)
READ_REQUEST = struct.Struct(">BHH")  # fc, address, count (also FC 5/6: fc, address, value)
WRITE_MULTIPLE_HEADER = struct.Struct(">BHHB")  # fc, address, count, byte count

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
GATEWAY_TARGET_FAILED = 0x0B

FIXED_RTU_REQUEST_SIZE = 8  # FC 1..6
_FIXED_SIZE_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6})
_COUNTED_FUNCTIONS = frozenset({15, 16})


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """Wrap a PDU in an RTU frame: unit, PDU, CRC (low byte first)."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def rtu_crc_ok(frame: bytes | bytearray) -> bool:
    """True when the frame's last two bytes are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def rtu_frame_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """End of a complete request frame with a good CRC at `start`; 0 when there is none.

    FC 1-6 and 15/16 have known lengths; for any other function code the first length
    whose CRC fits is taken (such a frame is answered with exception 01).
    """
    n = len(buffer)
    if n - start < 4:
        return 0
    fc = buffer[start + 1]
    if fc in _FIXED_SIZE_FUNCTIONS:
        end = start + FIXED_RTU_REQUEST_SIZE
    elif fc in _COUNTED_FUNCTIONS:
        if n - start < 7:
            return 0
        end = start + 9 + buffer[start + 6]
    else:
        crc = 0xFFFF
        table = _CRC_TABLE
        for i in range(start, n - 2):
            crc = (crc >> 8) ^ table[(crc ^ buffer[i]) & 0xFF]
            if i > start and crc == buffer[i + 1] | buffer[i + 2] << 8:
                return i + 3
        return 0
    if end > n or not rtu_crc_ok(buffer[start:end]):
        return 0
    return end


def rtu_frame_pending(buffer: bytes | bytearray) -> bool:
    """True while the buffer starts with a known request that has not fully arrived."""
    if len(buffer) < 2:
        return True
    fc = buffer[1]
    if fc in _FIXED_SIZE_FUNCTIONS:
        return len(buffer) < FIXED_RTU_REQUEST_SIZE
    if fc in _COUNTED_FUNCTIONS:
        return len(buffer) < 7 or len(buffer) < 9 + buffer[6]
    return False


def mbap_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    """Wrap a PDU in an MBAP header."""
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


def exception_pdu(function_code: int, code: int) -> bytes:
    """An exception response PDU: the function code with its high bit set, then the code."""
    return bytes(((function_code | 0x80) & 0xFF, code))


def pack_bits(bits: bytes | bytearray) -> bytes:
    """Pack 0/1 bytes into Modbus bit order: first bit in the low bit of the first byte."""
    if not bits:
        return b""
    # One C-level pass: 0/1 bytes -> "01" text, reversed so the first bit is the lowest.
    text = bytes(bits).translate(_BIT_TEXT)[::-1]
    return int(text, 2).to_bytes((len(bits) + 7) // 8, "little")


def unpack_bits(data: bytes, count: int) -> bytes:
    """Unpack Modbus bit order into `count` 0/1 bytes."""
    value = int.from_bytes(data, "little")
    return bytes((value >> i) & 1 for i in range(count))


_BIT_TEXT = bytes.maketrans(b"\x00\x01", b"01")

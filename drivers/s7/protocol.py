"""S7 communication frames: TPKT (RFC 1006) carrying COTP (ISO 8073) carrying S7 PDUs.

Only what a reading gateway needs, for both ends (the simulator builds on it): the COTP
connection request and confirm, setup communication (PDU size negotiation), read-var with
several items, and the SZL 0x0424 read that tells whether the CPU is in RUN or STOP.

    TPKT  03 00 LLLL                      length of the whole frame
    COTP  02 F0 80                        a data TPDU, last unit
    S7    32 ROSCTR 0000 REF PLEN DLEN [ERRCLS ERRCOD] params data
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

TPKT_HEADER = struct.Struct(">BBH")
COTP_DATA = b"\x02\xf0\x80"
COTP_CR = 0xE0
COTP_CC = 0xD0
COTP_DR = 0x80
S7_ID = 0x32
JOB, ACK, ACK_DATA, USERDATA = 0x01, 0x02, 0x03, 0x07
FN_READ_VAR, FN_SETUP = 0x04, 0xF0
REQUEST_HEADER = struct.Struct(">BBHHHH")  # 10 bytes
ACK_HEADER = struct.Struct(">BBHHHHBB")  # 12 bytes: with error class and code
ITEM_SPEC = struct.Struct(">BBBBHHB3s")  # 12 bytes: 12 0A 10 transport count db area address
ITEM_HEADER = struct.Struct(">BBH")  # return code, transport size, length
TRANSPORT_BYTE = 0x02
ITEM_OK = 0xFF
SZL_CPU_STATE = 0x0424
CPU_RUN, CPU_STOP = 0x08, 0x04
# Bytes of a read-var exchange besides the data (for the plan's PDU budget).
READ_REQUEST_BASE = REQUEST_HEADER.size + 2  # header, function, item count
READ_RESPONSE_BASE = ACK_HEADER.size + 2
MAX_ITEMS = 20  # items per read-var request S7 CPUs accept (S7-300: 20, 1200: 20)

# Item return codes (the PLC's answer for one variable).
ITEM_CODES = {
    0x01: "hardware fault",
    0x03: "access denied (S7-1200/1500: enable PUT/GET and turn off optimized block access)",
    0x05: "address out of range",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "object does not exist",
}
# Error classes of a whole answer (S7 header).
ERROR_CLASSES = {
    0x81: "application relationship error",
    0x82: "object definition error",
    0x83: "no resources available",
    0x84: "error on service processing",
    0x85: "error on supplies",
    0x87: "access error",
}


class FrameError(Exception):
    """A frame that does not parse: the connection is out of step."""


def item_reason(code: int) -> str:
    """Quality reason for a refused item, e.g. 'PLC item code 0x05 (address out of range)'."""
    name = ITEM_CODES.get(code)
    return f"PLC item code 0x{code:02X}" + (f" ({name})" if name else "")


def tpkt(payload: bytes) -> bytes:
    """A TPKT frame around a COTP TPDU."""
    return TPKT_HEADER.pack(3, 0, len(payload) + 4) + payload


def data_frame(s7_pdu: bytes) -> bytes:
    """A TPKT frame with a COTP data TPDU holding one S7 PDU."""
    return tpkt(COTP_DATA + s7_pdu)


def tsap(connection_type: int, rack: int, slot: int) -> int:
    """The remote TSAP of a rack/slot: connection type (1 PG, 2 OP, 3 basic), rack*32+slot."""
    return connection_type << 8 | rack << 5 | slot


def connection_request(local_tsap: int, remote_tsap: int) -> bytes:
    """COTP CR with calling and called TSAP and a 1024-byte TPDU size."""
    params = bytes([0xC1, 2]) + local_tsap.to_bytes(2, "big")
    params += bytes([0xC2, 2]) + remote_tsap.to_bytes(2, "big")
    params += bytes([0xC0, 1, 0x0A])
    body = bytes([COTP_CR, 0, 0, 0, 1, 0]) + params
    return tpkt(bytes([len(body)]) + body)


def connection_confirm(request: bytes) -> bytes:
    """The COTP CC answering a CR (the simulator's side); echoes its parameters."""
    params = request[7:]
    body = bytes([COTP_CC, 0, 1, 0, 1, 0]) + params
    return tpkt(bytes([len(body)]) + body)


def disconnect_request() -> bytes:
    """A COTP DR: the connection is refused (the simulator's full connection table)."""
    body = bytes([COTP_DR, 0, 1, 0, 1, 0x01])
    return tpkt(bytes([len(body)]) + body)


def cotp_kind(tpdu: bytes) -> int:
    """The TPDU code (CR, CC, DR, DT) of a COTP payload."""
    if len(tpdu) < 2 or tpdu[0] + 1 > len(tpdu):
        raise FrameError("COTP header truncated")
    return tpdu[1] & 0xF0


def setup_request(ref: int, pdu_size: int) -> bytes:
    """Setup communication: one job at a time each way, the PDU size we ask for."""
    params = struct.pack(">BBHHH", FN_SETUP, 0, 1, 1, pdu_size)
    return REQUEST_HEADER.pack(S7_ID, JOB, 0, ref, len(params), 0) + params


def setup_answer(ref: int, pdu_size: int) -> bytes:
    """The CPU's answer to setup communication, with the PDU size it grants."""
    params = struct.pack(">BBHHH", FN_SETUP, 0, 1, 1, pdu_size)
    return ACK_HEADER.pack(S7_ID, ACK_DATA, 0, ref, len(params), 0, 0, 0) + params


@dataclass(frozen=True, slots=True)
class Item:
    """One variable of a read-var request: bytes of an area (or DB) from `start`."""

    area: int
    db: int
    start: int  # byte offset
    size: int  # bytes


def read_request(ref: int, items: Sequence[Item]) -> bytes:
    """A read-var job with several items, each a byte range."""
    params = bytearray([FN_READ_VAR, len(items)])
    for it in items:
        address = (it.start * 8).to_bytes(3, "big")
        params += ITEM_SPEC.pack(0x12, 0x0A, 0x10, TRANSPORT_BYTE, it.size, it.db, it.area, address)
    return REQUEST_HEADER.pack(S7_ID, JOB, 0, ref, len(params), 0) + bytes(params)


FN_WRITE_VAR = 0x05
TRANSPORT_BIT = 0x01  # an item of one bit (its address counts bits)
DATA_BIT, DATA_BYTES = 0x03, 0x04  # the data's transport size: a bit, or bytes (length in bits)


def write_request(ref: int, item: Item, data: bytes, *, bit: int | None = None) -> bytes:
    """A write-var job of one item: bytes from `item.start`, or one bit of that byte."""
    if bit is None:
        address = (item.start * 8).to_bytes(3, "big")
        spec = ITEM_SPEC.pack(
            0x12, 0x0A, 0x10, TRANSPORT_BYTE, len(data), item.db, item.area, address
        )
        payload = ITEM_HEADER.pack(0x00, DATA_BYTES, len(data) * 8) + data
    else:
        address = (item.start * 8 + bit).to_bytes(3, "big")
        spec = ITEM_SPEC.pack(0x12, 0x0A, 0x10, TRANSPORT_BIT, 1, item.db, item.area, address)
        payload = ITEM_HEADER.pack(0x00, DATA_BIT, 1) + data[:1]
    params = bytes([FN_WRITE_VAR, 1]) + spec
    return REQUEST_HEADER.pack(S7_ID, JOB, 0, ref, len(params), len(payload)) + params + payload


def write_answer(ref: int, codes: Sequence[int]) -> bytes:
    """The CPU's answer to a write-var (the simulator's side): a return code per item."""
    params = bytes([FN_WRITE_VAR, len(codes)])
    data = bytes(codes)
    return ACK_HEADER.pack(S7_ID, ACK_DATA, 0, ref, 2, len(data), 0, 0) + params + data


def parse_write(answer: Answer, items: int) -> list[int]:
    """Per item of a write-var answer: its return code (0xFF done)."""
    if answer.error:
        raise FrameError(f"write refused: {error_text(answer.error)}")
    if len(answer.params) < 2 or answer.params[0] != FN_WRITE_VAR:
        raise FrameError("not a write-var answer")
    if answer.params[1] != items or len(answer.data) < items:
        raise FrameError(f"write-var answer has {answer.params[1]} items, asked {items}")
    return list(answer.data[:items])


def read_answer(ref: int, results: Sequence[tuple[int, bytes]]) -> bytes:
    """The CPU's answer to a read-var (the simulator's side): per item a code and data."""
    data = bytearray()
    for i, (code, payload) in enumerate(results):
        if code == ITEM_OK:
            data += ITEM_HEADER.pack(ITEM_OK, 0x04, len(payload) * 8) + payload
            if len(payload) % 2 and i < len(results) - 1:
                data.append(0)  # items start on even offsets
        else:
            data += ITEM_HEADER.pack(code, 0, 0)
    params = bytes([FN_READ_VAR, len(results)])
    return ACK_HEADER.pack(S7_ID, ACK_DATA, 0, ref, 2, len(data), 0, 0) + params + bytes(data)


def szl_request(ref: int, szl_id: int, index: int) -> bytes:
    """A userdata request reading one SZL list (0x0424: the CPU's operating state)."""
    params = bytes([0x00, 0x01, 0x12, 0x04, 0x11, 0x44, 0x01, 0x00])
    data = struct.pack(">BBHHH", 0xFF, 0x09, 4, szl_id, index)
    return REQUEST_HEADER.pack(S7_ID, USERDATA, 0, ref, len(params), len(data)) + params + data


def cpu_state_answer(ref: int, state: int) -> bytes:
    """The CPU's SZL 0x0424 answer (the simulator's side): one 20-byte record, byte 3 the
    mode (0x08 RUN, 0x04 STOP)."""
    record = bytearray(20)
    record[0:2] = b"\x51\x44"  # event: mode transition
    record[2] = 0xFF
    record[3] = state
    szl = struct.pack(">HHHH", SZL_CPU_STATE, 0, len(record), 1) + bytes(record)
    params = bytes([0x00, 0x01, 0x12, 0x08, 0x12, 0x84, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00])
    data = struct.pack(">BBH", 0xFF, 0x09, len(szl)) + szl
    header = REQUEST_HEADER.pack(S7_ID, USERDATA, 0, ref, len(params), len(data))
    return header + params + data


@dataclass(frozen=True, slots=True)
class Answer:
    """An S7 PDU as received: its kind, reference, header error, parameters and data."""

    rosctr: int
    ref: int
    error: int  # error class << 8 | code (0: none; only in ACK and ACK_DATA)
    params: bytes
    data: bytes


def parse_pdu(pdu: bytes) -> Answer:
    """Split an S7 PDU; FrameError when it is not one."""
    if len(pdu) < REQUEST_HEADER.size or pdu[0] != S7_ID:
        raise FrameError("not an S7 PDU")
    _, rosctr, _, ref, plen, dlen = REQUEST_HEADER.unpack_from(pdu)
    offset = REQUEST_HEADER.size
    error = 0
    if rosctr in (ACK, ACK_DATA):
        if len(pdu) < ACK_HEADER.size:
            raise FrameError("S7 answer header truncated")
        error = pdu[10] << 8 | pdu[11]
        offset = ACK_HEADER.size
    if len(pdu) < offset + plen + dlen:
        raise FrameError(f"S7 PDU truncated: {len(pdu)} bytes, header says {offset + plen + dlen}")
    params = pdu[offset : offset + plen]
    return Answer(rosctr, ref, error, params, pdu[offset + plen : offset + plen + dlen])


def error_text(error: int) -> str:
    """An S7 header error named by its class, e.g. 'S7 error 0x8104 (object definition error)'."""
    name = ERROR_CLASSES.get(error >> 8)
    return f"S7 error 0x{error:04X}" + (f" ({name})" if name else "")


def parse_setup(answer: Answer) -> int:
    """The PDU size a setup answer grants."""
    if answer.error:
        raise FrameError(f"setup communication refused: {error_text(answer.error)}")
    if len(answer.params) < 8 or answer.params[0] != FN_SETUP:
        raise FrameError("not a setup communication answer")
    size: int = struct.unpack_from(">H", answer.params, 6)[0]
    return size


def parse_read(answer: Answer, sizes: Sequence[int]) -> list[tuple[int, bytes]]:
    """Per item of a read-var answer: its return code and data; FrameError on mismatch."""
    if answer.error:
        raise FrameError(f"read refused: {error_text(answer.error)}")
    if len(answer.params) < 2 or answer.params[0] != FN_READ_VAR:
        raise FrameError("not a read-var answer")
    if answer.params[1] != len(sizes):
        raise FrameError(f"read-var answer has {answer.params[1]} items, asked {len(sizes)}")
    data = answer.data
    pos = 0
    out: list[tuple[int, bytes]] = []
    for i, size in enumerate(sizes):
        if pos + 4 > len(data):
            raise FrameError(f"read-var answer truncated at item {i + 1}")
        code, transport, length = ITEM_HEADER.unpack_from(data, pos)
        pos += 4
        if code != ITEM_OK:
            out.append((code, b""))
            continue
        # Lengths are in bits, except for REAL (0x07) and octet strings (0x09): in bytes.
        nbytes = length if transport in (0x07, 0x09) else (length + 7) // 8
        if nbytes != size or pos + nbytes > len(data):
            raise FrameError(f"item {i + 1}: {nbytes} bytes in the answer, asked {size}")
        out.append((code, data[pos : pos + nbytes]))
        pos += nbytes + (nbytes % 2 if i < len(sizes) - 1 else 0)
    return out


def parse_cpu_state(answer: Answer) -> int:
    """The mode byte of an SZL 0x0424 answer (0x08 RUN, 0x04 STOP, other: unknown)."""
    data = answer.data
    if len(data) < 4 + 8 + 4 or data[0] != ITEM_OK:
        raise FrameError("CPU state (SZL 0x0424) not answered")
    return data[4 + 8 + 3]

"""Cutting a read's answer out of the byte stream and checking it against the read.

pymodbus's client framers hand every frame to its PDU decoders: an FC04 answer decodes
fine for an FC03 read (its response class subclasses the FC03 one), more registers than
asked decode fine too, and a byte count that disagrees with the frame raises inside
`data_received`, where asyncio logs a traceback and drops the connection. These framers
(pymodbus's, with their frame cutting replaced) know what is in flight (the `Asked` of the
request, computed once from its pymodbus request PDU when the request is built) and turn
what arrives into exactly one `Answer`: the data, an exception code, or what was wrong with
it. They never raise, so nothing reaches asyncio's fatal-error path.

What is checked, in this order:

    TCP  protocol id 0 and a length 2..254, else "malformed answer" (the stream is out of
         step: the line is dropped); another transaction id: not this read's answer,
         passed over (see below); then unit, function, byte count as for RTU
    RTU  a known function shape, else "malformed answer"; CRC, else "malformed answer";
         another unit: passed over (a late answer on a shared bus; the Modbus serial
         spec keeps the response timeout running); then:
    both function code = the read's (or its exception), else "wrong answer";
         byte count = what the frame carries, else "malformed answer";
         byte count = what the read asked for, else "wrong answer"

A passed-over frame is remembered: if no right answer follows before the timeout, the
connection reports it instead of a bare timeout.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import ModbusPDU

_MBAP = struct.Struct(">HHHB")  # transaction, protocol, length, unit
_MBAP_SIZE = 7
_MAX_PDU = 253
_READS = frozenset({1, 2, 3, 4})
_FIXED_RTU = {5: 8, 6: 8, 15: 8, 16: 8}  # write echoes: unit, fc, 4 bytes, CRC
_BIT_READS = frozenset({1, 2})
_WRITES = frozenset({5, 6, 15, 16})  # answered by an echo: address and value (or count)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Answer:
    """What one request got back: data, an exception code, or why it was refused."""

    __slots__ = ("data", "desync", "exception", "refused")

    def __init__(
        self,
        *,
        data: bytes = b"",
        exception: int | None = None,
        refused: str | None = None,
        desync: bool = False,
    ) -> None:
        self.data = data
        self.exception = exception
        self.refused = refused  # "malformed answer: ..." or "wrong answer: ..."
        self.desync = desync  # the stream's framing can no longer be trusted


@dataclass(frozen=True, slots=True)
class Asked:
    """What the answer to one request must look like."""

    function_code: int
    byte_count: int
    text: str  # "2 registers" / "5 bits" / "an echo of the write", for reasons
    echo: bytes = b""  # a write's answer repeats these 4 bytes of its request

    @classmethod
    def of(cls, pdu: ModbusPDU) -> Asked:
        """What a pymodbus request PDU (a read, or a write answered by an echo) asks for."""
        fc = pdu.function_code
        count = pdu.count
        if fc in _WRITES:
            return cls(fc, 4, "an echo of the write", bytes(pdu.encode()[:4]))
        if fc in _BIT_READS:
            return cls(fc, (count + 7) // 8, _plural(count, "bit"))
        return cls(fc, 2 * count, _plural(count, "register"))


class _ReadAnswers:
    """What the framers share: the request in flight and what was passed over meanwhile."""

    asked = Asked(0, 0, "")
    passed_over: str | None = None

    def expect(self, asked: Asked) -> None:
        """The next answer is to a request that asked this."""
        self.asked = asked
        self.passed_over = None

    def check(self, pdu: bytes, unit: int, exp_unit: int) -> Answer:
        """The answer a complete PDU from the expected transaction / unit gives."""
        fc = pdu[0]
        asked = self.asked
        expected = asked.function_code
        if unit != exp_unit:
            return Answer(refused=f"wrong answer: unit {unit} (asked {exp_unit})")
        if fc == expected | 0x80:
            if len(pdu) != 2:
                return Answer(refused=f"malformed answer: exception answer of {len(pdu)} bytes")
            return Answer(exception=pdu[1])
        if fc != expected:
            return Answer(refused=f"wrong answer: function code {fc} (asked {expected})")
        if expected in _WRITES:
            if len(pdu) != 5:
                return Answer(refused=f"malformed answer: write echo of {len(pdu)} bytes")
            if pdu[1:5] != asked.echo:
                return Answer(
                    refused=f"wrong answer: echo {pdu[1:5].hex()} (sent {asked.echo.hex()})"
                )
            return Answer(data=pdu[1:5])
        if len(pdu) < 2 or pdu[1] != len(pdu) - 2:
            carried = max(0, len(pdu) - 2)
            said = f"byte count {pdu[1]}" if len(pdu) > 1 else "no byte count"
            return Answer(refused=f"malformed answer: {said} but {carried} data bytes")
        if pdu[1] != asked.byte_count:
            return Answer(refused=f"wrong answer: {pdu[1]} data bytes (asked {asked.text})")
        return Answer(data=pdu[2:])


class TcpAnswers(_ReadAnswers, FramerSocket):
    """Modbus TCP (MBAP) answers to the agent's reads."""

    def cut(self, data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, Answer | None]:
        """(bytes used, the answer or None to wait for more); never raises."""
        used = 0
        size = len(data)
        while size - used >= _MBAP_SIZE + 1:
            tid, protocol, length, unit = _MBAP.unpack_from(data, used)
            if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:
                what = f"protocol id {protocol}" if protocol else f"MBAP length {length}"
                return size, Answer(refused=f"malformed answer: {what}", desync=True)
            end = used + 6 + length
            if end > size:
                break
            if tid != exp_tid:
                self.passed_over = f"transaction {tid} (asked {exp_tid})"
                used = end
                continue
            return end, self.check(data[used + _MBAP_SIZE : end], unit, exp_devid)
        return used, None

    def cut_any(
        self, data: bytes, waiting: Mapping[int, tuple[int, Asked]]
    ) -> tuple[int, int, Answer | None]:
        """As `cut` with several requests in flight, `waiting`: transaction id -> (unit,
        asked). (bytes used, the transaction answered, its answer or None to wait for
        more); a broken MBAP header answers transaction -1."""
        used = 0
        size = len(data)
        while size - used >= _MBAP_SIZE + 1:
            tid, protocol, length, unit = _MBAP.unpack_from(data, used)
            if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:
                what = f"protocol id {protocol}" if protocol else f"MBAP length {length}"
                return size, -1, Answer(refused=f"malformed answer: {what}", desync=True)
            end = used + 6 + length
            if end > size:
                break
            expected = waiting.get(tid)
            if expected is None:
                self.passed_over = f"transaction {tid} (asked {', '.join(map(str, waiting))})"
                used = end
                continue
            self.asked = expected[1]
            return end, tid, self.check(data[used + _MBAP_SIZE : end], unit, expected[0])
        return used, 0, None


class RtuAnswers(_ReadAnswers, FramerRTU):
    """Modbus RTU answers to the agent's reads (a serial line or RTU over TCP)."""

    def cut(self, data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, Answer | None]:
        """(bytes used, the answer or None to wait for more); never raises."""
        used = 0
        size = len(data)
        while size - used >= 3:
            unit, fc, third = data[used], data[used + 1], data[used + 2]
            if fc & 0x80:
                length = 5
            elif fc in _READS:
                length = 5 + third
            elif fc in _FIXED_RTU:
                length = _FIXED_RTU[fc]
            else:
                return size, Answer(refused=f"malformed answer: function code {fc}")
            end = used + length
            if end > size:
                break
            frame = data[used:end]
            if not self.check_CRC(frame[:-2], (frame[-2] << 8) | frame[-1]):
                return size, Answer(refused="malformed answer: bad CRC")
            if unit != exp_devid:
                self.passed_over = f"unit {unit} (asked {exp_devid})"
                used = end
                continue
            return size, self.check(frame[1:-2], unit, exp_devid)
        return used, None

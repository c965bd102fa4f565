"""DL/T 645-2007 frames on the wire: build them, and cut a byte stream back into them.

    FE FE FE FE  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA (L bytes, each +33H)  CS  16
    ^ wake-up     ^ start               ^ start      ^ length                 ^ sum of 68..DATA
      preamble      address, BCD, low byte first       (read answers <= 200)   modulo 256

- Address: 12 BCD digits, sent lowest byte first, so "000000123456" goes out as
  56 34 12 00 00 00. 999999999999 is the broadcast address (only for broadcast commands
  such as time sync; no meter answers it). AA bytes are wildcards: the high bytes of an
  address may be AA ("shortened addressing"), and AAAAAAAAAAAA reaches any meter, which is
  how a lone meter's address is read (function 13H). An answer always carries the meter's
  real address.
- Control byte C: D7 direction (1 = answer from the meter), D6 error answer, D5 more frames
  follow (subsequent frames), D4..D0 function: 11H read data, 12H read subsequent data,
  13H read address, 08H broadcast time sync, 14H write data.
- DATA: every byte goes on the wire plus 33H (mod 256) and comes off minus 33H.
- A read request carries the 4-byte data identifier (DI0 first); its normal answer
  (C = 91H, or B1H when subsequent frames follow) repeats the DI, then the value bytes;
  an error answer (C = D1H) carries one error-information byte (ERR, a bit field).
  Subsequent data is fetched with C = 12H, DATA = DI + SEQ (1, 2, ...); each answer
  (92H, or B2H while more follow) carries DI + value bytes + SEQ.
- The sender may put up to four FEH bytes before the frame to wake the receiver; a
  receiver skips anything before the first 68H.

This module only turns bytes into frames and back; the driver (`drivers.dlt645.line`) and
the simulator decide what a frame means.
"""

from __future__ import annotations

from dataclasses import dataclass

START = 0x68
END = 0x16
WAKE = 0xFE
DATA_OFFSET = 0x33
HEADER_SIZE = 10  # 68 A0..A5 68 C L
FRAME_OVERHEAD = 12  # header + CS + 16
MAX_DATA = 255  # L is one byte; the standard caps read answers at 200, writes at 50
MAX_READ_DATA = 200
MAX_PREAMBLE = 4

# Control byte
REPLY = 0x80
ERROR = 0x40
MORE = 0x20
FUNCTION_MASK = 0x1F

# Functions
BROADCAST_TIME = 0x08
READ_DATA = 0x11
READ_NEXT = 0x12
READ_ADDRESS = 0x13
WRITE_DATA = 0x14

BROADCAST_ADDRESS = "999999999999"
WILDCARD_ADDRESS = "AAAAAAAAAAAA"
_WILDCARD_BYTE = 0xAA

# ERR, the error information word (错误信息字) of an error answer: one bit per cause
ERROR_BITS = (
    (0x01, "other error"),  # 其他错误
    (0x02, "no requested data"),  # 无请求数据
    (0x04, "password error or unauthorized"),  # 密码错/未授权
    (0x08, "baud rate cannot be changed"),  # 通信速率不能更改
    (0x10, "too many year time zones"),  # 年时区数超
    (0x20, "too many day time periods"),  # 日时段数超
    (0x40, "too many tariffs"),  # 费率数超
)


def error_reason(err: int) -> str:
    """Quality reason for an error answer, e.g. 'error 02 (no requested data)'."""
    names = [name for bit, name in ERROR_BITS if err & bit]
    return f"error {err:02X}" + (f" ({', '.join(names)})" if names else "")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """CS: the sum of every byte from the first 68H to the last data byte, modulo 256."""
    return sum(data) & 0xFF


def _digits_ok(text: str) -> bool:
    return len(text) == 2 and text.isascii() and text.isdigit()


def address_bytes(address: str) -> bytes:
    """The 6 address bytes as sent (lowest first) for a 12-character address.

    Each two-character group is two decimal digits or AA (a wildcard byte).
    """
    if len(address) != 12:
        raise ValueError(f"an address has 12 characters, got {len(address)} in {address!r}")
    groups = [address[i : i + 2] for i in range(0, 12, 2)]
    out = bytearray()
    for group in reversed(groups):
        if group.upper() == "AA":
            out.append(_WILDCARD_BYTE)
        elif _digits_ok(group):
            out.append(int(group, 16))
        else:
            raise ValueError(f"address {address!r}: {group!r} is neither two digits nor AA")
    return bytes(out)


def address_text(raw: bytes) -> str:
    """The 12-character address of 6 wire bytes (lowest first), e.g. '000000123456'."""
    return "".join(f"{b:02X}" for b in reversed(raw))


def address_matches(pattern: bytes, actual: bytes) -> bool:
    """True when `actual` is `pattern` with every AA (wildcard) byte filled in."""
    return len(pattern) == len(actual) == 6 and all(
        p in (_WILDCARD_BYTE, a) for p, a in zip(pattern, actual, strict=True)
    )


def di_bytes(di: int) -> bytes:
    """A data identifier as sent: DI0 first (DI 00010000 -> 00 00 01 00)."""
    return di.to_bytes(4, "little")


def di_text(di: int) -> str:
    """A data identifier as the standard prints it: DI3 DI2 DI1 DI0, e.g. '00010000'."""
    return f"{di:08X}"


def scramble(data: bytes | bytearray) -> bytes:
    """Add 33H to every data byte (sending side)."""
    return bytes((b + DATA_OFFSET) & 0xFF for b in data)


def unscramble(data: bytes | bytearray) -> bytes:
    """Subtract 33H from every data byte (receiving side)."""
    return bytes((b - DATA_OFFSET) & 0xFF for b in data)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: the address as on the wire, the control byte, the data less its 33H offset."""

    address: bytes
    control: int
    data: bytes

    @property
    def function(self) -> int:
        """D4..D0 of the control byte."""
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        """True for a frame sent by a meter."""
        return bool(self.control & REPLY)

    @property
    def is_error(self) -> bool:
        """True for an error answer (its data is the ERR byte)."""
        return bool(self.control & ERROR)

    @property
    def has_more(self) -> bool:
        """True when subsequent frames follow."""
        return bool(self.control & MORE)

    def encode(self, *, preamble: int = 0) -> bytes:
        """The frame's bytes, after `preamble` wake-up FEH bytes."""
        return encode_frame(self.address, self.control, self.data, preamble=preamble)


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A complete-looking frame whose checksum does not add up (line noise, a collision)."""

    reason: str


def encode_frame(address: bytes, control: int, data: bytes, *, preamble: int = 0) -> bytes:
    """Build a frame from wire-order address bytes, control byte and plain data bytes."""
    if len(address) != 6:
        raise ValueError(f"an address is 6 bytes, got {len(address)}")
    if len(data) > MAX_DATA:
        raise ValueError(f"data of {len(data)} bytes does not fit a frame (at most {MAX_DATA})")
    if not 0 <= preamble <= MAX_PREAMBLE:
        raise ValueError(f"preamble is 0..{MAX_PREAMBLE} bytes, got {preamble}")
    body = bytes((START, *address, START, control & 0xFF, len(data))) + scramble(data)
    return bytes((WAKE,)) * preamble + body + bytes((checksum(body), END))


def read_request(address: bytes, di: int, *, preamble: int = 0) -> bytes:
    """A read-data request (11H) for one data identifier."""
    return encode_frame(address, READ_DATA, di_bytes(di), preamble=preamble)


def read_next_request(address: bytes, di: int, seq: int, *, preamble: int = 0) -> bytes:
    """A read-subsequent-data request (12H): DI and the number of the frame wanted."""
    return encode_frame(address, READ_NEXT, di_bytes(di) + bytes((seq & 0xFF,)), preamble=preamble)


def read_address_request(*, preamble: int = 0) -> bytes:
    """A read-address request (13H) to the wildcard address: only a lone meter may answer."""
    return encode_frame(bytes((_WILDCARD_BYTE,)) * 6, READ_ADDRESS, b"", preamble=preamble)


class FrameParser:
    """Cuts a received byte stream into frames: skips wake-up bytes and noise, checks CS.

    A frame is recognised by its two 68H bytes, its length and its 16H end byte; one whose
    checksum is wrong comes out as a `BadFrame`. Anything else before a frame start is
    dropped (counted in `noise`), so the parser finds its way back into step after garbage.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.noise = 0  # bytes dropped that were neither wake-up bytes nor frames

    def reset(self) -> None:
        """Forget a partial frame (before a new request: late bytes are not its answer)."""
        self._buffer.clear()

    def pending(self) -> int:
        """Bytes still missing from the frame in progress (0: no frame in progress)."""
        buf = self._buffer
        if not buf or buf[0] != START:
            return 0
        if len(buf) < HEADER_SIZE:
            return HEADER_SIZE + 2 - len(buf)
        return max(0, FRAME_OVERHEAD + buf[9] - len(buf))

    def feed(self, data: bytes | bytearray) -> list[Frame | BadFrame]:
        """Add received bytes; return the frames they complete."""
        buf = self._buffer
        buf += data
        out: list[Frame | BadFrame] = []
        while buf:
            start = buf.find(START)
            if start < 0:
                self.noise += len(buf) - buf.count(WAKE)
                buf.clear()
                break
            if start:
                self.noise += start - buf.count(WAKE, 0, start)
                del buf[:start]
            if len(buf) < HEADER_SIZE:
                break
            if buf[7] != START:
                self.noise += 1
                del buf[0]  # a 68H that does not start a frame
                continue
            size = FRAME_OVERHEAD + buf[9]
            if len(buf) < size:
                break
            if buf[size - 1] != END:
                self.noise += 1
                del buf[0]
                continue
            if checksum(buf[: size - 2]) != buf[size - 2]:
                out.append(BadFrame("bad checksum"))
            else:
                out.append(Frame(bytes(buf[1:7]), buf[8], unscramble(buf[10 : size - 2])))
            del buf[:size]
        return out

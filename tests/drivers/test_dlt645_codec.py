"""DL/T 645-2007 frames and value formats against bytes worked out by hand, plus round trips.

Every expected byte string below was computed by hand from the standard's frame rules
(DL/T 645-2007 clause 4: 68H A0..A5 68H C L DATA CS 16H; address and data low byte first;
DATA + 33H; CS = sum from the first 68H to the last data byte, modulo 256), not by the
code under test; each test says how.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlt645.formats import (
    DecodeError,
    FieldKind,
    decode,
    decode_field,
    encode,
    encode_field,
    parse_format,
)
from drivers.dlt645.frame import (
    BadFrame,
    Frame,
    FrameParser,
    address_bytes,
    address_matches,
    address_text,
    checksum,
    encode_frame,
    error_reason,
    read_address_request,
    read_next_request,
    read_request,
    scramble,
    unscramble,
)
from drivers.dlt645.identifiers import IDENTIFIERS, lookup

ADDR = address_bytes("000000123456")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- frames --------------------------------------------------------------------------------


def test_address_goes_out_lowest_byte_first() -> None:
    # "000000123456": groups 00 00 00 12 34 56, sent A0 (lowest) first.
    assert address_bytes("000000123456") == h("56 34 12 00 00 00")
    assert address_text(ADDR) == "000000123456"
    # Shortened addressing: the high bytes are AAH wildcards.
    assert address_bytes("AAAAAA123456") == h("56 34 12 AA AA AA")
    assert address_matches(h("56 34 12 AA AA AA"), ADDR)
    assert not address_matches(h("56 34 13 AA AA AA"), ADDR)
    assert address_matches(h("AA AA AA AA AA AA"), h("01 00 00 00 00 00"))
    with pytest.raises(ValueError, match="neither two digits nor AA"):
        address_bytes("00000012345A")
    with pytest.raises(ValueError, match="12 characters"):
        address_bytes("123456")


def test_read_request_for_import_energy() -> None:
    # DI 00010000 -> DI0..DI3 = 00 00 01 00 -> +33H: 33 33 34 33.
    # CS: 68+56+34+12+00+00+00+68+11+04+33+33+34+33 = 0x24E -> 4E.
    expected = h("FE FE FE FE 68 56 34 12 00 00 00 68 11 04 33 33 34 33 4E 16")
    assert read_request(ADDR, 0x00010000, preamble=4) == expected
    assert read_request(ADDR, 0x00010000) == expected[4:]


def test_normal_answer_with_12345_67_kwh() -> None:
    # XXXXXX.XX 12345.67 -> digits 01 23 45 67 -> low byte first 67 45 23 01 -> +33H
    # 9A 78 56 34. C = 91H (answer, read data), L = 8 (DI + 4 value bytes).
    # CS: 0x16C (68 A 68) + 91 + 08 + CD (33 33 34 33) + 9A + 78 + 56 + 34 = 0x46E -> 6E.
    wire = h("68 56 34 12 00 00 00 68 91 08 33 33 34 33 9A 78 56 34 6E 16")
    value = encode(parse_format("XXXXXX.XX"), [12345.67])
    assert value == h("67 45 23 01")
    assert encode_frame(ADDR, 0x91, h("00 00 01 00") + value) == wire
    frames = FrameParser().feed(wire)
    assert frames == [Frame(ADDR, 0x91, h("00 00 01 00 67 45 23 01"))]
    frame = frames[0]
    assert isinstance(frame, Frame)
    assert frame.is_reply and not frame.is_error and not frame.has_more and frame.function == 0x11
    assert decode(parse_format("XXXXXX.XX"), frame.data[4:]) == [12345.67]


def test_error_answer_no_requested_data() -> None:
    # C = D1H (answer + error + read data), L = 1, ERR 02H + 33H = 35H.
    # CS: 0x16C + D1 + 01 + 35 = 0x273 -> 73.
    wire = h("68 56 34 12 00 00 00 68 D1 01 35 73 16")
    assert encode_frame(ADDR, 0xD1, b"\x02") == wire
    (frame,) = FrameParser().feed(wire)
    assert isinstance(frame, Frame) and frame.is_error and frame.data == b"\x02"
    assert error_reason(0x02) == "error 02 (no requested data)"
    assert error_reason(0x05) == "error 05 (other error, password error or unauthorized)"
    assert error_reason(0x80) == "error 80"


def test_read_address_request_and_answer() -> None:
    # The well-known address query: 68 AA*6 68 13 00; CS = 68+68+6*AA+13 = 0x4DF -> DF.
    assert read_address_request() == h("68 AA AA AA AA AA AA 68 13 00 DF 16")
    # Answer from 000000123456: C = 93H, L = 6, data = the address + 33H: 89 67 45 33 33 33.
    # CS: 0x16C + 93 + 06 + 89 + 67 + 45 + 33 + 33 + 33 = 0x3D3 -> D3.
    wire = h("68 56 34 12 00 00 00 68 93 06 89 67 45 33 33 33 D3 16")
    (frame,) = FrameParser().feed(wire)
    assert isinstance(frame, Frame) and frame.function == 0x13 and frame.data == ADDR


def test_read_subsequent_data_request() -> None:
    # C = 12H, L = 5: DI 00010000 (33 33 34 33) and SEQ 1 (+33H = 34).
    # CS: 0x16C + 12 + 05 + CD + 34 = 0x284 -> 84.
    assert read_next_request(ADDR, 0x00010000, 1) == h(
        "68 56 34 12 00 00 00 68 12 05 33 33 34 33 34 84 16"
    )


def test_parser_skips_wakeup_bytes_noise_and_checks_the_sum() -> None:
    good = h("68 56 34 12 00 00 00 68 D1 01 35 73 16")
    bad = bytearray(good)
    bad[-2] = 0x74  # checksum off by one
    parser = FrameParser()
    stream = h("FE FE 00 68 01 FE FE FE FE") + good + bytes(bad) + good
    out: list[Frame | BadFrame] = []
    for byte in stream:  # byte by byte, as a slow line delivers them
        out.extend(parser.feed(bytes((byte,))))
    assert [type(x).__name__ for x in out] == ["Frame", "BadFrame", "Frame"]
    assert out[1] == BadFrame("bad checksum")
    assert parser.noise == 3  # 00, the stray 68 and 01; FEH bytes are not noise


def test_parser_reports_missing_bytes_of_a_frame_in_progress() -> None:
    wire = h("68 56 34 12 00 00 00 68 91 08 33 33 34 33 9A 78 56 34 6E 16")
    parser = FrameParser()
    assert parser.feed(wire[:5]) == [] and parser.pending() == 7  # up to L plus CS, 16
    assert parser.feed(wire[5:12]) == [] and parser.pending() == 8  # L = 8 known now
    assert len(parser.feed(wire[12:])) == 1 and parser.pending() == 0


def test_data_offset_is_modulo_256() -> None:
    assert scramble(h("00 CC CD FF")) == h("33 FF 00 32")
    assert unscramble(h("33 FF 00 32")) == h("00 CC CD FF")
    assert checksum(h("FF FF 02")) == 0x00


# --- value formats -------------------------------------------------------------------------


def test_formats_parse_into_fields() -> None:
    demand = parse_format("XX.XXXX,YYMMDDhhmm")
    assert [(f.kind, f.size) for f in demand.fields] == [(FieldKind.NUMBER, 3), (FieldKind.TIME, 5)]
    assert demand.size == 8
    power = parse_format("-XX.XXXX").fields[0]
    assert power.signed and power.decimals == 4 and power.limit == 800000
    for bad in ("XXX", "X.XX.X", "YYMMDDhh m", "NNN", "YYYY", "", "Q"):
        with pytest.raises(ValueError):
            parse_format(bad)


@pytest.mark.parametrize(
    ("fmt", "value", "wire"),
    [
        # 220.1 V: digits 2201, low byte first 01 22 (on the wire +33H: 34 55).
        ("XXX.X", 220.1, "01 22"),
        # 1.234 A: digits 001234 -> 34 12 00.
        ("-XXX.XXX", 1.234, "34 12 00"),
        # -1.2345 kW: digits 012345, sign bit on the top byte 81 -> 45 23 81.
        ("-XX.XXXX", -1.2345, "45 23 81"),
        # PF -0.5: digits 0500, sign bit -> 85 00 -> 00 85.
        ("-X.XXX", -0.5, "00 85"),
        # 50.02 Hz -> 02 50.
        ("XX.XX", 50.02, "02 50"),
        # 15 minutes -> 15.
        ("XX", 15, "15"),
        # A status word 0x0014 = 20, low byte first.
        ("HHHH", 20, "14 00"),
        # The address as digits, low byte first.
        ("NNNNNNNNNNNN", "000000123456", "56 34 12 00 00 00"),
        # 13:45:07 -> ss mm hh = 07 45 13.
        ("hhmmss", "13:45:07", "07 45 13"),
        # 2024-05-01 was a Wednesday (WW = 3): WW DD MM YY = 03 01 05 24.
        ("YYMMDDWW", "2024-05-01", "03 01 05 24"),
    ],
)
def test_field_bytes_by_hand(fmt: str, value: object, wire: str) -> None:
    field = parse_format(fmt).fields[0]
    assert encode_field(field, value) == h(wire)  # type: ignore[arg-type]
    assert decode_field(field, h(wire)) == value


def test_maximum_demand_with_its_time() -> None:
    # 12.3456 kW -> 56 34 12; 2024-05-01 13:45 (YYMMDDhhmm) -> mm hh DD MM YY = 45 13 01 05 24.
    fmt = parse_format("XX.XXXX,YYMMDDhhmm")
    wire = h("56 34 12 45 13 01 05 24")
    assert encode(fmt, [12.3456, dt.datetime(2024, 5, 1, 13, 45, 59)]) == wire
    assert decode(fmt, wire) == [12.3456, "2024-05-01T13:45"]


def test_fields_that_do_not_decode_say_why() -> None:
    fmt = parse_format("XXXXXX.XX,YYMMDDhhmm")
    values = decode(fmt, h("67 4A 23 01 00 00 00 00 00"))
    assert [str(v) for v in values] == [
        "invalid BCD digit in 67 4A 23 01 (XXXXXX.XX)",
        "not set (all zero, YYMMDDhhmm)",
    ]
    assert all(isinstance(v, DecodeError) for v in values)
    (short,) = decode(parse_format("XXXXXX.XX"), h("67 45"))
    assert str(short) == "short answer: 2 of 4 bytes (XXXXXX.XX)"
    (month,) = decode(parse_format("YYMMDD"), h("01 13 24"))
    assert str(month) == "MM 13 out of range (YYMMDD)"
    # Midnight is a time, not "not set".
    assert decode(parse_format("hhmmss"), h("00 00 00")) == ["00:00:00"]
    with pytest.raises(ValueError, match="does not fit"):
        encode_field(parse_format("-XX.XXXX").fields[0], 80.0)  # the top bit is the sign
    with pytest.raises(ValueError, match="negative"):
        encode_field(parse_format("XX.XX").fields[0], -1.0)


def test_the_table_knows_the_common_identifiers() -> None:
    expected = {
        0x00000000: ("-XXXXXX.XX", "kWh"),
        0x00010000: ("XXXXXX.XX", "kWh"),
        0x00010100: ("XXXXXX.XX", "kWh"),
        0x00010400: ("XXXXXX.XX", "kWh"),
        0x00020000: ("XXXXXX.XX", "kWh"),
        0x00030000: ("-XXXXXX.XX", "kvarh"),
        0x00050000: ("XXXXXX.XX", "kvarh"),
        0x00150000: ("XXXXXX.XX", "kWh"),
        0x0001FF00: (",".join(["XXXXXX.XX"] * 5), "kWh"),
        0x01010000: ("XX.XXXX,YYMMDDhhmm", "kW"),
        0x01030000: ("-XX.XXXX,YYMMDDhhmm", "kvar"),
        0x02010100: ("XXX.X", "V"),
        0x0201FF00: ("XXX.X,XXX.X,XXX.X", "V"),
        0x02020100: ("-XXX.XXX", "A"),
        0x02030000: ("-XX.XXXX", "kW"),
        0x02040300: ("-XX.XXXX", "kvar"),
        0x02050000: ("-XX.XXXX", "kVA"),
        0x02060000: ("-X.XXX", None),
        0x02800002: ("XX.XX", "Hz"),
        0x04000101: ("YYMMDDWW", None),
        0x04000102: ("hhmmss", None),
        0x04000401: ("NNNNNNNNNNNN", None),
    }
    for di, (fmt, unit) in expected.items():
        known = lookup(di)
        assert known is not None, f"{di:08X}"
        assert (known.format.text, known.unit) == (fmt, unit), known.text
    assert lookup(0x00010000).description == "import active energy, total"  # type: ignore[union-attr]
    assert lookup(0x00014000) is None  # tariff 64 does not exist (DI1 01..3F)
    assert lookup(0x02010000) is None  # no "total" voltage
    assert all(i.format.size <= 196 for i in IDENTIFIERS.values())  # fits one answer


# --- round trips ---------------------------------------------------------------------------

addresses = st.binary(min_size=6, max_size=6)


@given(
    address=addresses,
    control=st.integers(0, 255),
    data=st.binary(max_size=200),
    preamble=st.integers(0, 4),
    noise=st.binary(max_size=8).filter(lambda b: 0x68 not in b),
    cuts=st.lists(st.integers(1, 40), max_size=10),
)
def test_any_frame_survives_the_wire(
    address: bytes, control: int, data: bytes, preamble: int, noise: bytes, cuts: list[int]
) -> None:
    wire = noise + encode_frame(address, control, data, preamble=preamble)
    parser = FrameParser()
    out: list[Frame | BadFrame] = []
    pos = 0
    for cut in cuts:  # arbitrary chunking, as reads off a serial port come
        out.extend(parser.feed(wire[pos : pos + cut]))
        pos += cut
    out.extend(parser.feed(wire[pos:]))
    assert out == [Frame(address, control, data)]


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, float | int]:
    digits = 2 * draw(st.integers(1, 6))
    decimals = draw(st.integers(0, min(digits - 1, 4)))
    signed = draw(st.booleans())
    whole = "X" * (digits - decimals)
    fmt = ("-" if signed else "") + whole + ("." + "X" * decimals if decimals else "")
    limit = 8 * 10 ** (digits - 1) if signed else 10**digits
    raw = draw(st.integers(-(limit - 1) if signed else 0, limit - 1))
    return fmt, (raw / 10**decimals if decimals else raw)


@given(numbers())
def test_numbers_round_trip(case: tuple[str, float | int]) -> None:
    fmt, value = case
    field = parse_format(fmt).fields[0]
    assert decode_field(field, encode_field(field, value)) == value


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
    st.sampled_from(["YYMMDDhhmm", "YYMMDDWW", "hhmmss", "YYMMDDWWhhmmss", "MMDDhhmm", "YYMMDD"]),
)
def test_times_round_trip(when: dt.datetime, fmt: str) -> None:
    field = parse_format(fmt).fields[0]
    wire = encode_field(field, when)
    text = decode_field(field, wire)
    assert isinstance(text, str)
    assert encode_field(field, text) == wire  # the text form encodes back to the same bytes
    if fmt == "YYMMDDhhmm":
        assert text == when.strftime("%Y-%m-%dT%H:%M")


@given(st.text("0123456789", min_size=12, max_size=12))
def test_addresses_round_trip(address: str) -> None:
    assert address_text(address_bytes(address)) == address
    field = parse_format("NNNNNNNNNNNN").fields[0]
    assert decode_field(field, encode_field(field, address)) == address

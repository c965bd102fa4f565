"""S7 addresses, types and their decoding: the notation, its errors, big-endian values."""

from __future__ import annotations

import struct

import pytest

from drivers.s7.address import (
    Area,
    DataType,
    S7Type,
    check_fits,
    decode,
    default_type,
    parse_address,
    parse_type,
)


@pytest.mark.parametrize(
    ("text", "area", "db", "byte", "bit", "canonical"),
    [
        ("DB1.DBX10.0", Area.DB, 1, 10, 0, "DB1.DBX10.0"),
        ("DB1.DBB2", Area.DB, 1, 2, None, "DB1.DBB2"),
        ("db12.dbw4", Area.DB, 12, 4, None, "DB12.DBW4"),
        ("DB1.DBD6", Area.DB, 1, 6, None, "DB1.DBD6"),
        ("M10.7", Area.M, 0, 10, 7, "M10.7"),
        ("MW20", Area.M, 0, 20, None, "MW20"),
        ("MB3", Area.M, 0, 3, None, "MB3"),
        ("I0.1", Area.I, 0, 0, 1, "I0.1"),
        ("IW64", Area.I, 0, 64, None, "IW64"),
        ("Q4.0", Area.Q, 0, 4, 0, "Q4.0"),
        ("QD8", Area.Q, 0, 8, None, "QD8"),
    ],
)
def test_step7_addresses(
    text: str, area: Area, db: int, byte: int, bit: int | None, canonical: str
) -> None:
    a = parse_address(text)
    assert (a.area, a.db, a.byte, a.bit) == (area, db, byte, bit)
    assert a.text() == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("%MW20", "write 'MW20' without the '%' of TIA Portal's display"),
        (
            "DB1,REAL0",
            "use the STEP 7 notation 'DB1.DBD0' with type: (not 'DB1,REAL0' of Node-RED)",
        ),
        ("DB1,X2.3", "use the STEP 7 notation 'DB1.DBX2.3'"),
        ("DB1.W4", "use the STEP 7 notation 'DB1.DBW4'"),
        ("EW4", "German mnemonics are not read: write IW4"),
        ("A4.0", "German mnemonics are not read: write Q4.0"),
        ("T5", "timers and counters are not read"),
        ("PIW256", "peripheral (PI/PQ) addresses are not read"),
        ("DB1.DBX0", "a bit address needs its bit, e.g. DB1.DBX0.0"),
        ("DB1.DBW0.1", "only bit (X) addresses take a bit number"),
        ("M10.8", "bits are 0-7"),
        ("M10", "a bit needs its number (M10.0), a byte B (MB10)"),
        ("DB0.DBW0", "DB numbers are 1-65535"),
        ("DB1.DBW70000", "byte offsets are 0-65535"),
        ("tank1", "'tank1' is not an S7 address: write DB1.DBX0.0"),
    ],
)
def test_other_notations_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_address(text)
    assert message in str(err.value)


def test_types_and_widths() -> None:
    assert parse_type("real") == DataType(S7Type.REAL)
    assert parse_type("STRING[20]").size == 22
    assert parse_type("DT").kind is S7Type.DATE_AND_TIME
    assert default_type(parse_address("DB1.DBX1.0")).kind is S7Type.BOOL
    assert default_type(parse_address("MW2")).kind is S7Type.WORD
    check_fits(parse_address("DB1.DBB0"), parse_type("LREAL"))
    with pytest.raises(ValueError, match=r"DB1.DBW0 holds WORD, INT, not REAL \(write DB1.DBD0\)"):
        check_fits(parse_address("DB1.DBW0"), parse_type("REAL"))
    with pytest.raises(ValueError, match=r"STRING needs its declared length"):
        parse_type("STRING")
    with pytest.raises(ValueError, match=r"STRING\[300\]: the length is 1-254"):
        parse_type("STRING[300]")
    with pytest.raises(ValueError, match=r"unknown S7 type 'FLOAT'"):
        parse_type("FLOAT")


def test_big_endian_decoding() -> None:
    assert decode(DataType(S7Type.REAL), struct.pack(">f", 21.5), None) == 21.5
    assert decode(DataType(S7Type.LREAL), struct.pack(">d", -1e100), None) == -1e100
    assert decode(DataType(S7Type.DINT), b"\xff\xff\xff\xfe", None) == -2
    assert decode(DataType(S7Type.DWORD), b"\xff\xff\xff\xfe", None) == 0xFFFFFFFE
    assert decode(DataType(S7Type.INT), b"\x80\x00", None) == -32768
    assert decode(DataType(S7Type.WORD), b"\x12\x34", None) == 0x1234
    assert decode(DataType(S7Type.BYTE), b"\xfe", None) == 254
    assert decode(DataType(S7Type.BOOL), b"\x08", 3) is True
    assert decode(DataType(S7Type.BOOL), b"\x08", 2) is False
    assert decode(DataType(S7Type.STRING, 6), b"\x06\x03abc\x00\x00\x00", None) == "abc"
    with pytest.raises(ValueError, match="more than declared"):
        decode(DataType(S7Type.STRING, 2), b"\x02\x05ab", None)
    # 2026-12-08 07:05:09.123 (the last nibble is the weekday)
    raw = bytes([0x26, 0x12, 0x08, 0x07, 0x05, 0x09, 0x12, 0x33])
    assert decode(DataType(S7Type.DATE_AND_TIME), raw, None) == "2026-12-08T07:05:09.123"
    raw = bytes([0x95, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01])
    assert decode(DataType(S7Type.DATE_AND_TIME), raw, None) == "1995-01-02T00:00:00.000"
    with pytest.raises(ValueError, match="not BCD"):
        decode(DataType(S7Type.DATE_AND_TIME), b"\x2a" + bytes(7), None)

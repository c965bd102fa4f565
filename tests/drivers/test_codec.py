"""Codec: hand-checked byte vectors, and decode(encode(v)) == v for every type and order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import (
    BlockDecoder,
    DecodeError,
    Field,
    Order,
    PointType,
    decode,
    encode,
    value_range,
)

# 230.5 as IEEE-754 float32 is 0x43668000: A=0x43 B=0x66 C=0x80 D=0x00.
VECTORS_230_5 = {
    Order.ABCD: [0x4366, 0x8000],
    Order.BADC: [0x6643, 0x0080],
    Order.CDAB: [0x8000, 0x4366],
    Order.DCBA: [0x0080, 0x6643],
}


@pytest.mark.parametrize(("order", "registers"), VECTORS_230_5.items())
def test_float32_230_5_in_every_order(order: Order, registers: list[int]) -> None:
    assert encode(230.5, PointType.FLOAT32, order) == registers
    assert decode(registers, PointType.FLOAT32, order) == 230.5


# 0x0102030405060708 as uint64: words 0102 0304 0506 0708 (ABCD), extended to 4 registers.
VECTORS_U64 = {
    Order.ABCD: [0x0102, 0x0304, 0x0506, 0x0708],
    Order.BADC: [0x0201, 0x0403, 0x0605, 0x0807],
    Order.CDAB: [0x0708, 0x0506, 0x0304, 0x0102],
    Order.DCBA: [0x0807, 0x0605, 0x0403, 0x0201],
}


@pytest.mark.parametrize(("order", "registers"), VECTORS_U64.items())
def test_uint64_vectors(order: Order, registers: list[int]) -> None:
    assert encode(0x0102030405060708, PointType.UINT64, order) == registers
    assert decode(registers, PointType.UINT64, order) == 0x0102030405060708


def test_hand_checked_scalars() -> None:
    assert decode([0xFFFF], PointType.INT16) == -1
    assert decode([0xFFFF], PointType.UINT16) == 65535
    assert decode([0x0001, 0x0000], PointType.INT32, Order.CDAB) == 1
    assert decode([0xFFFF, 0xFFFE], PointType.INT32) == -2
    assert decode([0x1234], PointType.BCD16) == 1234
    assert decode([0x0012, 0x3456], PointType.BCD32) == 123456
    # ASCII "PLC-01" high byte first, NUL padded
    assert decode([0x504C, 0x432D, 0x3031, 0x0000], PointType.STRING, length=4) == "PLC-01"
    assert decode([0x4C50, 0x2D43, 0x3130, 0x0000], PointType.STRING, Order.BADC, length=4) == (
        "PLC-01"
    )
    assert decode([0b1000], PointType.BIT, bit=3) is True
    assert decode([0b1000], PointType.BIT, bit=2) is False


def test_bad_bcd_and_text_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match="invalid BCD digit"):
        decode([0x12A4], PointType.BCD16)
    with pytest.raises(DecodeError, match="invalid text"):
        decode([0xFFFE], PointType.STRING, length=1)


def test_nan_is_not_a_value() -> None:
    nan_regs = list(struct.unpack(">2H", struct.pack(">f", math.nan)))
    with pytest.raises(DecodeError, match="not finite"):
        decode(nan_regs, PointType.FLOAT32)


def test_out_of_range_encode_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the range"):
        encode(70000, PointType.UINT16)
    with pytest.raises(ValueError, match="does not fit"):
        encode(10000, PointType.BCD16)


INTEGER_TYPES = [
    PointType.INT16,
    PointType.UINT16,
    PointType.INT32,
    PointType.UINT32,
    PointType.INT64,
    PointType.UINT64,
    PointType.BCD16,
    PointType.BCD32,
]


@st.composite
def integer_case(draw: st.DrawFn) -> tuple[PointType, Order, int]:
    t = draw(st.sampled_from(INTEGER_TYPES))
    lo, hi = value_range(t)  # type: ignore[misc]
    return t, draw(st.sampled_from(list(Order))), draw(st.integers(lo, hi))


@given(integer_case())
def test_integer_round_trip(case: tuple[PointType, Order, int]) -> None:
    t, order, value = case
    regs = encode(value, t, order)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(regs, t, order) == value


@given(st.sampled_from(list(Order)), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_round_trip(order: Order, value: float) -> None:
    assert decode(encode(value, PointType.FLOAT32, order), PointType.FLOAT32, order) == value


@given(st.sampled_from(list(Order)), st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trip(order: Order, value: float) -> None:
    assert decode(encode(value, PointType.FLOAT64, order), PointType.FLOAT64, order) == value


@given(
    st.sampled_from(list(Order)),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16).map(str.rstrip),
)
def test_string_round_trip(order: Order, text: str) -> None:
    regs = encode(text, PointType.STRING, order, length=8)
    assert len(regs) == 8
    assert decode(regs, PointType.STRING, order, length=8) == text


@given(st.sampled_from(list(Order)), st.integers(0, 15), st.booleans())
def test_bit_round_trip(order: Order, bit: int, value: bool) -> None:
    regs = encode(value, PointType.BIT, order, bit=bit)
    assert decode(regs, PointType.BIT, order, bit=bit) is value


@given(
    st.lists(
        st.tuples(
            st.sampled_from([t for t in PointType if t not in (PointType.BOOL, PointType.STRING)]),
            st.sampled_from(list(Order)),
            st.integers(0, 3),  # gap before the field
            st.data(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_block_decoder_matches_single_decodes(
    cases: list[tuple[PointType, Order, int, st.DataObject]],
) -> None:
    """A whole block decodes to exactly what each field decodes to alone."""
    registers: list[int] = []
    fields: list[Field] = []
    expected: dict[Field, object] = {}
    for t, order, gap, data in cases:
        registers.extend([0xBEEF] * gap)
        bit = data.draw(st.integers(0, 15)) if t is PointType.BIT else 0
        if t is PointType.FLOAT32:
            value: object = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
        elif t is PointType.FLOAT64:
            value = data.draw(st.floats(allow_nan=False, allow_infinity=False))
        elif t is PointType.BIT:
            value = data.draw(st.booleans())
        else:
            lo, hi = value_range(t)  # type: ignore[misc]
            value = data.draw(st.integers(lo, hi))
        field_ = Field(len(registers), t, order, bit=bit)
        regs = encode(value, t, order, bit=bit)  # type: ignore[arg-type]
        registers.extend(regs)
        fields.append(field_)
        expected[field_] = value
    decoder = BlockDecoder(fields)
    values, errors = decoder.decode(registers)
    assert errors == []
    assert len(values) == len(fields)
    got = dict(zip(decoder.fields_in_output_order, values, strict=True))
    assert got == expected


def test_short_answer_is_an_error() -> None:
    decoder = BlockDecoder([Field(0, PointType.FLOAT32), Field(4, PointType.UINT16)])
    with pytest.raises(DecodeError, match="short answer: 3 of 5"):
        decoder.decode([0, 0, 0])


def test_bits_sharing_a_register_decode_independently() -> None:
    decoder = BlockDecoder(
        [
            Field(0, PointType.BIT, bit=0),
            Field(0, PointType.BIT, bit=15),
            Field(0, PointType.UINT16),
        ]
    )
    values, _ = decoder.decode([0x8001])
    got = {
        (f.point_type, f.bit): v
        for f, v in zip(decoder.fields_in_output_order, values, strict=True)
    }
    assert got == {
        (PointType.UINT16, 0): 0x8001,
        (PointType.BIT, 0): True,
        (PointType.BIT, 15): True,
    }


@pytest.mark.parametrize(
    ("floats", "bad"),
    [
        ((1.5, -2.0, 3.25), {}),
        ((1.5, math.inf, 3.25), {1: "not finite: inf"}),
        ((math.inf, -math.inf, 0.0), {0: "not finite: inf", 1: "not finite: -inf"}),
        ((math.nan, 1.0, math.nan), {0: "not finite: nan", 2: "not finite: nan"}),
        ((1e308, 1e308, -1e308), {}),  # finite values whose sum overflows
    ],
    ids=["finite", "one-inf", "inf-and-minus-inf", "nans", "sum-overflows"],
)
def test_a_block_of_floats_marks_exactly_the_values_that_are_not_finite(
    floats: tuple[float, ...], bad: dict[int, str]
) -> None:
    decoder = BlockDecoder([Field(4 * i, PointType.FLOAT64) for i in range(len(floats))])
    values, errors = decoder.decode_bytes(struct.pack(f">{len(floats)}d", *floats))
    assert dict(errors) == bad
    assert values == [None if i in bad else v for i, v in enumerate(floats)]

"""A request's value converted to the node's OPC UA built-in type, exactly or not at all."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.contract import WriteRefused
from drivers.opcua.config import OpcUaPoint
from drivers.opcua.write_types import BUILT_IN, INTEGERS, WRITABLE, convert, type_name
from drivers.reading import Value


@pytest.mark.parametrize(
    ("data_type", "value", "expected"),
    [
        ("Int32", 42, 42),
        ("Int32", 42.0, 42),  # a JSON 42.0 is the whole number 42
        ("Int32", -(2**31), -(2**31)),
        ("Int32", 2**31 - 1, 2**31 - 1),
        ("UInt64", 2**64 - 1, 2**64 - 1),
        ("Byte", 255, 255),
        ("Float", 42.5, 42.5),
        ("Double", 3, 3.0),
        ("Boolean", True, True),
        ("Boolean", False, False),
        ("String", "BATCH-7", "BATCH-7"),
    ],
)
def test_values_the_type_holds_are_converted(data_type: str, value: Value, expected: Value) -> None:
    converted = convert(data_type, value, name="p")
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("data_type", "value", "code", "reason"),
    [
        ("Int32", 3.5, "wrong_type", "3.5 cannot be written exactly (p takes whole numbers)"),
        ("Int32", 2**31, "out_of_range", "2147483648 is outside the range of Int32"),
        ("Int32", -(2**31) - 1, "out_of_range", "outside the range of Int32"),
        ("UInt16", -1, "out_of_range", "-1 is outside the range of UInt16"),
        ("Int32", True, "wrong_type", "p takes a number"),
        ("Int32", "7", "wrong_type", "p takes a number"),
        ("Double", float("nan"), "wrong_type", "p takes a finite number"),
        ("Float", 1e39, "out_of_range", "1e+39 is outside the range of Float"),
        ("Boolean", 2, "wrong_type", "p takes true or false"),
        ("Boolean", 1, "wrong_type", "p takes true or false"),
        ("String", 7, "wrong_type", "p takes text"),
        ("DateTime", "2026-01-01", "wrong_type", "p is a DateTime node: it cannot be written"),
    ],
)
def test_values_the_type_cannot_hold_are_refused(
    data_type: str, value: Value, code: str, reason: str
) -> None:
    with pytest.raises(WriteRefused) as refused:
        convert(data_type, value, name="p")
    assert refused.value.code == code
    assert reason in refused.value.reason


def test_scale_and_offset_are_undone() -> None:
    # read: raw x 0.1 + 5 -> engineering; write: (value - 5) / 0.1 -> raw
    assert convert("Int16", 25.5, name="t", scale=0.1, offset=5) == 205
    assert convert("Double", 25.5, name="t", scale=0.5, offset=5) == 41.0
    with pytest.raises(WriteRefused, match=re.escape("steps of 0.1")):
        convert("Int16", 25.55, name="t", scale=0.1, offset=5)


@given(
    st.sampled_from(sorted(INTEGERS)),
    st.integers(min_value=-(2**65), max_value=2**65),
)
def test_an_integer_is_taken_exactly_when_the_type_holds_it(data_type: str, value: int) -> None:
    low, high = INTEGERS[data_type]
    if low <= value <= high:
        assert convert(data_type, value, name="p") == value
    else:
        with pytest.raises(WriteRefused) as refused:
            convert(data_type, value, name="p")
        assert refused.value.code == "out_of_range"


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_a_float32_value_is_written_unchanged(value: float) -> None:
    converted = convert("Float", value, name="p")
    assert struct.unpack("<f", struct.pack("<f", converted))[0] == value


def test_built_in_ids_name_the_types() -> None:
    assert [type_name(i) for i in (1, 6, 10, 11, 12, 13, 25)] == [
        "Boolean",
        "Int32",
        "Float",
        "Double",
        "String",
        "DateTime",
        "DiagnosticInfo",
    ]
    assert type_name(0) is None and type_name(26) is None
    assert set(WRITABLE) <= set(BUILT_IN)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "ByteString", "write": {}}, "write: a ByteString node cannot be written"),
        (
            {"type": "Boolean", "write": {"min": 0}},
            "min and max apply only to numbers, not Boolean",
        ),
        ({"type": "Int32", "write": {"values": [1, 1.5]}}, "values: 1.5 cannot be written exactly"),
        ({"type": "Byte", "write": {"values": [300]}}, "values: 300 is outside the range of Byte"),
        ({"write": {"address": 7}}, "address applies to register points"),
        ({"type": "int32"}, "did you mean 'Int32'?"),
        ({"type": "Int128"}, "'Int128' is not an OPC UA built-in type"),
    ],
)
def test_the_config_refuses_writes_that_cannot_be_made(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OpcUaPoint.model_validate({"name": "p", "node": "nsu=urn:x;s=P", **fields})


def test_the_config_takes_writable_points() -> None:
    point = OpcUaPoint.model_validate(
        {"name": "sp", "node": "nsu=urn:x;s=SP", "type": "Float", "write": {"min": 0, "max": 50}}
    )
    assert point.write is not None and point.write.max == 50
    # Without a type the node's DataType decides on the first write.
    assert (
        OpcUaPoint.model_validate({"name": "p", "node": "nsu=urn:x;s=P", "write": {}}).type is None
    )

"""A value to write, converted exactly to the OPC UA built-in type of the node.

OPC UA servers check a Write's Variant against the node's DataType and refuse a mismatch
(BadTypeMismatch): an Int32 node does not take a Double 42.0. So the value of a request
(JSON: a bool, a number or a string, in engineering units) is converted here to the node's
built-in type, and refused before anything is sent when that cannot be done exactly:

    Int32   42 -> 42      3.5 -> wrong_type      2**31 -> out_of_range
    Boolean true -> True   2 -> wrong_type (true is not 1 here either)
    Float   42.5 -> 42.5  (the read-back may round: float32)   1e39 -> out_of_range
    String  "BATCH-7"     7 -> wrong_type

Scale and offset of the point are undone first (raw = (value - offset) / scale), as for
Modbus registers. Arrays, structures, times, byte strings are not written. This module is
free of asyncua, so `check` and the command path use it offline; the driver maps the type
names to asyncua's VariantType.
"""

from __future__ import annotations

import math

from drivers.contract import WriteRefused
from drivers.reading import Value

# The OPC UA built-in types (OPC 10000-6 §5.1.2), by their DataType names; i=1..25.
BUILT_IN = (
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "Guid",
    "ByteString",
    "XmlElement",
    "NodeId",
    "ExpandedNodeId",
    "StatusCode",
    "QualifiedName",
    "LocalizedText",
    "ExtensionObject",
    "DataValue",
    "Variant",
    "DiagnosticInfo",
)
INTEGERS: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
FLOATS = ("Float", "Double")
WRITABLE = ("Boolean", *INTEGERS, *FLOATS, "String")
FLOAT32_MAX = 3.4028234663852886e38
# Relative slack when a scaled value is checked for landing on a whole raw count: binary
# floats make 42.5 / 0.1 come out as 424.99999999999994 (as drivers/modbus/write.py).
_WHOLE_SLACK = 1e-9
MAX_STRING = 65_535  # characters; longer text is a mistake, not a set-point


def type_name(built_in_id: int) -> str | None:
    """The name of built-in type i=`built_in_id` of namespace 0, or None."""
    return BUILT_IN[built_in_id - 1] if 1 <= built_in_id <= len(BUILT_IN) else None


def convert(
    data_type: str, value: Value, *, name: str, scale: float = 1.0, offset: float = 0.0
) -> bool | int | float | str:
    """`value` (engineering units) as the node's built-in type `data_type` takes it exactly;
    WriteRefused (wrong_type, out_of_range) when it cannot be."""
    if data_type not in WRITABLE:
        raise WriteRefused("wrong_type", f"{name} is a {data_type} node: it cannot be written")
    if data_type == "Boolean":
        if not isinstance(value, bool):
            raise WriteRefused("wrong_type", f"{name} takes true or false")
        return value
    if data_type == "String":
        if not isinstance(value, str):
            raise WriteRefused("wrong_type", f"{name} takes text")
        if len(value) > MAX_STRING:
            raise WriteRefused("out_of_range", f"longer than {MAX_STRING} characters")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused("wrong_type", f"{name} takes a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused("wrong_type", f"{name} takes a finite number")
    raw: int | float = value
    if scale != 1 or offset != 0:
        raw = (value - offset) / scale
    if data_type in FLOATS:
        raw = float(raw)
        if data_type == "Float" and abs(raw) > FLOAT32_MAX:
            raise WriteRefused("out_of_range", f"{_num(value)} is outside the range of Float")
        return raw
    whole = round(raw)
    if abs(raw - whole) > _WHOLE_SLACK * max(1.0, abs(raw)):
        step = "whole numbers" if scale == 1 else f"steps of {scale:g}"
        raise WriteRefused(
            "wrong_type", f"{_num(value)} cannot be written exactly ({name} takes {step})"
        )
    low, high = INTEGERS[data_type]
    if not low <= whole <= high:
        raise WriteRefused("out_of_range", f"{_num(value)} is outside the range of {data_type}")
    return whole


def _num(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

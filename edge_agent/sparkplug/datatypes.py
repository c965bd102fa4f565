"""Each point's Sparkplug data type, from its configuration where the protocol says it.

    Modbus      the register type (int16 -> Int16, float32 -> Float, bool/bit -> Boolean,
                string -> String, bcd16/32 -> UInt16/32); a point with scale, offset or
                decimals carries engineering values: Double
    DL/T 645    numbers -> Double, hex fields -> UInt64, digits and times -> String
    OPC UA      not declared: taken from the first value read (bool -> Boolean,
                int -> Int64, float -> Double, str -> String), Double until then

The numbers are the DataType enum of sparkplug_b.proto; they are repeated here so that
`edge-agent check` and the hot path need no protobuf import.
"""

from __future__ import annotations

from drivers.reading import Value
from drivers.registry import plugin
from edge_agent.config.site import DeviceSetup

INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
DATETIME, TEXT = 13, 14

_BY_VALUE_TYPE: dict[str, int] = {
    "bool": BOOLEAN,
    "int16": INT16,
    "uint16": UINT16,
    "int32": INT32,
    "uint32": UINT32,
    "int64": INT64,
    "uint64": UINT64,
    "float32": FLOAT,
    "float64": DOUBLE,
    "string": STRING,
}
NAMES = {
    INT8: "Int8",
    INT16: "Int16",
    INT32: "Int32",
    INT64: "Int64",
    UINT8: "UInt8",
    UINT16: "UInt16",
    UINT32: "UInt32",
    UINT64: "UInt64",
    FLOAT: "Float",
    DOUBLE: "Double",
    BOOLEAN: "Boolean",
    STRING: "String",
    DATETIME: "DateTime",
    TEXT: "Text",
}


def declared_types(setup: DeviceSetup) -> dict[str, int]:
    """Point name -> data type for the points whose configuration fixes it (the protocol
    says which: drivers/contract.py `value_types`)."""
    protocol = plugin(setup.device.driver)
    declared = protocol.value_types(setup.device, setup.profile)
    return {name: _BY_VALUE_TYPE[kind] for name, kind in declared.items()}


def inferred_type(value: Value) -> int | None:
    """The type of a value of a point that declares none; None for no value."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    return None

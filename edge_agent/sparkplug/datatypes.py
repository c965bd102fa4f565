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

from typing import Any

from drivers.dlt645.config import Dlt645Point
from drivers.dlt645.formats import FieldKind
from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint
from drivers.reading import Value
from edge_agent.config import DeviceSetup

INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
DATETIME, TEXT = 13, 14

_MODBUS = {
    PointType.BOOL: BOOLEAN,
    PointType.BIT: BOOLEAN,
    PointType.INT16: INT16,
    PointType.UINT16: UINT16,
    PointType.INT32: INT32,
    PointType.UINT32: UINT32,
    PointType.INT64: INT64,
    PointType.UINT64: UINT64,
    PointType.FLOAT32: FLOAT,
    PointType.FLOAT64: DOUBLE,
    PointType.STRING: STRING,
    PointType.BCD16: UINT16,
    PointType.BCD32: UINT32,
}
_DLT645 = {
    FieldKind.NUMBER: DOUBLE,
    FieldKind.HEX: UINT64,
    FieldKind.DIGITS: STRING,
    FieldKind.TIME: STRING,
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
    """Point name -> data type for the points whose configuration fixes it."""
    profile: Any = setup.profile
    points = profile.points if profile is not None else ()
    types: dict[str, int] = {}
    for point in points:
        if isinstance(point, ModbusPoint):
            kind = _MODBUS[point.point_type]
            scaled = point.scale != 1 or point.offset != 0 or point.decimals is not None
            types[point.name] = DOUBLE if scaled and kind != BOOLEAN else kind
        elif isinstance(point, Dlt645Point):
            field = point.data_format.fields[point.field]
            kind = _DLT645[field.kind]
            types[point.name] = DOUBLE if kind == UINT64 and point.scale != 1 else kind
    return types


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

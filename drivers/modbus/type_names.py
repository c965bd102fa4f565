"""Type and order names that users of other collectors bring, mapped to this driver's.

Telegraf writes `FLOAT32` and `INT16`, ThingsBoard `32float` and `16int` with `byteOrder`
and `wordOrder` set to `BIG` or `LITTLE`, many manuals and Neuron `float`, `double`,
`word`. Our own names are accepted in any letter case (`FLOAT32`, `abcd`); every other
name is refused with the one to write, since a config keeps one spelling and some of those
names (`float`, `little`) do not say which of two layouts they mean.

ThingsBoard's two keys are one key here:

    byteOrder  wordOrder   order        registers 0x4366 0x8000 read as
    BIG        BIG         ABCD         43 66 80 00
    LITTLE     BIG         BADC         66 43 00 80
    BIG        LITTLE      CDAB         80 00 43 66
    LITTLE     LITTLE      DCBA         00 80 66 43
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.modbus.codec import Order, PointType

FOREIGN_TYPES: dict[str, str] = {
    # ThingsBoard's Modbus connector
    "16int": "int16",
    "16uint": "uint16",
    "32int": "int32",
    "32uint": "uint32",
    "64int": "int64",
    "64uint": "uint64",
    "32float": "float32",
    "64float": "float64",
    "16float": "float32 or float64 (half-precision floats are not supported)",
    "bits": "bit (with bit: 0..15) or bool (coil, discrete)",
    # Telegraf's Modbus input
    "float32-ieee": "float32",
    "float64-ieee": "float64",
    "float16-ieee": "float32 or float64 (half-precision floats are not supported)",
    # manuals, PLC and other collectors' words
    "float": "float32 (2 registers) or float64 (4 registers)",
    "real": "float32",
    "lreal": "float64",
    "double": "float64",
    "int": "int16 (1 register) or int32 (2 registers)",
    "uint": "uint16 (1 register) or uint32 (2 registers)",
    "integer": "int16 (1 register) or int32 (2 registers)",
    "short": "int16",
    "ushort": "uint16",
    "word": "uint16",
    "dint": "int32",
    "udint": "uint32",
    "dword": "uint32",
    "long": "int32",
    "ulong": "uint32",
    "boolean": "bool (coil, discrete) or bit (with bit: 0..15, of a register)",
    "str": "string (with length: registers)",
    "text": "string (with length: registers)",
    "bcd": "bcd16 (1 register) or bcd32 (2 registers)",
}

_BIG = ("big", "big-endian", "big_endian", "be")
_LITTLE = ("little", "little-endian", "little_endian", "le")

FOREIGN_ORDERS: dict[str, str] = {
    **dict.fromkeys(_BIG, "ABCD (big-endian bytes and words)"),
    **dict.fromkeys(
        _LITTLE,
        "DCBA (bytes and words little-endian) or CDAB (only the words swapped, what many "
        "Modbus manuals call little-endian); `edge-agent read` shows all four",
    ),
    "1234": "ABCD",
    "2143": "BADC",
    "3412": "CDAB",
    "4321": "DCBA",
    "swapped": "CDAB (words swapped) or BADC (bytes swapped)",
    "word_swap": "CDAB",
    "byte_swap": "BADC",
}

_ORDER_KEYS = ("byteorder", "wordorder", "byte_order", "word_order")
_TB_ORDERS = {
    ("big", "big"): Order.ABCD,
    ("little", "big"): Order.BADC,
    ("big", "little"): Order.CDAB,
    ("little", "little"): Order.DCBA,
}


def point_type_name(value: object) -> object:
    """A `type` value as ours: any letter case accepted; ValueError for another's name."""
    if not isinstance(value, str):
        return value
    name = value.strip().lower()
    if name in PointType.__members__.values():
        return name
    meant = FOREIGN_TYPES.get(name)
    if meant is not None:
        raise ValueError(f"unknown type {value!r}: write {meant}")
    return value  # the enum's own error lists every name


def order_name(value: object) -> object:
    """An `order` value as ours: any letter case accepted; ValueError for another's name."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # YAML reads order: 3412 as a number
    elif isinstance(value, str):
        text = value.strip()
    else:
        return value
    if text.upper() in Order.__members__:
        return text.upper()
    meant = FOREIGN_ORDERS.get(text.lower())
    if meant is not None:
        raise ValueError(f"unknown order {value!r}: write {meant}")
    return value


def foreign_key_hint(key: object, mapping: object) -> str | None:
    """What to write instead of another collector's key (ThingsBoard's byteOrder), or None."""
    if not isinstance(key, str) or key.lower() not in _ORDER_KEYS:
        return None
    given: dict[str, str] = {}
    if isinstance(mapping, Mapping):
        for k, v in mapping.items():
            if isinstance(k, str) and isinstance(v, str) and k.lower() in _ORDER_KEYS:
                given[k.lower().replace("_", "")] = v.strip().lower()
    # Only both keys say an order: the other collector's defaults are not ours to guess.
    pair = (given.get("byteorder", ""), given.get("wordorder", ""))
    order = _TB_ORDERS.get(pair)
    if order is None:
        return (
            "byte and word order are one key here, order: ABCD (byteOrder BIG, wordOrder BIG), "
            "BADC (LITTLE, BIG), CDAB (BIG, LITTLE) or DCBA (LITTLE, LITTLE)"
        )
    return (
        f"byte and word order are one key here: write order: {order} for byteOrder "
        f"{pair[0].upper()}, wordOrder {pair[1].upper()}"
    )

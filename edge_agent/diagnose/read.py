"""`edge-agent read`: one read of one point, its value shown in every byte and word order.

    $ edge-agent read tcp://10.0.0.5:502 0x2006 --type float32 --device-id 3
    tcp://10.0.0.5:502 id 3, holding 8198 (0x2006), 2 registers: 4366 8000
    ABCD  230.5
    BADC  2.1350e-38 ...

Only the orders that differ for the type are shown: all four for values of two or four
registers, ABCD and BADC (bytes swapped) for one register and for text. `--count N` reads N
such values in one request, one row each; `--poll S` repeats the read every S seconds (at
fixed phase) until Ctrl-C, or `--polls` times, like mbpoll and modpoll.

When a meter's manual is vague about word order, the one plausible line tells. The read
goes through the agent's own Modbus connection and codec, so what it shows is what the
agent would decode with that type and order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.codec import DecodeError, Order, PointType, Table, decode, register_count
from drivers.modbus.config import parse_endpoint
from drivers.modbus.connection import BadAnswer, ModbusConnection
from drivers.modbus.driver import exception_reason
from drivers.reading import DeviceUnreachable, Value

ORDERS = (Order.ABCD, Order.BADC, Order.CDAB, Order.DCBA)
BYTE_ORDERS = (Order.ABCD, Order.BADC)  # one register, or text: no words to swap
MAX_REGISTERS = 125  # FC03/FC04 protocol limit


def orders_for(point_type: PointType, length: int | None = None) -> tuple[Order, ...]:
    """The orders that read the type differently."""
    if point_type is PointType.STRING or register_count(point_type, length) == 1:
        return BYTE_ORDERS
    return ORDERS


class ReadFailed(Exception):
    """The device did not answer, answered with an exception, or answered wrongly."""


def parse_address(text: str) -> int:
    """A 0-based protocol address: decimal or 0x-hex; ValueError outside 0..65535."""
    address = int(text, 0)
    if not 0 <= address <= 65535:
        raise ValueError(f"address {text} is outside 0..65535")
    return address


def open_line(url: str, *, timeout_s: float) -> ModbusConnection:
    """A connection (not opened yet) to the line a Modbus URL names."""
    return ModbusConnection(parse_endpoint(url), name=url, timeout_s=timeout_s)


async def read_raw(
    connection: ModbusConnection, table: Table, address: int, count: int, *, device_id: int
) -> list[int]:
    """Registers (or bits as 0/1) from one request; ReadFailed on no answer or exception."""
    try:
        await connection.connect()
        answer = await connection.read(table, address, count, device_id=device_id)
    except (DeviceUnreachable, BadAnswer) as exc:
        raise ReadFailed(exc.reason) from exc
    if isinstance(answer, int):
        raise ReadFailed(exception_reason(answer))
    if isinstance(answer, bytes):
        return list(struct.unpack(f">{len(answer) // 2}H", answer[: len(answer) // 2 * 2]))
    return [int(bool(b)) for b in answer[:count]]


@dataclass(frozen=True, slots=True)
class OrderedValue:
    """The value of the registers read in one order (or why they are no value)."""

    order: Order
    value: Value
    error: str | None = None


def decode_orders(
    registers: Sequence[int],
    point_type: PointType,
    *,
    length: int | None = None,
    scale: float = 1.0,
) -> list[OrderedValue]:
    """The registers decoded in each order that differs for the type, scaled."""
    values: list[OrderedValue] = []
    for order in orders_for(point_type, length):
        try:
            value = decode(registers, point_type, order, length=length)
        except DecodeError as exc:
            values.append(OrderedValue(order, None, str(exc)))
            continue
        values.append(OrderedValue(order, apply_scale(value, scale)))
    return values


def apply_scale(value: Value, scale: float) -> Value:
    """value × scale the way the agent does it: a scale of 1/N divides by N (exact 230.5)."""
    if scale == 1.0 or not isinstance(value, int | float) or isinstance(value, bool):
        return value
    inverse = 1 / scale
    if abs(scale) < 1 and abs(inverse - round(inverse)) < 1e-9 * abs(inverse):
        return value / round(inverse)
    return value * scale


def format_value(value: Value) -> str:
    """Floats with up to 9 significant digits (exact enough for float32), others as is."""
    if isinstance(value, float):
        return f"{value:.9g}"
    return repr(value) if isinstance(value, str) else str(value)


async def run_read(
    url: str,
    address: int,
    *,
    point_type: PointType,
    table: Table = Table.HOLDING,
    device_id: int = 1,
    length: int | None = None,
    scale: float = 1.0,
    timeout_s: float = 1.0,
    count: int = 1,
    connection: ModbusConnection | None = None,
) -> list[str]:
    """Read once and return the lines to print; ReadFailed when nothing came back.

    `count` values of the type follow each other from `address`; a `connection` given is
    left open (for `--poll`), one made here is closed.
    """
    if table.is_bits:
        point_type = PointType.BOOL
    width = 1 if point_type is PointType.BOOL else register_count(point_type, length)
    total = width * count
    limit = 2000 if table.is_bits else MAX_REGISTERS
    if total > limit or address + total > 65536:
        unit = "bits" if table.is_bits else "registers"
        raise ValueError(
            f"--count {count} needs {total} {unit} from {address}: one request reads at most "
            f"{limit}, and none past 65535"
        )
    line = connection or open_line(url, timeout_s=timeout_s)
    try:
        registers = await read_raw(line, table, address, total, device_id=device_id)
    finally:
        if connection is None:
            line.close()
    what = "bits" if table.is_bits else "registers"
    head = (
        f"{url} id {device_id}, {table} {address} (0x{address:04X}), {total} {what}: "
        + " ".join(f"{r:04X}" if not table.is_bits else str(r) for r in registers)
    )
    if count > 1:
        return [head, *_rows(registers, address, point_type, width, length=length, scale=scale)]
    if point_type is PointType.BOOL:
        return [head, f"value  {bool(registers[0])}"]
    lines = [head, f"order  {point_type}" + (f" × {scale:g}" if scale != 1.0 else "")]
    for ov in decode_orders(registers, point_type, length=length, scale=scale):
        shown = format_value(ov.value) if ov.error is None else f"({ov.error})"
        lines.append(f"{ov.order}   {shown}")
    return lines


def _rows(
    registers: Sequence[int],
    address: int,
    point_type: PointType,
    width: int,
    *,
    length: int | None,
    scale: float,
) -> list[str]:
    """One row per value: its address, then its value in each order that differs."""
    if point_type is PointType.BOOL:
        return [f"{address + i:<14} {bool(r)}" for i, r in enumerate(registers)]
    cells: list[list[str]] = []
    for k in range(0, len(registers), width):
        at = address + k
        values = decode_orders(registers[k : k + width], point_type, length=length, scale=scale)
        cells.append(
            [f"{at} (0x{at:04X})"]
            + [format_value(v.value) if v.error is None else f"({v.error})" for v in values]
        )
    title = ["address"] + [str(o) for o in orders_for(point_type, length)]
    widths = [max(len(row[i]) for row in [title, *cells]) for i in range(len(title))]
    suffix = f"  ({point_type}" + (f" × {scale:g})" if scale != 1.0 else ")")
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        + (suffix if row is title else "")
        for row in [title, *cells]
    ]

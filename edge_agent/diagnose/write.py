"""`edge-agent write`: one write of one point for commissioning, then the value read back.

    $ edge-agent write tcp://10.0.0.5:502 100 42.5 --type float32 --yes
    tcp://10.0.0.5:502 id 1, FC16 holding 100 (0x0064), 2 registers: 422A 0000
    read back: 42.5

The notations are `read`'s (URL, 0-based address, --type, --order, --scale, --table); the
value is in engineering units and goes through the agent's own encoder (drivers/modbus/
write.py), so what it writes is what the agent would write for a point so configured.
Without --yes it shows the frame and asks before sending it.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from drivers.contract import WriteRefused
from drivers.modbus.codec import DecodeError, Order, PointType, Table, decode
from drivers.modbus.config import ModbusPoint
from drivers.modbus.connection import BadAnswer
from drivers.modbus.driver import exception_reason
from drivers.modbus.plan import engineering_value
from drivers.modbus.write import encode_write
from drivers.options.writes import WriteOptions
from drivers.reading import DeviceUnreachable, Value
from edge_agent.diagnose.read import ReadFailed, open_line, read_raw

_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


class WriteNotSent(Exception):
    """The value cannot be written as given, or the user said no; nothing was sent."""


def parse_value(text: str, point_type: PointType) -> Value:
    """The command line's value as the point's type takes it."""
    if point_type is PointType.BOOL:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise WriteNotSent(f"a coil takes true or false (1/0, on/off), not {text[:40]!r}")
    if point_type is PointType.STRING:
        return text
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise WriteNotSent(f"{point_type} takes a number, not {text[:40]!r}") from None


def write_point(
    *,
    table: Table,
    address: int,
    point_type: PointType,
    order: Order,
    length: int | None,
    scale: float,
) -> ModbusPoint:
    """The point the command line describes, checked as a config's would be."""
    try:
        return ModbusPoint(
            name="point",
            table=table,
            address=address,
            type=point_type,
            order=order,
            length=length,
            scale=scale,
            write=WriteOptions(),
        )
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ").removeprefix("write: ")
        raise WriteNotSent(message) from None


async def run_write(
    url: str,
    address: int,
    text: str,
    *,
    point_type: PointType,
    table: Table,
    order: Order = Order.ABCD,
    device_id: int = 1,
    length: int | None = None,
    scale: float = 1.0,
    timeout_s: float = 1.0,
    confirm: Callable[[str], bool] | None = None,
    say: Callable[[str], None] = print,
) -> Value:
    """Write, read back, and return the value read; `confirm(frame)` first unless None."""
    if point_type is PointType.BOOL and table is Table.HOLDING:
        table = Table.COIL  # `--type bool` means a coil
    point = write_point(
        table=table,
        address=address,
        point_type=point_type,
        order=order,
        length=length,
        scale=scale,
    )
    value = parse_value(text, point.point_type)
    try:
        frame = encode_write(point, order, value)
    except WriteRefused as exc:
        raise WriteNotSent(exc.reason) from None
    unit = "coil" if frame.table is Table.COIL else "register"
    count = len(frame.registers)
    shown = (
        ("ON" if frame.registers[0] else "OFF")
        if frame.table is Table.COIL
        else " ".join(f"{r:04X}" for r in frame.registers)
    )
    line = (
        f"{url} id {device_id}, FC{frame.function_code:02d} {frame.table} {address} "
        f"(0x{address:04X}), {count} {unit}{'s' if count > 1 else ''}: {shown}"
    )
    say(line)
    if confirm is not None and not confirm(line):
        raise WriteNotSent("not written")
    connection = open_line(url, timeout_s=timeout_s)
    try:
        try:
            await connection.connect()
            code = await connection.write(
                frame.table, frame.address, frame.registers, device_id=device_id
            )
        except (DeviceUnreachable, BadAnswer) as exc:
            raise ReadFailed(exc.reason) from exc
        if code is not None:
            raise ReadFailed(exception_reason(code))
        raw = await read_raw(connection, point.table, address, point.count, device_id=device_id)
    finally:
        connection.close()
    if point.table is Table.COIL:
        read_back: Value = bool(raw[0])
    else:
        try:
            decoded = decode(raw, point.point_type, order, length=length)
        except DecodeError as exc:
            raise ReadFailed(f"written; the read-back does not decode: {exc}") from exc
        read_back = engineering_value(point, decoded)
    say(f"read back: {read_back}")
    return read_back

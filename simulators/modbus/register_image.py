"""The encoded register image of one simulated device, built from its profile.

Each table a profile uses gets a flat byte image that a read answers from with one slice:

    holding/input  bytearray, 2 bytes per register, big-endian as on the wire
                   register n = image[2n : 2n + 2]
    coil/discrete  bytearray, 1 byte per bit, 0 or 1 (packed per request)
    coverage       bytearray, 1 byte per address: 0 gap, 1 a point, 2 unreadable

Engineering values go in through the codec's `encode` (raw = (value - offset) / scale,
rounded and clamped for integer types), points that share a register (bits, or bits and
the status word they belong to) are OR-ed into it. `served_values` decodes the image back
with the codec, so it is by construction what a correct client sees on the wire.

A register written by a client pins the points it touches: the simulator's signals no
longer overwrite them, as a real device keeps a written setting.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.modbus.codec import (
    FLOAT_TYPES,
    DecodeError,
    Order,
    PointType,
    Table,
    decode,
    encode,
    value_range,
)
from drivers.modbus.config import ModbusPoint, ModbusProfile
from drivers.reading import Value
from simulators.modbus.frames import ILLEGAL_DATA_ADDRESS, pack_bits

GAP, COVERED, UNREADABLE = 0, 1, 2
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class ImagePoint:
    """A profile point with its effective order resolved."""

    point: ModbusPoint
    order: Order

    @property
    def name(self) -> str:
        """The point's name."""
        return self.point.name


@dataclass(frozen=True, slots=True)
class _Slot:
    """Registers (or one bit) that are encoded together: one point, or points sharing a word."""

    table: Table
    address: int
    count: int
    points: tuple[ImagePoint, ...]
    pack: struct.Struct


def engineering(raw: Value, scale: float, offset: float, decimals: int | None = None) -> Value:
    """Raw decoded value to engineering units: raw * scale + offset, rounded to decimals.

    When 1/scale is a whole number the raw value is divided by it instead, so 2305 at
    scale 0.1 gives exactly 230.5 (2305 * 0.1 gives 230.50000000000003). This is the
    driver's rule (drivers/modbus/plan.py), so served values are what the agent reads.
    """
    if raw is None or isinstance(raw, bool | str):
        return raw
    if scale == 1.0 and offset == 0.0 and decimals is None:
        return raw
    inverse = 1.0 / scale
    divisor = round(inverse)
    value: float
    if abs(scale) < 1 and abs(inverse - divisor) < 1e-9 * abs(inverse):
        value = raw / divisor
    else:
        value = raw * scale
    if offset:
        value += offset
    if decimals is not None:
        value = round(value, decimals)
    return value


def raw_value(point: ModbusPoint, value: Value) -> Value:
    """Engineering value to the raw value `encode` takes, fitted into the point's type."""
    t = point.point_type
    if t in (PointType.BOOL, PointType.BIT):
        return bool(value)
    if t is PointType.STRING:
        return _fit_text(str(value), 2 * point.count)
    if value is None or isinstance(value, str):
        raise ValueError(f"point {point.name!r} needs a number, got {value!r}")
    if isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
        raw: int | float = int(value)  # keeps 64-bit integers exact
    else:
        raw = (float(value) - point.offset) / point.scale
    if t in FLOAT_TYPES:
        if t is PointType.FLOAT32 and math.isfinite(raw):
            raw = max(-_FLOAT32_MAX, min(_FLOAT32_MAX, raw))
        return float(raw)
    bounds = value_range(t)
    assert bounds is not None
    whole = round(raw) if isinstance(raw, float) else raw
    return max(bounds[0], min(bounds[1], whole))


def _fit_text(text: str, size: int) -> str:
    data = text.encode("utf-8")
    while len(data) > size:  # cut whole characters, never half a UTF-8 sequence
        text = text[:-1]
        data = text.encode("utf-8")
    return text


def effective_order(point: ModbusPoint, profile: ModbusProfile, override: Order | None) -> Order:
    """The point's order, else the device's override, else the profile's default."""
    if point.order is not None:
        return point.order
    return override if override is not None else profile.order


class RegisterImage:
    """Per-table register and bit images of one device, encoded from its profile."""

    def __init__(
        self,
        profile: ModbusProfile,
        *,
        order: Order | None = None,
        strict_gaps: bool = False,
        input_as_holding: bool = False,
    ) -> None:
        self.profile = profile
        self.strict_gaps = strict_gaps
        self.points: tuple[ImagePoint, ...] = tuple(
            ImagePoint(p, effective_order(p, profile, order)) for p in profile.points
        )
        if input_as_holding and any(p.table is Table.INPUT for p in profile.points):
            raise ValueError("input_as_holding needs a profile without input-table points")
        sizes: dict[Table, int] = {}
        for p in profile.points:
            sizes[p.table] = max(sizes.get(p.table, 0), p.last_address + 1)
        for u in profile.unreadable:
            if u.table in sizes:
                sizes[u.table] = max(sizes[u.table], u.end + 1)
        self._data: dict[Table, bytearray] = {}
        self._coverage: dict[Table, bytearray] = {}
        for table, size in sizes.items():
            self._data[table] = bytearray(2 * size if not table.is_bits else size)
            self._coverage[table] = bytearray(size)
        for ip in self.points:
            p = ip.point
            self._coverage[p.table][p.address : p.last_address + 1] = b"\x01" * p.count
        for u in profile.unreadable:
            if u.table in self._coverage:
                self._coverage[u.table][u.start : u.end + 1] = b"\x02" * (u.end - u.start + 1)
        if input_as_holding and Table.HOLDING in self._data:
            # The same bytes answer FC03 and FC04 (DTSU666 read by OpenEMS, meters.md 3.2).
            self._data[Table.INPUT] = self._data[Table.HOLDING]
            self._coverage[Table.INPUT] = self._coverage[Table.HOLDING]
        self._slots = _slots_of(self.points)
        self._slot_of: dict[tuple[Table, int], int] = {}
        for index, slot in enumerate(self._slots):
            for address in range(slot.address, slot.address + slot.count):
                self._slot_of[(slot.table, address)] = index
        self._pinned: set[int] = set()

    @property
    def tables(self) -> tuple[Table, ...]:
        """The tables this device answers."""
        return tuple(self._data)

    def store(self, values: Mapping[str, Value]) -> None:
        """Encode engineering values into the image; pinned (client-written) points stay."""
        pinned = self._pinned
        for index, slot in enumerate(self._slots):
            if index in pinned:
                continue
            data = self._data[slot.table]
            if slot.table.is_bits:
                data[slot.address] = 1 if values[slot.points[0].name] else 0
                continue
            if len(slot.points) == 1:
                ip = slot.points[0]
                regs = _encode_point(ip, values[ip.name])
            else:
                word = 0
                for ip in slot.points:
                    word |= _encode_point(ip, values[ip.name])[0]
                regs = [word]
            slot.pack.pack_into(data, 2 * slot.address, *regs)

    def served_values(self) -> dict[str, Value]:
        """The engineering values the image currently decodes to, per point name."""
        values: dict[str, Value] = {}
        for ip in self.points:
            p = ip.point
            data = self._data[p.table]
            if p.table.is_bits:
                values[p.name] = bool(data[p.address])
                continue
            regs = struct.unpack_from(f">{p.count}H", data, 2 * p.address)
            try:
                raw = decode(regs, p.point_type, ip.order, length=p.length, bit=p.bit or 0)
            except DecodeError:
                values[p.name] = None
                continue
            values[p.name] = engineering(raw, p.scale, p.offset, p.decimals)
        return values

    def registers(self, table: Table, address: int, count: int) -> list[int]:
        """Registers as numbers, for tests and tools (no coverage check)."""
        return list(struct.unpack_from(f">{count}H", self._data[table], 2 * address))

    def check(self, table: Table, address: int, count: int, *, write: bool = False) -> int:
        """0 when the range may be accessed, else the Modbus exception code.

        The first and last address must belong to points and no address may be unreadable;
        gaps inside the range read as 0 unless strict_gaps. Writes must hit points only.
        """
        coverage = self._coverage.get(table)
        end = address + count
        if coverage is None or end > len(coverage):
            return ILLEGAL_DATA_ADDRESS
        if self.strict_gaps or write:
            if (
                coverage.find(GAP, address, end) >= 0
                or coverage.find(UNREADABLE, address, end) >= 0
            ):
                return ILLEGAL_DATA_ADDRESS
            return 0
        if (
            coverage[address] != COVERED
            or coverage[end - 1] != COVERED
            or coverage.find(UNREADABLE, address, end) >= 0
        ):
            return ILLEGAL_DATA_ADDRESS
        return 0

    def read(self, table: Table, address: int, count: int) -> bytes:
        """Response data for a checked read: register bytes as on the wire, or packed bits."""
        data = self._data[table]
        if table.is_bits:
            return pack_bits(data[address : address + count])
        return bytes(data[2 * address : 2 * (address + count)])

    def write(self, table: Table, address: int, payload: bytes) -> list[str]:
        """Store checked client data (register bytes, or 0/1 bytes for bits); pin its points.

        Returns the names of the points the write touched, every time (a second write of a
        set-point changes what the signals do as the first did).
        """
        data = self._data[table]
        if table.is_bits:
            data[address : address + len(payload)] = payload
            count = len(payload)
        else:
            data[2 * address : 2 * address + len(payload)] = payload
            count = len(payload) // 2
        touched: list[str] = []
        slots: set[int] = set()
        for a in range(address, address + count):
            index = self._slot_of.get((table, a))
            if index is not None and index not in slots:
                slots.add(index)
                touched.extend(ip.name for ip in self._slots[index].points)
        self._pinned |= slots
        return touched

    def unpin(self) -> None:
        """Let the signals drive every point again (forget client writes)."""
        self._pinned.clear()


def _encode_point(ip: ImagePoint, value: Value) -> list[int]:
    p = ip.point
    return encode(raw_value(p, value), p.point_type, ip.order, length=p.length, bit=p.bit or 0)


def _slots_of(points: Sequence[ImagePoint]) -> list[_Slot]:
    """Group points into slots: points that share one register are encoded together."""
    shared: dict[tuple[Table, int], list[ImagePoint]] = {}
    slots: list[_Slot] = []
    for ip in points:
        p = ip.point
        if p.count == 1 and not p.table.is_bits:
            shared.setdefault((p.table, p.address), []).append(ip)
        else:
            slots.append(_Slot(p.table, p.address, p.count, (ip,), struct.Struct(f">{p.count}H")))
    one = struct.Struct(">H")
    for (table, address), group in shared.items():
        slots.append(_Slot(table, address, 1, tuple(group), one))
    return slots

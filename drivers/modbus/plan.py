"""Read plan of a Modbus device: the fewest requests that read every point once.

Built once from the profile and the device entry, offline, so `edge-agent plan` shows
exactly what the agent will send. Points of one table are sorted by address and packed
greedily into requests: a point joins the current request when the registers skipped to
reach it are at most `max_gap`, the request stays within the protocol limit (125
registers, 2000 bits) and no skipped register lies in an `unreadable` range. Greedy is
optimal here: the constraints only ever forbid extending a request, never reward
stopping early.

The plan also fixes the order of values in a poll: requests in plan order, and inside a
request the order its BlockDecoder returns (grouped by byte order). Scaling is compiled
to one Scaling per distinct (scale, offset, decimals) of a device, with the indexes of its
points; point specs, fields and block decoders equal across devices are one object: a site
of 500 devices of one model holds 50 specs, not 25,000 (issue 20).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from drivers.modbus.codec import BlockDecoder, Field, Order, PointType, Table
from drivers.modbus.config import (
    MAX_BITS,
    MAX_REGISTERS,
    ModbusDevice,
    ModbusPoint,
    ModbusProfile,
    Unreadable,
)
from drivers.reading import PointSpec, Value
from drivers.weak_shared import WeakShared

BIT_GAP_FACTOR = 16  # a register's worth of bits per gap register on bit tables


@dataclass(frozen=True, slots=True)
class Request:
    """One read request and how to turn its answer into values."""

    table: Table
    start: int
    count: int
    point_names: tuple[str, ...]  # in the order the request yields values
    decoder: BlockDecoder | None  # register tables
    bit_offsets: tuple[int, ...] = ()  # bit tables: offset of each point from start

    @property
    def function_code(self) -> int:
        """The Modbus function code of this request."""
        return self.table.function_code


_SHARED = 8192  # distinct point specs and fields kept for sharing
_spec = lru_cache(maxsize=_SHARED)(PointSpec)
_field = lru_cache(maxsize=_SHARED)(Field)

# A decoder holds nothing of a poll (decode is a pure function of the registers), so
# equal blocks share one for as long as a plan holds it: 500 meters of one model, one
# decoder per block instead of 500 (two struct formats and index lists each, ~1.8 MB).
_decoder: WeakShared[tuple[Field, ...], BlockDecoder] = WeakShared(BlockDecoder)


@dataclass(frozen=True, slots=True)
class Scaling:
    """value = raw / divisor (or raw * multiplier) + offset, then rounded to decimals, for
    the values at `indexes`."""

    indexes: tuple[int, ...]
    divisor: int | None
    multiplier: float
    offset: float
    decimals: int | None


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a poll of one device needs, computed once."""

    device: str
    requests: tuple[Request, ...]
    points: tuple[PointSpec, ...]
    scalings: tuple[Scaling, ...]

    @property
    def registers_read(self) -> int:
        """Registers (or bits) transferred per poll, gaps included."""
        return sum(r.count for r in self.requests)


@dataclass(frozen=True, slots=True)
class _Placed:
    point: ModbusPoint
    order: Order


def _scaling(indexes: tuple[int, ...], point: ModbusPoint) -> Scaling | None:
    if point.scale == 1 and point.offset == 0 and point.decimals is None:
        return None
    divisor: int | None = None
    inverse = 1 / point.scale
    # Dividing by 10 gives the correctly rounded 230.5 where multiplying by 0.1 gives
    # 230.50000000000003; auditors compare these numbers by eye.
    if abs(point.scale) < 1 and abs(inverse - round(inverse)) < 1e-9 * abs(inverse):
        divisor = round(inverse)
    return Scaling(indexes, divisor, point.scale, point.offset, point.decimals)


def _split(
    placed: Sequence[_Placed], *, limit: int, max_gap: int, unreadable: Sequence[Unreadable]
) -> list[list[_Placed]]:
    groups: list[list[_Placed]] = []
    current: list[_Placed] = []
    start = end = 0  # end: last address covered by the current group
    for item in sorted(placed, key=lambda x: (x.point.address, x.point.last_address)):
        p = item.point
        if current:
            gap_start, gap_end = end + 1, p.address - 1
            blocked = (
                any(u.start <= gap_end and gap_start <= u.end for u in unreadable)
                if gap_start <= gap_end
                else False
            )
            new_end = max(end, p.last_address)
            if p.address - end - 1 <= max_gap and new_end - start + 1 <= limit and not blocked:
                current.append(item)
                end = new_end
                continue
            groups.append(current)
        current = [item]
        start, end = p.address, p.last_address
    if current:
        groups.append(current)
    return groups


def plan_requests(
    points: Sequence[ModbusPoint],
    *,
    default_order: Order = Order.ABCD,
    max_gap: int = 10,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    unreadable: Sequence[Unreadable] = (),
) -> list[Request]:
    """Coalesce points into requests (see the module docstring for the rules)."""
    by_table: dict[Table, list[_Placed]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(_Placed(p, p.order or default_order))
    requests: list[Request] = []
    for table in Table:
        placed = by_table.get(table)
        if not placed:
            continue
        limit = max_bits if table.is_bits else max_registers
        for item in placed:
            if item.point.count > limit:
                what = "max_bits" if table.is_bits else "max_registers"
                raise ValueError(
                    f"point {item.point.name!r} needs {item.point.count} registers, "
                    f"more than one request may read ({what} {limit})"
                )
        gap = max_gap * BIT_GAP_FACTOR if table.is_bits else max_gap
        blocked = [u for u in unreadable if u.table == table]
        for group in _split(placed, limit=limit, max_gap=gap, unreadable=blocked):
            start = group[0].point.address
            count = max(x.point.last_address for x in group) - start + 1
            if table.is_bits:
                requests.append(
                    Request(
                        table,
                        start,
                        count,
                        tuple(x.point.name for x in group),
                        None,
                        tuple(x.point.address - start for x in group),
                    )
                )
                continue
            fields = {
                _field(
                    x.point.address - start,
                    x.point.point_type,
                    x.order,
                    length=x.point.length,
                    bit=x.point.bit or 0,
                ): x.point.name
                for x in group
            }
            decoder = _decoder(tuple(fields))
            names = tuple(fields[f] for f in decoder.fields_in_output_order)
            requests.append(Request(table, start, count, names, decoder))
    return requests


def build_plan(device: ModbusDevice, profile: ModbusProfile) -> Plan:
    """The plan for one device entry read through one profile."""
    requests = plan_requests(
        profile.points,
        default_order=device.order or profile.order,
        max_gap=profile.max_gap if device.max_gap is None else device.max_gap,
        max_registers=device.max_registers or profile.max_registers,
        unreadable=(*profile.unreadable, *device.unreadable),
    )
    by_name = {p.name: p for p in profile.points}
    ordered = [by_name[name] for r in requests for name in r.point_names]
    points = tuple(_spec(p.name, p.unit) for p in ordered)
    by_scale: dict[tuple[float, float, int | None], list[int]] = {}
    for i, p in enumerate(ordered):
        by_scale.setdefault((p.scale, p.offset, p.decimals), []).append(i)
    scalings = tuple(
        s
        for indexes in by_scale.values()
        if (s := _scaling(tuple(indexes), ordered[indexes[0]])) is not None
    )
    return Plan(device.name, tuple(requests), points, scalings)


def engineering_value(point: ModbusPoint, raw: Value) -> Value:
    """One raw value of `point` in engineering units, as a poll would give it."""
    scaling = _scaling((0,), point)
    if scaling is None or raw is None or isinstance(raw, bool | str):
        return raw
    values: list[object] = [raw]
    apply_scaling(values, (scaling,))
    return values[0]  # type: ignore[return-value]


def apply_scaling(values: list[object], scalings: Sequence[Scaling]) -> None:
    """Turn raw numbers into engineering values in place; None stays None."""
    for s in scalings:
        divisor, multiplier, offset, decimals = s.divisor, s.multiplier, s.offset, s.decimals
        for index in s.indexes:
            raw = values[index]
            if raw is None:
                continue
            v: float = raw / divisor if divisor else raw * multiplier  # type: ignore[operator]
            if offset:
                v += offset
            if decimals is not None:
                v = round(v, decimals)
            values[index] = v


def describe_point_type(point: ModbusPoint) -> str:
    """Short type text for plan listings, e.g. 'float32 CDAB' or 'bit 3'."""
    t = point.point_type
    if t is PointType.BIT:
        return f"bit {point.bit}"
    if t is PointType.STRING:
        return f"string[{point.length}]"
    return str(t)

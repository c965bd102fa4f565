"""Read plan of an S7 PLC: the fewest read-var requests that read every point once.

Built offline from the device entry, so `edge-agent plan` shows what the driver sends.
Points of one block (a DB, or the M, I or Q area) are sorted by byte and joined into one
range while the bytes skipped to reach the next point are at most `max_gap` and the range
still fits one item of an answer. Ranges are then packed, in order, into requests while
the request (12 bytes per item, at most 20 items) and its answer (4 bytes per item, its
data, a fill byte after odd lengths) fit the PDU size. Values stay in the config's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.reading import PointSpec
from drivers.s7.address import Address, Area, DataType, Reader, reader
from drivers.s7.config import S7Device, S7Point
from drivers.s7.protocol import (
    ITEM_HEADER,
    ITEM_SPEC,
    MAX_ITEMS,
    READ_REQUEST_BASE,
    READ_RESPONSE_BASE,
    Item,
)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one point's value is in its item's bytes."""

    index: int  # the point's place in the poll
    offset: int  # from the item's first byte
    data_type: DataType
    bit: int | None
    scale: float
    read: Reader  # (item bytes, offset) -> value; ValueError when they cannot be one


@dataclass(frozen=True, slots=True)
class Range:
    """One item of a request and the points it carries."""

    item: Item
    slots: tuple[Slot, ...]
    label: str  # the block, as written: DB1, M, I, Q


@dataclass(frozen=True, slots=True)
class Request:
    """One read-var request."""

    ranges: tuple[Range, ...]

    @property
    def request_bytes(self) -> int:
        """The S7 PDU of the request."""
        return READ_REQUEST_BASE + ITEM_SPEC.size * len(self.ranges)

    @property
    def response_bytes(self) -> int:
        """The S7 PDU of its answer when every item is read."""
        return response_size([r.item.size for r in self.ranges])


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a poll of one PLC needs, computed once for one PDU size."""

    device: str
    pdu_size: int
    requests: tuple[Request, ...]
    points: tuple[PointSpec, ...]

    @property
    def bytes_read(self) -> int:
        """Data bytes asked per poll, gaps included."""
        return sum(r.item.size for q in self.requests for r in q.ranges)

    def describe(self) -> list[str]:
        """One line per request, then its items, for `edge-agent plan`."""
        lines: list[str] = []
        for n, request in enumerate(self.requests, 1):
            lines.append(
                f"read {n}: {len(request.ranges)} item{'s' if len(request.ranges) > 1 else ''}, "
                f"answer {request.response_bytes} of {self.pdu_size} bytes"
            )
            for r in request.ranges:
                names = ", ".join(self.points[s.index].name for s in r.slots)
                end = r.item.start + r.item.size - 1
                lines.append(f"  {r.label:<7} bytes {r.item.start:5d}-{end:<5d} {names}")
        return lines


def response_size(sizes: Sequence[int]) -> int:
    """An answer's S7 PDU for items of these sizes (fill bytes after odd, but not last)."""
    total = READ_RESPONSE_BASE
    for i, size in enumerate(sizes):
        total += ITEM_HEADER.size + size + (size % 2 if i < len(sizes) - 1 else 0)
    return total


def max_item_bytes(pdu_size: int) -> int:
    """The most bytes one item can carry: an answer with only that item."""
    return pdu_size - READ_RESPONSE_BASE - ITEM_HEADER.size


def _label(address: Address) -> str:
    return f"DB{address.db}" if address.db else address.area.name


def build_plan(device: S7Device, pdu_size: int | None = None) -> Plan:
    """The plan for `pdu_size` (default: the size the device asks for); ValueError when a
    point is larger than one answer can carry."""
    pdu = pdu_size or device.pdu_size
    limit = max_item_bytes(pdu)
    return Plan(
        device.name,
        pdu,
        pack(_ranges(device.points, device.max_gap, limit), pdu),
        tuple(PointSpec(p.name, p.unit) for p in device.points),
    )


def _ranges(points: Sequence[S7Point], max_gap: int, limit: int) -> list[Range]:
    placed: list[tuple[tuple[int, int], int, Address, DataType, float]] = []
    for i, p in enumerate(points):
        address, data_type = p.location, p.data_type
        if data_type.size > limit:
            raise ValueError(
                f"points[{i}] ({p.name}): {data_type.text()} takes {data_type.size} bytes, "
                f"more than one answer carries at this PDU size ({limit}): raise pdu_size"
            )
        placed.append((address.block, i, address, data_type, p.scale))
    # DBs first (what most points read), then the I, Q and M areas; by byte inside each.
    placed.sort(key=lambda t: (t[0][0] != Area.DB, t[0], t[2].byte, t[1]))
    ranges: list[Range] = []
    current: list[tuple[int, Address, DataType, float]] = []
    start = end = 0
    for block, i, address, data_type, scale in placed:
        last = address.byte + data_type.size
        if current and (
            current[0][1].block == block
            and address.byte - end <= max_gap
            and max(end, last) - start <= limit
        ):
            current.append((i, address, data_type, scale))
            end = max(end, last)
            continue
        if current:
            ranges.append(_range(current, start, end))
        current, start, end = [(i, address, data_type, scale)], address.byte, last
    if current:
        ranges.append(_range(current, start, end))
    return ranges


def _range(members: list[tuple[int, Address, DataType, float]], start: int, end: int) -> Range:
    first = members[0][1]
    slots = tuple(
        Slot(i, address.byte - start, data_type, address.bit, scale, reader(data_type, address.bit))
        for i, address, data_type, scale in members
    )
    return Range(Item(first.area, first.db, start, end - start), slots, _label(first))


def pack(ranges: Sequence[Range], pdu: int) -> tuple[Request, ...]:
    """Ranges, in order, into requests that (with their answers) fit the PDU."""
    requests: list[Request] = []
    current: list[Range] = []
    for r in ranges:
        sizes = [c.item.size for c in current] + [r.item.size]
        fits = (
            len(sizes) <= MAX_ITEMS
            and READ_REQUEST_BASE + ITEM_SPEC.size * len(sizes) <= pdu
            and response_size(sizes) <= pdu
        )
        if current and not fits:
            requests.append(Request(tuple(current)))
            current = []
        current.append(r)
    if current:
        requests.append(Request(tuple(current)))
    return tuple(requests)


def split(r: Range) -> list[Range]:
    """A range as one item per point (after the PLC refused the joined range)."""
    out: list[Range] = []
    for s in r.slots:
        item = Item(r.item.area, r.item.db, r.item.start + s.offset, s.data_type.size)
        out.append(Range(item, (Slot(s.index, 0, s.data_type, s.bit, s.scale, s.read),), r.label))
    return out

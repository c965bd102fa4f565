"""`edge-agent probe`: which type, order and scale make a register read as the value expected.

    $ edge-agent probe tcp://10.0.0.5:502 0x2000 --expect 230
    tcp://10.0.0.5:502 id 1, holding 8192 (0x2000): 4366 8000 0000 0000
    table    type     order  scale  value   error
    holding  float32  ABCD   1      230.5   +0.22%
    profile point: {address: 0x2000, type: float32, order: ABCD}

It reads up to four registers at the address from the holding and the input table (fewer
where the map ends), decodes them as every numeric type in every order that differs, times
every decimal scale from 0.0001 to 1000, and lists what lands within the tolerance of the
expected value: closest first, and of equally close ones the plainer reading first (a
float before a scaled integer, the Modbus default order before swapped ones).

A multi-register reading may splice two values: asked for 3028 of a map whose floats start
at 3027 and 3029, the words 3028-3029 in CDAB order pair the low word of one float with the
high word of the next and can land near the expected value. So the probe also reads the two
registers one earlier; when they hold a value whose high word comes first (the address was
probably 1-based), every multi-register reading at the address is marked `*` as a possible
splice, and the earlier start is proposed beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.codec import DecodeError, Order, PointType, Table, decode, register_count
from drivers.modbus.connection import ModbusConnection
from edge_agent.diagnose.read import ORDERS, ReadFailed, apply_scale, open_line, read_raw

TYPES = (
    PointType.FLOAT32,
    PointType.UINT16,
    PointType.INT16,
    PointType.UINT32,
    PointType.INT32,
    PointType.FLOAT64,
    PointType.UINT64,
    PointType.INT64,
    PointType.BCD16,
    PointType.BCD32,
)
SCALES = (1.0, 0.1, 0.01, 0.001, 0.0001, 10.0, 100.0, 1000.0)
SIXTEEN_BIT_ORDERS = (Order.ABCD, Order.BADC)  # CDAB and DCBA read one register the same


@dataclass(frozen=True, slots=True)
class Candidate:
    """One reading of the registers that comes close to the expected value."""

    table: Table
    point_type: PointType
    order: Order
    scale: float
    value: float
    error: float  # relative to the expected value (absolute when that is 0)

    @property
    def plainness(self) -> int:
        """Lower is the more likely reading of two equally close ones."""
        rank = 0 if self.point_type in (PointType.FLOAT32, PointType.FLOAT64) else 1
        rank += 0 if self.scale == 1.0 else 1
        rank += 0 if self.order is Order.ABCD else (1 if self.order is Order.CDAB else 2)
        rank += 1 if register_count(self.point_type) == 4 else 0
        rank += 1 if self.point_type in (PointType.BCD16, PointType.BCD32) else 0
        return rank

    def profile_point(self, address: int) -> str:
        """The point as a profile line, without its name."""
        parts = [f"address: 0x{address:04X}", f"type: {self.point_type}"]
        if register_count(self.point_type) > 1 or self.order is not Order.ABCD:
            parts.append(f"order: {self.order}")
        if self.scale != 1.0:
            parts.append(f"scale: {self.scale:g}")
        if self.table is not Table.HOLDING:
            parts.insert(0, f"table: {self.table}")
        return "{" + ", ".join(parts) + "}"


def find_candidates(
    registers: Sequence[int], expected: float, *, table: Table, tolerance: float
) -> list[Candidate]:
    """Every (type, order, scale) whose value is within `tolerance` (relative) of expected."""
    found: list[Candidate] = []
    for point_type in TYPES:
        width = register_count(point_type)
        if width > len(registers):
            continue
        orders = SIXTEEN_BIT_ORDERS if width == 1 else ORDERS
        for order in orders:
            try:
                raw = decode(registers[:width], point_type, order)
            except DecodeError:
                continue
            if not isinstance(raw, int | float) or isinstance(raw, bool):
                continue
            for scale in SCALES:
                value = float(apply_scale(raw, scale))  # type: ignore[arg-type]
                if not math.isfinite(value):
                    continue
                error = (value - expected) / abs(expected) if expected else value
                if abs(error) <= tolerance:
                    found.append(Candidate(table, point_type, order, scale, value, error))
    return found


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Closest first; among equally close (to 0.1 %), the plainest first."""
    return sorted(candidates, key=lambda c: (round(abs(c.error), 3), c.plainness))


async def _read_up_to_four(
    connection: ModbusConnection, table: Table, address: int, *, device_id: int
) -> list[int]:
    # A map that ends right after the point answers exception 02 to a longer read.
    last: ReadFailed | None = None
    for count in (4, 2, 1):
        if address + count > 65536:
            continue
        try:
            return await read_raw(connection, table, address, count, device_id=device_id)
        except ReadFailed as exc:
            if not str(exc).startswith("exception"):
                raise  # no answer at all: shorter reads will not help
            last = exc
    assert last is not None
    raise last


def earlier_start(
    registers: Sequence[int], expected: float, *, table: Table, tolerance: float
) -> list[Candidate]:
    """Readings of registers (A-1, A, ...) with their high word first: A as a second word."""
    return rank(
        [
            c
            for c in find_candidates(registers, expected, table=table, tolerance=tolerance)
            if register_count(c.point_type) > 1 and c.order in (Order.ABCD, Order.BADC)
        ]
    )


async def _read_earlier_pair(
    connection: ModbusConnection, table: Table, address: int, *, device_id: int
) -> list[int]:
    if address == 0:
        return []
    try:
        return await read_raw(connection, table, address - 1, 2, device_id=device_id)
    except ReadFailed as exc:
        if not str(exc).startswith("exception"):
            raise
        return []  # the map starts at the address


async def run_probe(
    url: str,
    address: int,
    *,
    expected: float,
    tables: Sequence[Table] = (Table.HOLDING, Table.INPUT),
    device_id: int = 1,
    tolerance: float = 0.05,
    timeout_s: float = 1.0,
    limit: int = 10,
) -> tuple[list[str], list[Candidate]]:
    """Read, match, and return (lines to print, ranked candidates)."""
    connection = open_line(url, timeout_s=timeout_s)
    lines: list[str] = []
    candidates: list[Candidate] = []
    earlier: list[Candidate] = []
    answered = False
    try:
        for table in tables:
            try:
                registers = await _read_up_to_four(connection, table, address, device_id=device_id)
            except ReadFailed as exc:
                lines.append(f"{url} id {device_id}, {table} {address}: {exc}")
                if not str(exc).startswith("exception"):
                    raise
                continue
            answered = True
            lines.append(
                f"{url} id {device_id}, {table} {address} (0x{address:04X}): "
                + " ".join(f"{r:04X}" for r in registers)
            )
            candidates.extend(
                find_candidates(registers, expected, table=table, tolerance=tolerance)
            )
            pair = await _read_earlier_pair(connection, table, address, device_id=device_id)
            earlier.extend(earlier_start(pair, expected, table=table, tolerance=tolerance))
    finally:
        connection.close()
    if not answered:
        raise ReadFailed("every table answered with an exception")
    ranked = rank(candidates)
    if not ranked:
        lines.append(f"nothing reads within {tolerance:.0%} of {expected:g}")
        return lines, ranked
    spliced = {table for table in tables if any(e.table is table for e in earlier)}

    def suspect(c: Candidate) -> bool:
        return c.table in spliced and register_count(c.point_type) > 1

    lines.append(f"{'table':<8} {'type':<8} {'order':<5}  {'scale':<6} {'value':<14} error")
    for c in ranked[:limit]:
        lines.append(
            f"{c.table!s:<8} {c.point_type!s:<8} {c.order!s:<5}  {c.scale:<6g} "
            f"{c.value:<14.9g} {c.error:+.2%}" + ("  *" if suspect(c) else "")
        )
    if len(ranked) > limit:
        lines.append(f"... and {len(ranked) - limit} less likely readings")
    best = ranked[0]
    if earlier and any(suspect(c) for c in ranked[:limit]):
        start = rank(earlier)[0]
        before = address - 1
        lines.append(
            f"* may splice two values: register {address} (0x{address:04X}) is the second "
            f"word of {before} (0x{before:04X}), which reads {start.value:.9g} as "
            f"{start.table} {start.point_type} {start.order}"
            + (f" × {start.scale:g}" if start.scale != 1.0 else "")
            + f"; a multi-register reading at {address} joins it to {address + 1}. "
            "Was the address 1-based?"
        )
        if suspect(best):
            lines.append(
                f"profile point: {start.profile_point(before)} (starting one register "
                f"earlier), or {best.profile_point(address)} if the value starts at {address}"
            )
            return lines, ranked
    lines.append(f"profile point: {best.profile_point(address)}")
    return lines, ranked

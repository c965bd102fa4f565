"""S7 driver: executes a PLC's read plan over one ISO-on-TCP connection.

The plan is compiled in __init__ for the PDU size the device asks for; if the CPU grants
less it is compiled again for the granted size (logged once). A refused item marks only
its points bad, with the PLC's return code ("PLC item code 0x0A (object does not exist)");
a joined range refused as out of range is read again point by point, and stays split,
so one address beyond the end of a DB costs only that point. The CPU's operating state
is read on connecting and every CPU_STATE_EVERY_S (each poll while in STOP): in STOP the
values are read but no longer updated, so they are marked uncertain, "PLC in STOP".
"""

from __future__ import annotations

import logging
import time

from drivers.contract import WriteFailed, WriteRefused
from drivers.reading import DeviceUnreachable, PointSpec, Poll, Quality, Value
from drivers.s7.config import S7Device, S7Point
from drivers.s7.connection import S7Connection
from drivers.s7.plan import Plan, Range, build_plan, pack, split
from drivers.s7.protocol import (
    CPU_RUN,
    CPU_STOP,
    ITEM_OK,
    SZL_CPU_STATE,
    FrameError,
    Item,
    item_reason,
    parse_cpu_state,
    parse_read,
    parse_write,
    read_request,
    szl_request,
    write_request,
)
from drivers.s7.values import encode_write

log = logging.getLogger(__name__)

CPU_STATE_EVERY_S = 10.0
OUT_OF_RANGE = 0x05
STOP_REASON = "PLC in STOP (values are not updated)"


class S7Driver:
    """One S7 CPU: a plan plus its connection."""

    protocol = "s7"

    def __init__(self, device: S7Device) -> None:
        self.name = device.name
        self.device = device
        self.plan: Plan = build_plan(device)
        self.points: tuple[PointSpec, ...] = self.plan.points
        self.connection = S7Connection(
            device.endpoint,
            name=device.name,
            local_tsap=device.local_tsap_code,
            remote_tsap=device.remote_tsap_code,
            pdu_size=device.pdu_size,
            timeout_s=device.timeout_s,
        )
        self.cpu_state = 0
        self._state_due = 0.0
        self._points_by_name = {p.name: p for p in device.points}
        self._index_by_name = {p.name: i for i, p in enumerate(self.points)}

    async def _connect(self) -> None:
        conn = self.connection
        await conn.connect()
        if conn.pdu_size < self.plan.pdu_size:
            log.warning(
                "%s: CPU grants a PDU of %d bytes (asked %d): read plan made again",
                self.name,
                conn.pdu_size,
                self.plan.pdu_size,
            )
            try:
                self.plan = build_plan(self.device, conn.pdu_size)
            except ValueError as exc:
                conn.close()
                raise DeviceUnreachable(self.name, str(exc)) from None
        self._state_due = 0.0

    async def _read_state(self) -> None:
        now = time.monotonic()
        if self.cpu_state == CPU_RUN and now < self._state_due:
            return
        conn = self.connection
        answer = await conn.exchange(szl_request(conn.next_ref(), SZL_CPU_STATE, 0))
        try:
            state = parse_cpu_state(answer)
        except FrameError:
            state = CPU_RUN  # CPUs that do not answer SZL reads (LOGO!) are taken as running
        if state != self.cpu_state and (state == CPU_STOP or self.cpu_state == CPU_STOP):
            log.warning("%s: CPU %s", self.name, "in STOP" if state == CPU_STOP else "in RUN")
        self.cpu_state = state
        self._state_due = now + CPU_STATE_EVERY_S

    async def read(self) -> Poll:
        """One poll: the CPU state when due, then every request of the plan."""
        try:
            if not self.connection.connected:
                await self._connect()
            await self._read_state()
            values: list[Value] = [None] * len(self.points)
            issues: dict[int, tuple[Quality, str]] = {}
            refused: list[Range] = []
            for request in self.plan.requests:
                refused += await self._execute(request.ranges, values, issues)
            if refused:
                await self._split(refused, values, issues)
        except FrameError as exc:
            raise DeviceUnreachable(self.name, f"bad answer: {exc}") from None
        if self.cpu_state == CPU_STOP:
            for i in range(len(values)):
                issues.setdefault(i, (Quality.UNCERTAIN, STOP_REASON))
        return Poll(self.name, time.time_ns(), self.points, values, issues)

    async def _execute(
        self,
        ranges: tuple[Range, ...],
        values: list[Value],
        issues: dict[int, tuple[Quality, str]],
    ) -> list[Range]:
        """Read the ranges; fill values and issues; return joined ranges refused as out of
        range (to be read point by point)."""
        conn = self.connection
        answer = await conn.exchange(read_request(conn.next_ref(), [r.item for r in ranges]))
        results = parse_read(answer, [r.item.size for r in ranges])
        refused: list[Range] = []
        for r, (code, data) in zip(ranges, results, strict=True):
            if code != ITEM_OK:
                if code == OUT_OF_RANGE and len(r.slots) > 1:
                    refused.append(r)
                    continue
                issue = (Quality.BAD, item_reason(code))
                for s in r.slots:
                    issues[s.index] = issue
                continue
            for s in r.slots:
                try:
                    value = s.read(data, s.offset)
                except ValueError as exc:
                    issues[s.index] = (Quality.BAD, str(exc))
                    continue
                if s.scale != 1 and isinstance(value, int | float) and not isinstance(value, bool):
                    value = value * s.scale
                values[s.index] = value
        return refused

    async def _split(
        self, refused: list[Range], values: list[Value], issues: dict[int, tuple[Quality, str]]
    ) -> None:
        """Read refused joined ranges point by point, and keep them split from now on."""
        pdu = self.plan.pdu_size
        replaced = {id(r): split(r) for r in refused}
        for request in pack([p for r in refused for p in replaced[id(r)]], pdu):
            await self._execute(request.ranges, values, issues)
        ranges = [p for q in self.plan.requests for r in q.ranges for p in replaced.get(id(r), [r])]
        log.warning(
            "%s: %s out of range as joined; read point by point from now on",
            self.name,
            ", ".join(
                f"{r.label} bytes {r.item.start}-{r.item.start + r.item.size - 1}" for r in refused
            ),
        )
        self.plan = Plan(self.plan.device, pdu, pack(ranges, pdu), self.plan.points)

    def writable(self, name: str) -> S7Point:
        """The point of that name if the config made it writable; WriteRefused otherwise."""
        point = self._points_by_name.get(name)
        if point is None:
            raise WriteRefused("unknown_point", f"no point {name!r}")
        if point.write is None:
            raise WriteRefused("not_writable", f"{name!r} has no write: in the config")
        return point

    async def write(self, name: str, value: Value) -> Value:
        """Write one point (engineering units; the scale undone) and read it back."""
        point = self.writable(name)
        data, bit = encode_write(point, value)
        a = point.location
        item = Item(int(a.area), a.db, a.byte, len(data))
        try:
            if not self.connection.connected:
                await self._connect()
            conn = self.connection
            answer = await conn.exchange(write_request(conn.next_ref(), item, data, bit=bit))
            (code,) = parse_write(answer, 1)
            if code != ITEM_OK:
                raise WriteFailed(item_reason(code))
            index = self._index_by_name[name]
            values: list[Value] = [None] * len(self.points)
            issues: dict[int, tuple[Quality, str]] = {}
            ranges = [r for q in self.plan.requests for r in q.ranges]
            mine = [p for r in ranges for p in split(r) if p.slots[0].index == index]
            for request in pack(mine, self.plan.pdu_size):
                await self._execute(request.ranges, values, issues)
        except FrameError as exc:
            raise DeviceUnreachable(self.name, f"bad answer: {exc}") from None
        if index in issues:
            raise WriteFailed(f"written, but the read-back failed: {issues[index][1]}")
        return values[index]

    @property
    def bad_answers(self) -> int:
        """Answers refused as malformed or belonging to another job."""
        return self.connection.bad_answers

    async def close(self) -> None:
        """Close the connection; idempotent."""
        self.connection.close()

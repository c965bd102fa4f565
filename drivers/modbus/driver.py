"""Modbus driver: executes a device's read plan over a (possibly shared) connection.

The plan is compiled in __init__ and no socket is opened there, so `edge-agent check`
and `edge-agent plan` work offline. An exception answer marks only that request's
points bad ("exception 02"), and so does an answer that is malformed or does not match its
request ("wrong answer: function code 4 (asked 3)"); a value that cannot decode marks only
its point bad; no answer at all raises DeviceUnreachable for the poller to handle.
Exception 06 (device busy) asks the client to try again later: the request is repeated
after each delay of BUSY_RETRY_DELAYS_S before its points are marked bad, a bound that
keeps a busy unit from holding a shared line for long.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
from collections.abc import Sequence

from drivers.contract import WriteFailed, WriteRefused
from drivers.modbus.codec import DecodeError, Order, decode
from drivers.modbus.config import ModbusDevice, ModbusPoint, ModbusProfile
from drivers.modbus.connection import BadAnswer, ModbusConnection
from drivers.modbus.exchange import Exchange
from drivers.modbus.plan import Plan, apply_scaling, build_plan, engineering_value
from drivers.modbus.write import encode_write
from drivers.reading import DeviceUnreachable, PointSpec, Poll, Quality, Value

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


BUSY = 6
BUSY_RETRY_DELAYS_S = (0.05, 0.1)


def exception_reason(code: int) -> str:
    """Quality reason for a Modbus exception answer, e.g. 'exception 02 (illegal data address)'."""
    name = EXCEPTION_NAMES.get(code)
    return f"exception {code:02d}" + (f" ({name})" if name else "")


class ModbusDriver:
    """One Modbus unit: a plan plus the connection of the line it sits on."""

    protocol = "modbus"

    def __init__(
        self,
        device: ModbusDevice,
        profile: ModbusProfile,
        *,
        connection: ModbusConnection | None = None,
    ) -> None:
        self.name = device.name
        self.device = device
        self.device_id = device.device_id
        self.plan: Plan = build_plan(device, profile)
        self.profile = profile
        self.default_order: Order = device.order or profile.order
        self.points: tuple[PointSpec, ...] = self.plan.points
        self.connection = connection or ModbusConnection(
            device.endpoint, name=device.name, timeout_s=device.timeout_s
        )
        self._exchanges: tuple[Exchange, ...] | None = None  # the plan's requests, framed
        self._unsent: tuple[None, ...] = (None,) * len(self.plan.requests)
        window = device.max_in_flight if self.connection.tcp else 1
        self._window = window if len(self.plan.requests) > 1 else 1

    def _framed(self) -> tuple[Exchange, ...]:
        # Framed at the first poll, not in __init__: `check` and `plan` never poll.
        conn = self.connection
        self._exchanges = tuple(
            conn.read_exchange(r.table, r.start, r.count, device_id=self.device_id)
            for r in self.plan.requests
        )
        return self._exchanges

    async def connect(self) -> None:
        """Open the line if needed."""
        await self.connection.connect()

    async def read(self) -> Poll:
        """One poll: every request of the plan, in order."""
        conn = self.connection
        values: list[Value] = []
        issues: dict[int, tuple[Quality, str]] = {}
        framed = self._exchanges or self._framed()
        sent = self._unsent if self._window == 1 else await self._pipelined(framed)
        for req, exchange, early in zip(self.plan.requests, framed, sent, strict=True):
            base = len(values)
            n = len(req.point_names)
            try:
                if early is None:
                    if not conn.connected:
                        # Also mid-poll: a broken MBAP header closes the line, the next
                        # request of the poll starts on a fresh one.
                        await conn.connect()
                    answer = await conn.fetch(exchange)
                elif isinstance(early, BadAnswer):
                    raise early
                else:
                    answer = early
                for delay_s in BUSY_RETRY_DELAYS_S:
                    if answer != BUSY:
                        break
                    await asyncio.sleep(delay_s)
                    answer = await conn.fetch(exchange)
            except BadAnswer as exc:
                issue = (Quality.BAD, exc.reason)
                values.extend([None] * n)
                for k in range(base, base + n):
                    issues[k] = issue
                continue
            if isinstance(answer, int):
                issue = (Quality.BAD, exception_reason(answer))
                values.extend([None] * n)
                for k in range(base, base + n):
                    issues[k] = issue
            elif req.decoder is None:
                # The connection checked the byte count: every asked bit is there.
                values.extend([bool(answer[o]) for o in req.bit_offsets])
            else:
                try:
                    decoded, errors = req.decoder.decode_bytes(answer)  # type: ignore[arg-type]
                except ValueError as exc:
                    values.extend([None] * n)
                    for k in range(base, base + n):
                        issues[k] = (Quality.BAD, str(exc))
                    continue
                values.extend(decoded)
                for k, reason in errors:
                    issues[base + k] = (Quality.BAD, reason)
        apply_scaling(values, self.plan.scalings)  # type: ignore[arg-type]
        conn.idle_for(self.device.interval_s)  # until the next poll, about
        return Poll(self.name, time.time_ns(), self.points, values, issues)

    async def _pipelined(
        self, framed: tuple[Exchange, ...]
    ) -> list[bytes | Sequence[bool] | int | BadAnswer | None]:
        """The answers of the plan's requests, `max_in_flight` of them sent at a time
        (None: not answered, the poll sends it again on its own)."""
        conn = self.connection
        answers: list[bytes | Sequence[bool] | int | BadAnswer | None] = []
        for i in range(0, len(framed), self._window):
            if not conn.connected:
                await conn.connect()
            answers.extend(await conn.fetch_all(framed[i : i + self._window]))
        return answers

    @functools.cached_property
    def map(self) -> dict[str, ModbusPoint]:
        """The profile's points by name, made on the first write: a dict per device that
        is never read while polling (~0.8 MB at 500 devices of 50 points, issue 20)."""
        return {p.name: p for p in self.profile.points}

    def order_of(self, point: ModbusPoint) -> Order:
        """The byte and word order the point is read (and written) in."""
        return point.order or self.default_order

    def writable(self, name: str) -> ModbusPoint:
        """The point `name` when the config made it writable; WriteRefused otherwise."""
        point = self.map.get(name)
        if point is None:
            raise WriteRefused("unknown_point", f"{self.name} has no point {name[:64]!r}")
        if point.write is None:
            raise WriteRefused("not_writable", f"{name} is not writable (no write: in the config)")
        return point

    async def write(self, name: str, value: Value, *, read_back: bool = True) -> Value:
        """Write one point, then read it back: the value read (engineering units).

        Two transactions on the line, the caller's slot between polls: the write, then a
        read of the point's own address (the read-back shows what the device kept, which a
        device may clamp or refuse silently). `read_back` False: the write only (None).
        """
        point = self.writable(name)
        frame = encode_write(point, self.order_of(point), value)
        conn = self.connection
        if not conn.connected:
            await conn.connect()
        try:
            code = await conn.write(
                frame.table, frame.address, frame.registers, device_id=self.device_id
            )
        except BadAnswer as exc:
            raise WriteFailed(exc.reason) from exc
        if code is not None:
            raise WriteFailed(exception_reason(code))
        return await self.read_back(point) if read_back else None

    async def read_back(self, point: ModbusPoint) -> Value:
        """Read a written point once (one transaction): its value, or WriteFailed."""
        conn = self.connection
        try:
            answer = await conn.read(
                point.table, point.address, point.count, device_id=self.device_id
            )
        except BadAnswer as exc:
            raise WriteFailed(f"written, but the read-back failed: {exc.reason}") from exc
        except DeviceUnreachable as exc:
            raise WriteFailed(f"written, but the read-back failed: {exc.reason}") from exc
        if isinstance(answer, int):
            raise WriteFailed(f"written, but the read-back failed: {exception_reason(answer)}")
        if isinstance(answer, bytes):
            registers = struct.unpack(f">{len(answer) // 2}H", answer)
            try:
                raw = decode(registers, point.point_type, self.order_of(point), length=point.length)
            except DecodeError as exc:
                raise WriteFailed(f"written, but the read-back does not decode: {exc}") from exc
            return engineering_value(point, raw)
        return bool(answer[0])

    @property
    def bad_answers(self) -> int:
        """Answers of this unit refused as malformed, incomplete or not matching the read."""
        return self.connection.bad_answers[self.device_id]

    async def close(self) -> None:
        """Close the connection; idempotent."""
        self.connection.close()

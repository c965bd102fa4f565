"""One simulated DL/T 645-2007 meter: the Modbus meters' physics, served by identifier.

The values come from `MeterPhysics` (the same seeded three-phase model the Modbus meters
use), sampled at most once per `update_interval_s` on the first request after it has
passed, and converted to the units of each identifier (kWh, kW, kvar, V, A, Hz):

    00 01 TT 00  import energy; TT 0 total, 1..4 sharp, peak, flat, valley; tariffs above
                 the meter's `tariffs` get an error answer. With `tariff_at` (the tariff
                 number 1..4 in force at a meter-clock time, e.g. from a TOU calendar) the
                 energy counted since the last sample goes to that tariff's register, as
                 a real meter's do; without it the physics' fixed shares are served.
    00 02 TT 00  export energy          00 00 TT 00  combined = import + export
    00 03/05     reactive import        00 04/08     reactive export   (06, 07: zero)
    00 15/16 ..  per-phase import/export energy of phases A, B, C
    01 01 00 00  maximum import demand and the meter-clock minute it was reached
    02 ..        voltages, currents, P, Q, S, PF, phase angles, frequency, neutral current,
                 present demand (and the FF blocks of the table)
    04 00 01 01/02  the meter's date and time (host clock + offset; frozen with the values)
    04 00 04 01/02  address and meter number

Any other identifier gets an error answer "no requested data" (ERR 02), as a real meter
without it. A value longer than `max_data` (the L limit of an answer, 200 by the
standard) is split into subsequent frames, which the client fetches with 12H requests.

Fault switches (`simulators.common.faults`): no_answer stays silent, drop closes a TCP client's
connection (a serial line stays silent), slow answers late, exception answers every
request with ERR = code, corrupt sends a bad checksum.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any

from drivers.dlt645.formats import DataFormat, DecodeError, FieldKind, decode, encode
from drivers.dlt645.frame import (
    BROADCAST_TIME,
    ERROR,
    MAX_READ_DATA,
    MORE,
    READ_ADDRESS,
    READ_DATA,
    READ_NEXT,
    REPLY,
    Frame,
    address_bytes,
    address_text,
)
from drivers.dlt645.identifiers import BLOCK, BLOCK_TARIFFS, PHASE_OFFSETS, lookup
from drivers.reading import Value
from simulators.common.faults import FaultKind, Faults
from simulators.common.meter_physics import MeterPhysics
from simulators.common.requests import Action, RequestCounters

NO_DATA = 0x02  # ERR: no requested data
UNAUTHORIZED = 0x04  # ERR: password error / unauthorized (writes, which we do not take)
TARIFF_NAMES = ("sharp", "peak", "flat", "valley")  # tariff 1..4, 尖峰平谷
_PHASES = ("a", "b", "c")
_KW = 1e-3  # physics works in W, Wh, var, varh

FieldValue = Value | dt.datetime


class Dlt645Meter:
    """A meter on a simulated line, answering read requests from its physics."""

    def __init__(
        self,
        name: str,
        address: str,
        *,
        url: str = "",
        seed: int = 0,
        tariffs: int = 4,
        max_data: int = MAX_READ_DATA,
        preamble: int = 4,
        update_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = dt.datetime.now,
        tariff_at: Callable[[dt.datetime], int] | None = None,
    ) -> None:
        if not 6 <= max_data <= 255:
            raise ValueError(f"max_data must be within 6..255, got {max_data}")
        self.name = name
        self.address = address_bytes(address)
        if 0xAA in self.address:
            raise ValueError(f"{name}: a meter's own address has no wildcards: {address!r}")
        self.address_text = address_text(self.address)
        self.url = url
        self.tariffs = tariffs
        self.max_data = max_data
        self.preamble = preamble
        self.update_interval_s = update_interval_s
        self.physics = MeterPhysics([], seed=seed)
        self.faults = Faults(device=name)
        self.counters = RequestCounters()
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._updated = -math.inf
        self._frozen = False
        self._q: dict[str, float] = {}
        self._now = wall()
        self._demand_max = -math.inf
        self._demand_max_at = self._now
        self._continuation: tuple[int, list[bytes]] | None = None
        self._tariff_at = tariff_at
        self._registers: dict[str, list[float]] = {}  # direction -> Wh per tariff 1..4
        self._counted: dict[str, float] = {}  # direction -> total Wh already distributed
        self.refresh(force=True)

    # -- values ----------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Sample the physics and the clock if update_interval_s has passed (or force)."""
        now = self._clock()
        if force or (not self._frozen and now - self._updated >= self.update_interval_s):
            self._updated = now
            self._q = self.physics.quantities(now - self._t0)
            self._now = self._wall()
            if self._q["demand_max"] > self._demand_max:
                self._demand_max = self._q["demand_max"]
                self._demand_max_at = self._now.replace(second=0, microsecond=0)
            if self._tariff_at is not None:
                self._count_tariffs(self._tariff_at(self._now))

    def _count_tariffs(self, tariff: int) -> None:
        """Add the energy since the last sample to the register of `tariff` (1..4)."""
        if not 1 <= tariff <= len(TARIFF_NAMES):
            raise ValueError(f"{self.name}: tariff_at gave {tariff}, not 1..{len(TARIFF_NAMES)}")
        q = self._q
        for direction in ("import", "export"):
            total = q[f"energy_{direction}"]
            registers = self._registers.get(direction)
            if registers is None:  # start from the physics' split, which adds up to total
                registers = [q[f"energy_{direction}_{name}"] for name in TARIFF_NAMES]
                self._registers[direction] = registers
            else:
                registers[tariff - 1] += total - self._counted[direction]
            self._counted[direction] = total

    def freeze(self) -> None:
        """Hold every value, the clock included, still."""
        self._frozen = True

    def unfreeze(self) -> None:
        """Let the values move again from the next request on."""
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """True while values are held still."""
        return self._frozen

    def _energy(self, kind: int, tariff: int, phase: str | None = None) -> float | None:
        """An energy register in kWh/kvarh; None where the meter has none."""
        q = self._q
        if phase is not None:
            suffix = f"_{phase}"
        elif tariff == 0:
            suffix = ""
        elif tariff <= min(self.tariffs, len(TARIFF_NAMES)):
            suffix = f"_{TARIFF_NAMES[tariff - 1]}"
        else:
            return None
        if kind in (0x00, 0x01, 0x02):
            if self._registers and phase is None and tariff:
                imp = self._registers["import"][tariff - 1]
                exp = self._registers["export"][tariff - 1]
            else:
                imp, exp = q[f"energy_import{suffix}"], q[f"energy_export{suffix}"]
            return {0x00: imp + exp, 0x01: imp, 0x02: exp}[kind] * _KW
        if tariff:
            return None  # the physics keeps no reactive tariff registers
        if kind in (0x03, 0x05):
            return q[f"reactive_energy_import{suffix}"] * _KW
        if kind in (0x04, 0x08):
            return q[f"reactive_energy_export{suffix}"] * _KW
        if kind in (0x06, 0x07):
            return 0.0  # a lagging load never reaches quadrants II and III
        return None

    def _variable(self, di2: int, di1: int) -> list[FieldValue] | None:
        q = self._q
        quantity = {
            0x01: "voltage",
            0x02: "current",
            0x03: "power",
            0x04: "reactive_power",
            0x05: "apparent_power",
            0x06: "pf",
            0x07: "angle",
        }.get(di2)
        if quantity is None:
            return None
        members = ("total", *_PHASES) if 0x03 <= di2 <= 0x06 else _PHASES
        scale = _KW if di2 in (0x03, 0x04, 0x05) else 1.0

        def one(which: str) -> float:
            if quantity == "angle":
                return math.degrees(math.acos(max(-1.0, min(1.0, q[f"pf_{which}"]))))
            return q[f"{quantity}_{which}"] * scale

        if di1 == BLOCK:
            return [one(m) for m in members]
        index = di1 if members[0] == "total" else di1 - 1
        if not 0 <= index < len(members):
            return None
        return [one(members[index])]

    def values(self, di: int) -> list[FieldValue] | None:
        """The field values of an identifier right now; None for one the meter lacks."""
        di3, di2, di1, di0 = di.to_bytes(4, "big")
        q = self._q
        if di3 == 0x00 and di0 == 0x00:
            for phase, offset in PHASE_OFFSETS.items():
                if 0x01 <= di2 - offset <= 0x0A and di1 == 0:
                    value = self._energy(di2 - offset, 0, phase.lower())
                    return None if value is None else [value]
            if di1 == BLOCK:
                block = [self._energy(di2, t) for t in range(BLOCK_TARIFFS + 1)]
                return None if None in block else list(block)
            value = self._energy(di2, di1)
            return None if value is None else [value]
        if di == 0x01010000:
            return [self._demand_max * _KW, self._demand_max_at]
        if di3 == 0x02 and di0 == 0x00:
            return self._variable(di2, di1)
        specials: dict[int, list[FieldValue]] = {
            0x02800001: [q["current_n"]],
            0x02800002: [q["frequency"]],
            0x02800003: [q["power_total"] * _KW],
            0x02800004: [q["demand_total"] * _KW],
            0x04000101: [self._now],
            0x04000102: [self._now],
            0x04000103: [15],
            0x04000104: [1],
            0x04000401: [self.address_text],
            0x04000402: [self.address_text],
        }
        return specials.get(di)

    def value_bytes(self, di: int) -> bytes | None:
        """An identifier's value as encoded on the wire (before +33H); None when absent."""
        known = lookup(di)
        values = self.values(di)
        if known is None or values is None:
            return None
        fmt = known.format
        return encode(fmt, [_fit(fmt, k, v) for k, v in enumerate(values)])

    def served(self, di: int, field: int = 0) -> Value:
        """What a correct client decodes from this identifier right now."""
        raw = self.value_bytes(di)
        known = lookup(di)
        if raw is None or known is None:
            raise KeyError(f"{self.name} has no DI {di:08X}")
        value = decode(known.format, raw)[field]
        if isinstance(value, DecodeError):
            raise value
        return value

    def served_values(self) -> dict[str, Any]:
        """A JSON-ready view of the main identifiers as served right now (control API)."""
        out: dict[str, Any] = {}
        for di in _SHOWN:
            known = lookup(di)
            raw = self.value_bytes(di)
            if known is None or raw is None:
                continue
            fields = [None if isinstance(v, DecodeError) else v for v in decode(known.format, raw)]
            out[f"{di:08X}"] = fields[0] if len(fields) == 1 else fields
        return out

    def status(self) -> dict[str, Any]:
        """JSON-ready summary for the control API."""
        return {
            "name": self.name,
            "url": self.url,
            "address": self.address_text,
            "frozen": self._frozen,
            **self.faults.as_dict(),
            "counters": self.counters.as_dict(),
        }

    # -- requests --------------------------------------------------------------------------

    def serve(self, request: Frame) -> tuple[Action, bytes, float]:
        """Answer a request addressed to this meter under the current fault.

        Returns (action, answer frame bytes, delay_s); SILENT and CLOSE carry no bytes.
        """
        counters = self.counters
        counters.requests += 1
        kind = self.faults.kind
        if kind in (FaultKind.NO_ANSWER, FaultKind.DROP):
            counters.ignored += 1
            return (Action.SILENT if kind is FaultKind.NO_ANSWER else Action.CLOSE), b"", 0.0
        if kind is FaultKind.EXCEPTION or (
            kind is FaultKind.INTERMITTENT and counters.requests % 2
        ):
            answer: Frame | None = self._error(request.function, self.faults.code)
        else:
            answer = self.respond(request)
        if answer is None:
            return Action.SILENT, b"", 0.0
        counters.answered += 1
        if answer.is_error:
            counters.exceptions += 1
        out = answer.encode(preamble=self.preamble)
        if kind is FaultKind.CORRUPT:
            return Action.SEND, corrupt(out), 0.0
        if kind is FaultKind.SLOW:
            return Action.SEND, out, self.faults.delay_s
        return Action.SEND, out, 0.0

    def respond(self, request: Frame) -> Frame | None:
        """The answer to a request, faults aside; None for requests nobody answers."""
        function, data = request.function, request.data
        if function == READ_DATA and len(data) >= 4:
            di = int.from_bytes(data[:4], "little")
            if not self._frozen and self._clock() - self._updated >= self.update_interval_s:
                self.refresh(force=True)
            value = self.value_bytes(di)
            if value is None:
                return self._error(function, NO_DATA)
            room = self.max_data - 4
            if len(value) <= room:
                self._continuation = None
                return self._reply(function, data[:4] + value)
            rest = self.max_data - 5  # subsequent frames also carry SEQ
            chunks = [value[room + i : room + i + rest] for i in range(0, len(value) - room, rest)]
            self._continuation = (di, chunks)
            return self._reply(function, data[:4] + value[:room], more=True)
        if function == READ_NEXT and len(data) == 5:
            di, seq = int.from_bytes(data[:4], "little"), data[4]
            pending = self._continuation
            if pending is None or pending[0] != di or not 1 <= seq <= len(pending[1]):
                return self._error(function, NO_DATA)
            more = seq < len(pending[1])
            return self._reply(function, data[:4] + pending[1][seq - 1] + bytes((seq,)), more=more)
        if function == READ_ADDRESS:
            return self._reply(function, self.address)
        if function == BROADCAST_TIME:
            return None  # broadcasts are never answered
        return self._error(function, UNAUTHORIZED)

    def _reply(self, function: int, data: bytes, *, more: bool = False) -> Frame:
        return Frame(self.address, REPLY | (MORE if more else 0) | function, data)

    def _error(self, function: int, code: int) -> Frame:
        return Frame(self.address, REPLY | ERROR | function, bytes((code & 0xFF,)))


def corrupt(frame: bytes) -> bytes:
    """The frame with its checksum broken (the end byte stays, so it still looks whole)."""
    out = bytearray(frame)
    out[-2] ^= 0xFF
    return bytes(out)


def _fit(fmt: DataFormat, index: int, value: FieldValue) -> FieldValue:
    """A value the field can hold: energy rolls over like a real register, others clamp."""
    field = fmt.fields[index]
    if field.kind is not FieldKind.NUMBER or not isinstance(value, int | float):
        return value
    scale: int = 10**field.decimals
    raw = round(value * scale)
    if field.signed:
        raw = max(-(field.limit - 1), min(field.limit - 1, raw))
    else:
        raw = max(0, raw) % field.limit
    return raw / scale if field.decimals else raw


_SHOWN = (
    0x00000000,
    0x00010000,
    0x00010100,
    0x00010200,
    0x00010300,
    0x00010400,
    0x00020000,
    0x00030000,
    0x00040000,
    0x01010000,
    0x0201FF00,
    0x0202FF00,
    0x0203FF00,
    0x0204FF00,
    0x0206FF00,
    0x02800001,
    0x02800002,
    0x02800004,
    0x04000101,
    0x04000102,
    0x04000401,
)

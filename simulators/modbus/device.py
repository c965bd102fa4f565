"""One simulated Modbus device: its register image, its signals, its faults, its counters.

`SimDevice.respond` turns a request PDU into a response PDU (or an exception PDU) from
the precomputed image: a read is a coverage check, one slice and one concatenation. The
signals (meter physics or PLC patterns) are sampled lazily, at most once per
`update_interval_s`, on the first read after the interval has passed, so a fast client
does not pay physics per request.

`SimDevice.serve` adds the fault switches on top and tells the transport what to do with
the answer: send it (maybe after a delay), stay silent, close the connection, or send it
corrupted; the transport owns the framing, so it owns how a frame is broken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.modbus.codec import Order, Table
from drivers.modbus.config import MAX_BITS, MAX_REGISTERS, ModbusProfile
from drivers.reading import Value
from simulators.common.faults import FaultKind, Faults
from simulators.common.meter_physics import VOCABULARY, Kind, MeterPhysics, resolve_name
from simulators.common.requests import Action, RequestCounters
from simulators.modbus.frames import (
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    READ_REQUEST,
    WRITE_MULTIPLE_HEADER,
    exception_pdu,
    unpack_bits,
)
from simulators.modbus.plc_signals import PlcSignals
from simulators.modbus.register_image import RegisterImage


@dataclass(frozen=True, slots=True)
class LineRequest:
    """One request a device was sent, as a line recorder shows it (tests, benchmarks)."""

    device: str
    fc: int
    address: int
    count: int  # registers or bits (1 for FC05/FC06)


MAX_WRITE_REGISTERS = 123  # FC16 limit
MAX_WRITE_BITS = 1968  # FC15 limit
_READ_TABLES = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
_COIL_ON, _COIL_OFF = 0xFF00, 0x0000


class Signals(Protocol):
    """Where a device's values come from."""

    def sample(self, t: float) -> Mapping[str, Value]:
        """Every point's engineering value at time t (seconds of the device clock)."""
        ...

    def apply_written(self, values: Mapping[str, Value]) -> None:
        """Take note of values a client wrote."""
        ...


def signals_for(profile: ModbusProfile, *, seed: int, device_id: int = 1) -> Signals:
    """Meter physics when the profile names electrical quantities, else PLC patterns."""
    electrical = any(
        (name := resolve_name(p.name)) is not None and VOCABULARY[name] is not Kind.SETTING
        for p in profile.points
    )
    if electrical:
        return MeterPhysics(profile.points, seed=seed, device_id=device_id)
    return PlcSignals(profile.points, seed=seed)


class SimDevice:
    """A device behind a simulated endpoint, answering from its register image."""

    def __init__(
        self,
        name: str,
        profile: ModbusProfile,
        *,
        device_id: int = 1,
        url: str = "",
        order: Order | None = None,
        seed: int = 0,
        strict_gaps: bool = False,
        input_as_holding: bool = False,
        update_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        signals: Signals | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.device_id = device_id
        self.url = url
        self.update_interval_s = update_interval_s
        self.image = RegisterImage(
            profile, order=order, strict_gaps=strict_gaps, input_as_holding=input_as_holding
        )
        self.signals = signals or signals_for(profile, seed=seed, device_id=device_id)
        self.faults = Faults(device=name)
        self.counters = RequestCounters()
        # Devices of one line given the same list record the order of its requests.
        self.journal: list[LineRequest] | None = None
        self._clock = clock
        self._t0 = clock()  # signals see time since start, so patterns start at t = 0
        self._frozen = False
        self._updated = -math.inf
        self.refresh(force=True)

    # -- values --------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Sample the signals into the image if update_interval_s has passed (or force)."""
        now = self._clock()
        if force or (not self._frozen and now - self._updated >= self.update_interval_s):
            self._updated = now
            self.image.store(self.signals.sample(now - self._t0))

    def served_values(self) -> dict[str, Value]:
        """The engineering values the registers decode to right now, per point."""
        return self.image.served_values()

    def freeze(self) -> None:
        """Hold every value still (writes by clients still land)."""
        self._frozen = True

    def unfreeze(self) -> None:
        """Let the values move again from the next request on."""
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """True while values are held still."""
        return self._frozen

    def status(self) -> dict[str, Any]:
        """JSON-ready summary for the control API."""
        return {
            "name": self.name,
            "url": self.url,
            "device_id": self.device_id,
            "profile": self.profile.name,
            "frozen": self._frozen,
            **self.faults.as_dict(),
            "counters": self.counters.as_dict(),
        }

    # -- requests ------------------------------------------------------------------------

    def serve(self, pdu: bytes) -> tuple[Action, bytes, float]:
        """Answer a request PDU under the current fault: (action, response PDU, delay_s)."""
        counters = self.counters
        counters.requests += 1
        if self.journal is not None and len(pdu) >= 5:
            fc, address, count = READ_REQUEST.unpack_from(pdu)
            self.journal.append(LineRequest(self.name, fc, address, 1 if fc in (5, 6) else count))
        faults = self.faults
        kind = faults.kind
        if kind is FaultKind.NONE:
            out = self.respond(pdu)
            counters.answered += 1
            if out[0] & 0x80:
                counters.exceptions += 1
            return Action.SEND, out, 0.0
        if kind is FaultKind.NO_ANSWER or kind is FaultKind.DROP:
            counters.ignored += 1
            return (Action.SILENT if kind is FaultKind.NO_ANSWER else Action.CLOSE), b"", 0.0
        if kind is FaultKind.EXCEPTION or (
            kind is FaultKind.INTERMITTENT and counters.requests % 2
        ):
            out = exception_pdu(pdu[0], faults.code)
        else:
            out = self.respond(pdu)
        counters.answered += 1
        if out[0] & 0x80:
            counters.exceptions += 1
        if kind is FaultKind.SLOW:
            return Action.SEND, out, faults.delay_s
        if kind is FaultKind.CORRUPT:
            return Action.CORRUPT, out, 0.0
        return Action.SEND, out, 0.0

    def respond(self, pdu: bytes) -> bytes:
        """The response PDU for a request PDU, faults aside."""
        fc = pdu[0]
        table = _READ_TABLES.get(fc)
        if table is not None:
            if len(pdu) != 5:
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            _, address, count = READ_REQUEST.unpack(pdu)
            if not 1 <= count <= (MAX_BITS if fc <= 2 else MAX_REGISTERS):
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            image = self.image
            code = image.check(table, address, count)
            if code:
                return exception_pdu(fc, code)
            if not self._frozen and self._clock() - self._updated >= self.update_interval_s:
                self.refresh(force=True)
            data = image.read(table, address, count)
            return bytes((fc, len(data))) + data
        if fc in (5, 6, 15, 16):
            return self._write(fc, pdu)
        return exception_pdu(fc, ILLEGAL_FUNCTION)

    def _write(self, fc: int, pdu: bytes) -> bytes:
        table = Table.COIL if fc in (5, 15) else Table.HOLDING
        if fc in (5, 6):
            if len(pdu) != 5:
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            _, address, value = READ_REQUEST.unpack(pdu)
            if fc == 5 and value not in (_COIL_ON, _COIL_OFF):
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            count = 1
            payload = bytes((value == _COIL_ON,)) if fc == 5 else pdu[3:5]
            answer = pdu
        else:
            if len(pdu) < WRITE_MULTIPLE_HEADER.size:
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            _, address, count, nbytes = WRITE_MULTIPLE_HEADER.unpack_from(pdu)
            limit, expected = (
                (MAX_WRITE_BITS, (count + 7) // 8) if fc == 15 else (MAX_WRITE_REGISTERS, 2 * count)
            )
            body = pdu[WRITE_MULTIPLE_HEADER.size :]
            if not 1 <= count <= limit or nbytes != expected or len(body) != nbytes:
                return exception_pdu(fc, ILLEGAL_DATA_VALUE)
            payload = unpack_bits(body, count) if fc == 15 else body
            answer = pdu[:5]
        code = self.image.check(table, address, count, write=True)
        if code:
            return exception_pdu(fc, code)
        touched = self.image.write(table, address, payload)
        self.counters.writes += 1
        if touched:
            served = self.image.served_values()
            self.signals.apply_written({name: served[name] for name in touched})
        return answer

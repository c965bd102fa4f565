"""Siemens S7 CPUs simulated from a site's S7 devices, as a plugin, with their controls.

Faults (PUT /devices/{name}/fault of the control API):

    stop         the CPU goes to STOP: values freeze, the operating state reads STOP
    run          back to RUN
    unreachable  no listener, every connection dropped (connection refused)
    full         the connection table is full: ISO connects are refused (COTP DR)
    no_answer    jobs are read and never answered (connections stay open): timeouts
    missing_db   (db: N) the DB is deleted: its items answer 0x0A, object does not exist
    none         every fault cleared (RUN, listening, all DBs back)
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from drivers.s7.protocol import CPU_RUN, CPU_STOP
from simulators.common.contract import Served, SimulatedDevice, TariffClock
from simulators.common.control import HttpError
from simulators.s7.server import S7Listener, S7SimSpec, serve_s7

S7_FAULTS: tuple[str, ...] = (
    "none",
    "stop",
    "run",
    "unreachable",
    "full",
    "no_answer",
    "missing_db",
)


class S7Control:
    """One simulated CPU as the control API sees it."""

    kind = "s7"
    available: tuple[str, ...] = S7_FAULTS

    def __init__(self, listener: S7Listener) -> None:
        self.listener = listener

    def status(self) -> dict[str, Any]:
        """Where it listens, its mode, its DBs, and the faults switched on."""
        listener, plc = self.listener, self.listener.plc
        active = []
        if plc.cpu_state == CPU_STOP:
            active.append("stop")
        if not listener.listening:
            active.append("unreachable")
        if listener.full:
            active.append("full")
        if listener.silent:
            active.append("no_answer")
        active += [f"missing_db {n}" for n in sorted(plc.missing)]
        return {
            "name": plc.name,
            "url": listener.url,
            "cpu": "STOP" if plc.cpu_state == CPU_STOP else "RUN",
            "listening": listener.listening,
            "connections": listener.connections,
            "dbs": {str(n): size for n, size in sorted(plc.dbs.items())},
            "type": self.kind,
            "available_faults": list(self.available),
            "active_faults": active,
        }

    def values(self) -> Mapping[str, Any]:
        """What a client reads right now."""
        return dict(self.listener.plc.values)

    async def set_fault(self, fault: str, request: Mapping[str, Any]) -> None:
        """Switch a fault; HttpError 400 for bad keys or values."""
        listener, plc = self.listener, self.listener.plc
        keys = ("db",) if fault == "missing_db" else ()
        unknown = set(request) - {"fault", *keys}
        if unknown:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"unknown keys: {', '.join(sorted(unknown))} "
                f"({fault} takes {', '.join(('fault', *keys))})",
            )
        if fault == "stop":
            plc.cpu_state = CPU_STOP
        elif fault == "run":
            plc.cpu_state = CPU_RUN
        elif fault == "unreachable":
            await listener.stop()
        elif fault == "full":
            listener.full = True
        elif fault == "no_answer":
            listener.silent = True
        elif fault == "missing_db":
            db = request.get("db")
            if not isinstance(db, int) or isinstance(db, bool) or db not in plc.dbs:
                known = ", ".join(str(n) for n in sorted(plc.dbs)) or "none"
                raise HttpError(
                    HTTPStatus.BAD_REQUEST, f"db must be the number of a DB it has ({known})"
                )
            plc.missing.add(db)
        else:  # none
            plc.cpu_state = CPU_RUN
            plc.missing.clear()
            listener.full = listener.silent = False
            await listener.start()


class S7Simulator:
    """One CPU per S7 device, with the blocks and values its points name."""

    def specs(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        site_dir: Path,
        tariff_at: TariffClock | None,
    ) -> list[S7SimSpec]:
        return [S7SimSpec(d.device, zlib.crc32(d.device.name.encode())) for d in devices]

    @contextlib.asynccontextmanager
    async def serve(self, specs: Sequence[S7SimSpec]) -> AsyncIterator[Served]:
        async with serve_s7(specs) as site:
            served = Served()
            for spec in specs:
                listener = site.device(spec.device.name)
                served.controls[spec.device.name] = S7Control(listener)
                dbs = ", ".join(f"DB{n} ({size} bytes)" for n, size in listener.plc.dbs.items())
                served.lines[spec.device.name] = [
                    f"serving {spec.device.name} (S7 CPU, {dbs or 'no DB'}) at {listener.url}"
                ]
            yield served


SIMULATOR = S7Simulator()

"""Run simulated DL/T 645-2007 meters; the counterpart of `simulators.modbus.site` for Modbus.

    specs (name, url, address, seed, ...)
        │ grouped by line: meters with the same serial path or rtu+tcp://host:port share
        │ one line and are told apart by address
        ▼
    Dlt645SerialLine / Dlt645TcpListener  ──►  Dlt645Meter (physics, clock, faults)

`serve` is an `async with` block for tests, `run_dlt645_simulators` runs until cancelled:

    spec = Dlt645MeterSpec(name="m1", url=f"rtu://{pty}?baudrate=9600&parity=N",
                           address="000000000001")
    async with serve([spec]) as sim:
        sim.meter("m1").faults.set("no_answer")

The meters have the status()/served_values()/faults surface of the Modbus `SimDevice`,
so the HTTP control API (`simulators.common.control`) can switch their faults too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from drivers.dlt645.config import LineEndpoint, parse_endpoint
from drivers.dlt645.frame import MAX_READ_DATA, address_bytes
from simulators.dlt645.meter import Dlt645Meter
from simulators.dlt645.server import Dlt645SerialLine, Dlt645TcpListener

Dlt645Listener = Dlt645SerialLine | Dlt645TcpListener


@dataclass(frozen=True, slots=True, kw_only=True)
class Dlt645MeterSpec:
    """One simulated meter: where it is, its address, how it behaves."""

    name: str
    url: str  # rtu:///path?baudrate=...&parity=..., rtu+tcp://host:port (port 0: any)
    address: str  # 12 digits
    seed: int = 0
    tariffs: int = 4
    max_data: int = MAX_READ_DATA  # answers longer than this go out as subsequent frames
    preamble: int = 4  # FEH bytes before each answer
    update_interval_s: float = 0.1
    tariff_at: Callable[[dt.datetime], int] | None = None  # TOU: tariff 1..4 at a clock time


class Dlt645SimSite:
    """Running DL/T 645 simulators: per-meter access and the lines behind them."""

    def __init__(self, meters: dict[str, Dlt645Meter], listeners: list[Dlt645Listener]) -> None:
        self.meters = meters
        self.listeners = listeners

    def meter(self, name: str) -> Dlt645Meter:
        """The simulated meter of that name (KeyError when there is none)."""
        return self.meters[name]


def _line_key(endpoint: LineEndpoint) -> tuple[str, str, int]:
    if endpoint.transport == "rtu":
        return (endpoint.transport, endpoint.path, 0)
    return (endpoint.transport, endpoint.host, endpoint.port)


def group_specs(
    specs: Sequence[Dlt645MeterSpec],
) -> dict[tuple[str, str, int], list[Dlt645MeterSpec]]:
    """Specs by line; raises ValueError for clashes a real site could not have."""
    names: set[str] = set()
    groups: dict[tuple[str, str, int], list[Dlt645MeterSpec]] = {}
    endpoints: dict[tuple[str, str, int], LineEndpoint] = {}
    for spec in specs:
        if spec.name in names:
            raise ValueError(f"two simulated meters are named {spec.name!r}")
        names.add(spec.name)
        endpoint = parse_endpoint(spec.url)
        key = _line_key(endpoint)
        first = endpoints.setdefault(key, endpoint)
        if first != endpoint:
            raise ValueError(f"{spec.name}: {spec.url} has other line settings than the others")
        group = groups.setdefault(key, [])
        wire = address_bytes(spec.address)
        if any(address_bytes(other.address) == wire for other in group):
            raise ValueError(f"{spec.name}: address {spec.address} is taken on {spec.url}")
        group.append(spec)
    return groups


@contextlib.asynccontextmanager
async def serve(
    specs: Sequence[Dlt645MeterSpec],
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], dt.datetime] = dt.datetime.now,
) -> AsyncIterator[Dlt645SimSite]:
    """Start every line; close them all on leaving the block."""
    groups = group_specs(specs)
    meters: dict[str, Dlt645Meter] = {}
    listeners: list[Dlt645Listener] = []
    async with contextlib.AsyncExitStack() as stack:
        for group in groups.values():
            endpoint = parse_endpoint(group[0].url)
            line_meters = [
                Dlt645Meter(
                    spec.name,
                    spec.address,
                    url=spec.url,
                    seed=spec.seed,
                    tariffs=spec.tariffs,
                    max_data=spec.max_data,
                    preamble=spec.preamble,
                    update_interval_s=spec.update_interval_s,
                    clock=clock,
                    wall=wall,
                    tariff_at=spec.tariff_at,
                )
                for spec in group
            ]
            listener: Dlt645Listener
            if endpoint.transport == "rtu":
                listener = Dlt645SerialLine(endpoint, line_meters)
            else:
                listener = Dlt645TcpListener(endpoint, line_meters)
            await listener.start()
            stack.push_async_callback(listener.close)
            listeners.append(listener)
            for meter in line_meters:
                if endpoint.transport != "rtu":
                    meter.url = listener.url
                meters[meter.name] = meter
        yield Dlt645SimSite(meters, listeners)


async def run_dlt645_simulators(
    specs: Sequence[Dlt645MeterSpec], *, ready: asyncio.Event | None = None
) -> None:
    """Serve the meters until cancelled; `ready` is set once every line is up."""
    async with serve(specs):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()

"""Run a site's worth of simulated Modbus devices; independent of `edge_agent`.

    specs (name, url, device_id, profile, ...)
        │ grouped by endpoint: devices with the same tcp://host:port, rtu+tcp://host:port
        │ or serial path share one listener / line and are told apart by device_id
        ▼
    TcpListener / RtuTcpListener / SerialLine  ──►  SimDevice (image, signals, faults)
                                                        ▲
    ControlServer (optional HTTP API)  ─────────────────┘
        └── also switches the faults of other simulators' devices handed in as `extra=`
            controls (OPC UA PLCs, DL/T 645 meters: see simulators/common/contract.py)

`run_simulators` runs until cancelled (the `edge-agent simulate` entry); `serve` is the
same as an `async with` block for tests:

    async with serve([SimDeviceSpec(name="m1", url="tcp://127.0.0.1:0", profile=p)]) as sim:
        url = sim.device("m1").url            # port 0 resolved to the bound port
        sim.device("m1").faults.set("slow", delay_s=0.5)

Leaving the block closes every listener, connection and serial port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from drivers.modbus.codec import Order
from drivers.modbus.config import Endpoint, ModbusProfile, parse_endpoint
from simulators.common.control import Control, ControlServer, LineControl, merged
from simulators.modbus.device import SimDevice
from simulators.modbus.server import RtuTcpListener, SerialLine, TcpListener

Listener = TcpListener | RtuTcpListener | SerialLine


@dataclass(frozen=True, slots=True, kw_only=True)
class SimDeviceSpec:
    """One simulated device: where it listens, which profile it serves, how it behaves."""

    name: str
    url: str  # tcp://host:port, rtu+tcp://host:port, rtu:///path?baudrate=...
    profile: ModbusProfile
    device_id: int = 1
    order: Order | None = None  # device-level override of the profile's default order
    seed: int = 0
    strict_gaps: bool = False  # a read spanning registers no point covers: exception 02
    input_as_holding: bool = False  # FC04 reads the holding image too (DTSU666 variants)
    update_interval_s: float = 0.1
    label: str = ""  # what `simulate` says it serves (the profile's name, or "inline")


def load_profile(path: str | Path) -> ModbusProfile:
    """Read and validate a profile YAML file (addresses may be hex: 0x2006)."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    try:
        return ModbusProfile.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class SimSite:
    """Running simulators: per-device access and the listeners behind them."""

    def __init__(self, devices: dict[str, SimDevice], listeners: list[Listener]) -> None:
        self.devices = devices
        self.listeners = listeners
        self.control: ControlServer | None = None

    def device(self, name: str) -> SimDevice:
        """The simulated device of that name (KeyError when there is none)."""
        return self.devices[name]

    def drop_connections(self) -> None:
        """Close every client TCP connection; listeners keep listening."""
        for listener in self.listeners:
            if isinstance(listener, TcpListener | RtuTcpListener):
                listener.drop_connections()


def _endpoint_key(endpoint: Endpoint) -> tuple[str, str, int]:
    if endpoint.transport == "rtu":
        return (endpoint.transport, endpoint.path, 0)
    # Port 0 groups too: every tcp://host:0 device shares one listener on a free port.
    return (endpoint.transport, endpoint.host, endpoint.port)


def _group(specs: Sequence[SimDeviceSpec]) -> dict[tuple[str, str, int], list[SimDeviceSpec]]:
    """Specs by listener; raises ValueError for clashes a real site could not have."""
    names: set[str] = set()
    groups: dict[tuple[str, str, int], list[SimDeviceSpec]] = {}
    endpoints: dict[tuple[str, str, int], Endpoint] = {}
    for spec in specs:
        if spec.name in names:
            raise ValueError(f"two simulated devices are named {spec.name!r}")
        names.add(spec.name)
        endpoint = parse_endpoint(spec.url)
        key = _endpoint_key(endpoint)
        first = endpoints.setdefault(key, endpoint)
        if first != endpoint:
            raise ValueError(f"{spec.name}: {spec.url} has other line settings than {first.path}")
        group = groups.setdefault(key, [])
        if any(other.device_id == spec.device_id for other in group):
            raise ValueError(f"{spec.name}: device_id {spec.device_id} is taken on {spec.url}")
        group.append(spec)
    return groups


@contextlib.asynccontextmanager
async def serve(
    specs: Sequence[SimDeviceSpec],
    *,
    control: tuple[str, int] | None = None,
    clock: Callable[[], float] = time.monotonic,
    extra: Mapping[str, Control] | None = None,
) -> AsyncIterator[SimSite]:
    """Start every listener (and the control API); close them all on leaving the block.

    `extra`: controls of other simulators running in this event loop (OPC UA PLCs, DL/T
    645 meters) that the control API switches too (names unique across all).
    """
    groups = _group(specs)
    devices: dict[str, SimDevice] = {}
    listeners: list[Listener] = []
    site = SimSite(devices, listeners)
    async with contextlib.AsyncExitStack() as stack:
        for group in groups.values():
            endpoint = parse_endpoint(group[0].url)
            by_id = {
                spec.device_id: SimDevice(
                    spec.name,
                    spec.profile,
                    device_id=spec.device_id,
                    url=spec.url,
                    order=spec.order,
                    seed=spec.seed,
                    strict_gaps=spec.strict_gaps,
                    input_as_holding=spec.input_as_holding,
                    update_interval_s=spec.update_interval_s,
                    clock=clock,
                )
                for spec in group
            }
            listener: Listener
            if endpoint.transport == "tcp":
                listener = TcpListener(endpoint, by_id)
            elif endpoint.transport == "rtu+tcp":
                listener = RtuTcpListener(endpoint, by_id)
            else:
                listener = SerialLine(endpoint, by_id)
            await listener.start()
            stack.push_async_callback(listener.close)
            listeners.append(listener)
            for device in by_id.values():
                if endpoint.transport != "rtu":
                    device.url = listener.url
                devices[device.name] = device
        if control is not None:
            modbus = {name: LineControl(d, "modbus") for name, d in devices.items()}
            server = ControlServer(merged(modbus, extra or {}), host=control[0], port=control[1])
            await server.start()
            stack.push_async_callback(server.close)
            site.control = server
        yield site


async def run_simulators(
    specs: Sequence[SimDeviceSpec],
    *,
    control: tuple[str, int] | None = None,
    ready: asyncio.Event | None = None,
    extra: Mapping[str, Control] | None = None,
) -> None:
    """Serve the devices until cancelled; `ready` is set once every listener is up.

    The control API also switches the faults of the `extra` simulators.
    """
    async with serve(specs, control=control, extra=extra):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()

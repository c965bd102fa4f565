"""A tiny HTTP/1.1 control API for running simulators (stdlib asyncio, loopback by default).

Every simulated device of a site, whatever it speaks, by its (site-unique) name:

    GET  /devices                 -> 200 [device, ...]
    GET  /devices/{name}          -> 200 the device object
    GET  /devices/{name}/values   -> 200 {"point": value, ...} as served right now
    PUT  /devices/{name}/fault    <- {"fault": NAME, ...its parameters}
                                  -> 200 the device object; 400 bad body, unknown fault or
                                     bad value (the answer names the allowed ones); 404
                                     unknown device; 409 a node that is deleted

    curl -X PUT -d '{"fault": "slow", "delay_s": 2}' http://127.0.0.1:8502/devices/meter1/fault
    curl -X PUT -d '{"fault": "stop"}' http://127.0.0.1:8502/devices/plc-1/fault

A device object has what its type tells, then "type", "available_faults" (the names PUT
takes) and "active_faults" (what is switched on now):

    modbus  name, url, device_id, profile, frozen, fault, delay_s, code, counters
    dlt645  name, url, address, frozen, fault, delay_s, code, counters
    opcua   name, url, namespace, listening, frozen, endpoints, sessions,
            bad {node: status}, deleted [node]

Faults and their parameters:

    modbus, dlt645  none, no_answer, slow (delay_s), exception (code), drop, corrupt,
                    intermittent (code): one at a time (delay_s and code are kept for
                    later); freeze / unfreeze hold the values still or let them move,
                    whatever the fault
    opcua           stop / start (listener and every session gone / back), restart,
                    freeze / unfreeze, bad_status (node, status: a Bad... or Uncertain...
                    name, default BadSensorFailure), delete_node (node), expire_sessions,
                    drop_subscriptions; a node is `s=Tank1.Temperature`, `i=1001` or
                    `nsu=URI;s=...` (the keys of /values)
    every type      none: every fault cleared; for opcua with "node" only that node's
                    (restored if deleted, Good again)

One request per connection (Connection: close); bodies up to 64 KiB. Fault switches run
one at a time, in the simulators' event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from drivers.opcua.nodeid import parse_node
from simulators.common.faults import FaultKind, Faults

if TYPE_CHECKING:  # the Modbus-only simulator does not import asyncua
    from simulators.opcua.server import OpcUaSim, SimNode

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 5.0
MAX_LISTED_NODES = 20  # an error answer names at most this many nodes

LINE_FAULTS: tuple[str, ...] = (*(k.value for k in FaultKind), "freeze", "unfreeze")
OPCUA_FAULTS: tuple[str, ...] = (
    "none",
    "stop",
    "start",
    "restart",
    "freeze",
    "unfreeze",
    "bad_status",
    "delete_node",
    "expire_sessions",
    "drop_subscriptions",
)
_OPCUA_KEYS: dict[str, tuple[str, ...]] = {
    "none": ("node",),
    "bad_status": ("node", "status"),
    "delete_node": ("node",),
}
DEFAULT_BAD_STATUS = "BadSensorFailure"
_STATUS_EXAMPLES = (
    "BadSensorFailure, BadCommunicationError, BadOutOfService, BadDeviceFailure, "
    "UncertainLastUsableValue"
)


class HttpError(Exception):
    """An error answer with a status and a message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class LineDevice(Protocol):
    """What a Modbus `SimDevice` and a DL/T 645 `Dlt645Meter` offer the control API."""

    name: str
    faults: Faults

    def status(self) -> dict[str, Any]: ...

    def served_values(self) -> Mapping[str, Any]: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    @property
    def frozen(self) -> bool: ...


class Control(Protocol):
    """One device as the API sees it."""

    kind: str
    available: tuple[str, ...]

    def status(self) -> dict[str, Any]: ...

    def values(self) -> Mapping[str, Any]: ...

    async def set_fault(self, fault: str, request: Mapping[str, Any]) -> None: ...


def _check_fault(name: str, kind: str, request: Any, allowed: Sequence[str]) -> str:
    """The fault a PUT body asks for; HttpError 400 naming the allowed ones otherwise."""
    if not isinstance(request, dict) or "fault" not in request:
        raise HttpError(HTTPStatus.BAD_REQUEST, 'body must be an object with "fault"')
    fault = request["fault"]
    if not isinstance(fault, str) or fault not in allowed:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"unknown fault {fault!r} for {kind} device {name}; allowed: {', '.join(allowed)}",
        )
    return fault


def _check_keys(fault: str, request: Mapping[str, Any], keys: Sequence[str]) -> None:
    unknown = set(request) - {"fault", *keys}
    if unknown:
        takes = ", ".join(("fault", *keys))
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"unknown keys: {', '.join(sorted(unknown))} ({fault} takes {takes})",
        )


class LineControl:
    """A Modbus device or a DL/T 645 meter: one request fault at a time, plus freeze."""

    available = LINE_FAULTS

    def __init__(self, device: LineDevice, kind: str) -> None:
        self.device = device
        self.kind = kind

    def status(self) -> dict[str, Any]:
        """The device's own summary, then type, available and active faults."""
        device = self.device
        active = [] if device.faults.kind is FaultKind.NONE else [device.faults.kind.value]
        if device.frozen:
            active.append("freeze")
        return {
            **device.status(),
            "type": self.kind,
            "available_faults": list(self.available),
            "active_faults": active,
        }

    def values(self) -> Mapping[str, Any]:
        """What a client reads right now."""
        return self.device.served_values()

    async def set_fault(self, fault: str, request: Mapping[str, Any]) -> None:
        """Switch a fault; HttpError 400 for bad keys or values."""
        device = self.device
        if fault in ("freeze", "unfreeze"):
            _check_keys(fault, request, ())
            if fault == "freeze":
                device.freeze()
            else:
                device.unfreeze()
            return
        _check_keys(fault, request, ("delay_s", "code"))
        try:
            device.faults.set(fault, delay_s=request.get("delay_s"), code=request.get("code"))
        except (ValueError, TypeError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        if fault == "none":
            device.unfreeze()


class OpcUaControl:
    """A simulated OPC UA PLC: listener, values, node status and sessions."""

    kind = "opcua"
    available = OPCUA_FAULTS

    def __init__(self, sim: OpcUaSim) -> None:
        self.sim = sim

    def status(self) -> dict[str, Any]:
        """The PLC's own summary, then type, available and active faults."""
        summary = self.sim.status()
        active = [
            fault
            for fault, on in (
                ("stop", not summary["listening"]),
                ("freeze", summary["frozen"]),
                ("bad_status", summary["bad"]),
                ("delete_node", summary["deleted"]),
            )
            if on
        ]
        return {
            **summary,
            "type": self.kind,
            "available_faults": list(self.available),
            "active_faults": active,
        }

    def values(self) -> Mapping[str, Any]:
        """What every node that exists serves now, by its `nsu=` key."""
        return self.sim.values()

    async def set_fault(self, fault: str, request: Mapping[str, Any]) -> None:
        """Switch a fault; HttpError 400 for bad keys or values, 409 for a deleted node."""
        _check_keys(fault, request, _OPCUA_KEYS.get(fault, ()))
        sim = self.sim
        if fault == "none":
            if "node" in request:
                key, node = self._node(fault, request)
                if node.deleted:
                    await sim.restore_node(key)
                elif node.status is not None:
                    await sim.set_status(key, None)
            else:
                await sim.reset()
        elif fault == "bad_status":
            key, node = self._node(fault, request)
            status = request.get("status", DEFAULT_BAD_STATUS)
            if not isinstance(status, str) or not status.startswith(("Bad", "Uncertain")):
                raise HttpError(HTTPStatus.BAD_REQUEST, _bad_status_message(status))
            if node.deleted:
                raise HttpError(
                    HTTPStatus.CONFLICT,
                    f"node {key} of {sim.name} is deleted; restore it first with "
                    f'{{"fault": "none", "node": "{key}"}}',
                )
            try:
                await sim.set_status(key, status)
            except ValueError as exc:
                raise HttpError(HTTPStatus.BAD_REQUEST, _bad_status_message(status)) from exc
        elif fault == "delete_node":
            key, node = self._node(fault, request)
            if not node.deleted:
                await sim.delete_node(key)
        elif fault == "stop":
            await sim.stop()
        elif fault == "start":
            await sim.start()
        elif fault == "restart":
            await sim.restart()
        elif fault in ("freeze", "unfreeze"):
            sim.freeze(fault == "freeze")
        elif fault == "expire_sessions":
            await sim.expire_sessions()
        else:
            assert fault == "drop_subscriptions"
            await sim.drop_subscriptions()

    def _node(self, fault: str, request: Mapping[str, Any]) -> tuple[str, SimNode]:
        sim = self.sim
        key = request.get("node")
        if not isinstance(key, str) or not key.strip():
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f'{fault} needs "node", e.g. "s=Tank1.Temperature"; '
                f"nodes of {sim.name}: {self._node_list()}",
            )
        try:
            parse_node(key)  # its own words for a malformed id, before the PLC's prefix
        except ValueError as exc:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"{exc}; nodes of {sim.name}: {self._node_list()}"
            ) from exc
        try:
            return key, sim.node(key)
        except (KeyError, ValueError) as exc:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"no node {key!r} on {sim.name}; nodes: {self._node_list()}",
            ) from exc

    def _node_list(self) -> str:
        keys = list(self.sim.nodes)
        listed = ", ".join(keys[:MAX_LISTED_NODES])
        if len(keys) > MAX_LISTED_NODES:
            listed += f", ... ({len(keys)} in all: GET /devices/{self.sim.name}/values)"
        return listed


def _bad_status_message(status: object) -> str:
    return (
        f"unknown status {status!r}: use an OPC UA status name that starts with Bad or "
        f"Uncertain, e.g. {_STATUS_EXAMPLES}"
    )


def merged(*groups: Mapping[str, Control]) -> dict[str, Control]:
    """The controls of several protocols' simulators; a name must be unique across them."""
    out: dict[str, Control] = {}
    for group in groups:
        for name, control in group.items():
            if name in out:
                raise ValueError(f"two simulated devices are named {name!r}")
            out[name] = control
    return out


class ControlServer:
    """Serves the control API for a site's simulated devices, of every protocol."""

    def __init__(
        self, controls: Mapping[str, Control], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._controls = dict(controls)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._switching = asyncio.Lock()  # one fault switch at a time

    @property
    def url(self) -> str:
        """Base URL, with the port actually bound."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (port 0: any free port, see `port`)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulator control API on %s", self.url)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def controls(self) -> dict[str, Control]:
        """Every device by name."""
        return dict(self._controls)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path, body = await _read_request(reader)
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                return
            # Outside the timeout: a fault switch is not cut off halfway through.
            status, payload = HTTPStatus.OK, await self.route(method, path, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except Exception as exc:
            log.exception("control API: %s", exc)
            status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(exc)}
        data = json.dumps(payload, default=_jsonable).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + data)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes) -> Any:
        """Answer one request: the JSON-ready payload, or raise HttpError."""
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if not parts or parts[0] != "devices":
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such resource: {path}")
        controls = self.controls()
        if len(parts) == 1:
            _allow(method, "GET")
            return [c.status() for c in controls.values()]
        control = controls.get(parts[1])
        if control is None:
            known = ", ".join(controls) or "none"
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such device: {parts[1]} (devices: {known})")
        if len(parts) == 2:
            _allow(method, "GET")
            return control.status()
        if len(parts) == 3 and parts[2] == "values":
            _allow(method, "GET")
            return control.values()
        if len(parts) == 3 and parts[2] == "fault":
            _allow(method, "PUT")
            request = _json_body(body)
            fault = _check_fault(parts[1], control.kind, request, control.available)
            async with self._switching:
                await control.set_fault(fault, request)
            return control.status()
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such resource: {path}")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from exc


def _jsonable(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = await reader.readline()
    try:
        method, target, _version = line.decode("ascii").split()
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad request line") from exc
    length = 0
    for _ in range(MAX_HEADERS):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from exc
    else:
        raise HttpError(HTTPStatus.BAD_REQUEST, "too many headers")
    if not 0 <= length <= MAX_BODY:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target, body

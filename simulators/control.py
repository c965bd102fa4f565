"""A tiny HTTP/1.1 control API for a running simulator (stdlib asyncio, loopback by default).

    GET  /devices                 -> 200 [{"name", "url", "device_id", "profile", "frozen",
                                           "fault", "delay_s", "code", "counters"}, ...]
    GET  /devices/{name}          -> 200 the same object for one device
    GET  /devices/{name}/values   -> 200 {"point": value, ...} as served right now
    PUT  /devices/{name}/fault    <- {"fault": "none"|"no_answer"|"slow"|"exception"|"drop"
                                      |"corrupt", "delay_s": 2.0, "code": 2}
                                  -> 200 the device object; 400 bad body; 404 unknown name

    curl -X PUT -d '{"fault": "slow", "delay_s": 2}' http://127.0.0.1:8502/devices/meter1/fault

One request per connection (Connection: close); bodies up to 64 KiB.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from simulators.modbus_device import SimDevice

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 5.0


class HttpError(Exception):
    """An error answer with a status and a message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """Serves the control API for a set of simulated devices."""

    def __init__(
        self, devices: Mapping[str, SimDevice], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.devices = devices
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                method, path, body = await _read_request(reader)
                status, payload = HTTPStatus.OK, self.route(method, path, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        data = json.dumps(payload).encode()
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

    def route(self, method: str, path: str, body: bytes) -> Any:
        """Answer one request: the JSON-ready payload, or raise HttpError."""
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if not parts or parts[0] != "devices":
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such resource: {path}")
        if len(parts) == 1:
            _allow(method, "GET")
            return [d.status() for d in self.devices.values()]
        device = self.devices.get(parts[1])
        if device is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such device: {parts[1]}")
        if len(parts) == 2:
            _allow(method, "GET")
            return device.status()
        if len(parts) == 3 and parts[2] == "values":
            _allow(method, "GET")
            return device.served_values()
        if len(parts) == 3 and parts[2] == "fault":
            _allow(method, "PUT")
            _set_fault(device, body)
            return device.status()
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such resource: {path}")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")


def _set_fault(device: SimDevice, body: bytes) -> None:
    try:
        request = json.loads(body or b"{}")
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from exc
    if not isinstance(request, dict) or "fault" not in request:
        raise HttpError(HTTPStatus.BAD_REQUEST, 'body must be an object with "fault"')
    unknown = set(request) - {"fault", "delay_s", "code"}
    if unknown:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"unknown keys: {', '.join(sorted(unknown))}")
    try:
        device.faults.set(
            request["fault"], delay_s=request.get("delay_s"), code=request.get("code")
        )
    except (ValueError, TypeError) as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from exc


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

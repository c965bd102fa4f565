"""The agent's HTTP port (`edge-agent run --http HOST:PORT`, default 127.0.0.1:9108).

    GET /             status page (HTML, polls /status.json)
    GET /status.json  devices, last values and quality, outbox, uplink, alarms
    GET /metrics      Prometheus text format
    GET /healthz      200 {"ok": true, ...} or 503 {"ok": false, "problems": [...]}

A small HTTP/1.1 server on asyncio streams: GET and HEAD only, one request per
connection, nothing that changes the agent, so read access to the port is all it grants.
It binds to loopback unless told otherwise. Every handler reads in-memory state and
returns at once, on the agent's loop, so what it shows is always consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from edge_agent.ops.health import HealthReport, UplinkClock, check_health
from edge_agent.ops.metrics import AgentMetrics
from edge_agent.ops.status_page import page_html, status_doc

if TYPE_CHECKING:
    from edge_agent.runtime.agent import Agent

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108  # the port commonly used by Prometheus exporters of this kind
REQUEST_LIMIT = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
JSON = "application/json"
# The classic text format: every Prometheus (and most scrapers) read it; our names need no
# escaping, so the body is the same as in the newer 1.0.0 format.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# The page is self-contained: it may talk to this server and nothing else.
PAGE_POLICY = (
    "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; img-src data:"
)


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[], Response | Awaitable[Response]]


class HttpServer:
    """Serves fixed routes; see the module docstring for what it accepts."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound (host, port), port 0 resolved. OSError if it cannot."""
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=REQUEST_LIMIT, reuse_address=True
        )
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def close(self) -> None:
        """Stop listening and drop open connections; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            method, target = _request_line(head)
            if method is None:
                response = _plain(HTTPStatus.BAD_REQUEST)
            elif method not in ("GET", "HEAD"):
                response = Response(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    b"GET or HEAD only\n",
                    headers=(("Allow", "GET, HEAD"),),
                )
            else:
                response = await self._route(target.split("?", 1)[0])
            writer.write(_encode(response, with_body=method != "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sends nothing useful gets nothing
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, path: str) -> Response:
        route = self.routes.get(path)
        if route is None:
            return _plain(HTTPStatus.NOT_FOUND)
        try:
            response = route()
            return await response if inspect.isawaitable(response) else response
        except Exception:
            log.exception("http: %s failed", path)
            return _plain(HTTPStatus.INTERNAL_SERVER_ERROR)


def _request_line(head: bytes) -> tuple[str | None, str]:
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
        return None, ""
    return parts[0], parts[1]


def _plain(status: HTTPStatus) -> Response:
    return Response(status, f"{status.value} {status.phrase}\n".encode())


def _encode(response: Response, *, with_body: bool) -> bytes:
    status = HTTPStatus(response.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
        *(f"{k}: {v}" for k, v in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


class AgentHttp:
    """The routes of one agent: its metrics, health and status page."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.uplink = UplinkClock(agent.sink)
        # Wraps the drivers now, before the pollers start, so the first poll is measured.
        self.metrics = AgentMetrics(agent, uplink_down_for=self.uplink.down_for)
        self.server = HttpServer(
            {
                "/": self._page,
                "/index.html": self._page,
                "/status.json": self._status,
                "/metrics": self._metrics,
                "/healthz": self._healthz,
            }
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen and follow the uplink; OSError when the address cannot be bound."""
        address = await self.server.start(host, port)
        self._tasks = [asyncio.create_task(self.uplink.run_watch(), name="http:uplink-watch")]
        # A config reload replaces the units of changed lines: their drivers are wrapped
        # before the new lines start (and on every scrape), not by a timer.
        self.agent.on_units_changed.append(self.metrics.instrument)
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        log.info("status page, /metrics and /healthz on http://%s:%d/", shown, address[1])
        return address

    async def close(self) -> None:
        """Stop serving; idempotent."""
        tasks, self._tasks = self._tasks, []
        with contextlib.suppress(ValueError):  # closed before it started
            self.agent.on_units_changed.remove(self.metrics.instrument)
        for task in tasks:
            task.cancel()
        await self.server.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def health(self) -> HealthReport:
        """The health verdict now."""
        return check_health(
            self.agent.loaded.site.health,
            uplink_down_s=self.uplink.down_for(),
            units=self.agent.units,
            now=asyncio.get_running_loop().time(),
            outbox=self.agent.outbox.stats,
        )

    def _page(self) -> Response:
        return Response(
            HTTPStatus.OK,
            page_html(),
            "text/html; charset=utf-8",
            headers=(("Content-Security-Policy", PAGE_POLICY),),
        )

    def _status(self) -> Response:
        return Response(
            HTTPStatus.OK, orjson.dumps(status_doc(self.agent, health=self.health())), JSON
        )

    async def _metrics(self) -> Response:
        self.metrics.instrument()  # on the loop: it may wrap drivers
        # Rendering 500 devices takes ~0.2 s of pure Python: in a thread, the pollers only
        # share the interpreter with it instead of waiting for it.
        body = await asyncio.to_thread(self.metrics.render)
        return Response(HTTPStatus.OK, body, PROMETHEUS_TEXT)

    def _healthz(self) -> Response:
        report = self.health()
        status = HTTPStatus.OK if report.ok else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(status, orjson.dumps(report.as_dict()), JSON)


@contextlib.asynccontextmanager
async def serving_http(agent: Agent, host: str, port: int) -> AsyncIterator[AgentHttp]:
    """Serve the agent's routes for the duration of the block (port 0: any free port)."""
    http = AgentHttp(agent)
    await http.start(host, port)
    try:
        yield http
    finally:
        await http.close()

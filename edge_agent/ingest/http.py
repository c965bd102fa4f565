"""The ingest worker's HTTP port (`edge-agent ingest FILE --http HOST:PORT`): GET /metrics.

Off by default: several workers may run on one host. The counters are the worker's own
(IngestStats, the dead letters by kind), in the Prometheus text format; see the README's
Ingest section.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

from prometheus_client import generate_latest

from edge_agent.ingest.service import Ingest
from edge_agent.ops.http_server import PROMETHEUS_TEXT, HttpServer, Response
from edge_agent.ops.metrics import ingest_registry

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def serving_ingest_metrics(ingest: Ingest, host: str, port: int) -> AsyncIterator[HttpServer]:
    """Serve /metrics for the block (port 0: any free port); OSError if it cannot bind."""
    registry = ingest_registry(ingest)

    def metrics() -> Response:
        return Response(HTTPStatus.OK, generate_latest(registry), PROMETHEUS_TEXT)

    server = HttpServer({"/metrics": metrics})
    address = await server.start(host, port)
    log.info("ingest /metrics on http://%s:%d/metrics", *address)
    try:
        yield server
    finally:
        await server.close()

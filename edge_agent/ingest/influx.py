"""The time-series store behind influxdb-client: line protocol to /api/v2/write.

InfluxDB 1.8+, 2.x and 3 and VictoriaMetrics accept the v2 write endpoint. One batch is one
request, precision ms, through influxdb-client's async client and its WriteService (the
library's /api/v2/write call). With `influx.gzip` the body is compressed here at level 1
and sent with `Content-Encoding: gzip`: the client's own gzip (`enable_gzip`) is fixed at
level 9, which measured ~3 µs of CPU per point against ~0.3 µs at level 1, for bodies
about a third larger. influxdb-client's and aiohttp's errors are translated here into
StoreUnavailable (connection errors, timeouts, 5xx, 429 with its Retry-After) and
StoreRejected (every other 4xx), so nothing above imports them.

TLS: influxdb-client's `verify_ssl` and `ssl_ca_cert` from `influx.verify_tls` and
`influx.ca_file` (edge_agent/ingest/influx_tls.py). A certificate the configured CAs do not trust
is StoreUnavailable, naming the problem: the ingest keeps retrying with the messages
unacknowledged, so a certificate fixed on the server side resumes the writes.

VictoriaMetrics: bucket and org are ignored; a line `edge,... value=1,quality=0i` becomes
the series `edge_value{...}` and `edge_quality{...}`; a sample written twice for the same
series and timestamp is kept twice unless VictoriaMetrics runs with
`-dedup.minScrapeInterval=1ms` (InfluxDB overwrites by itself).

Alarm transitions in a batch follow its readings as `{measurement}_alarm` lines
(edge_agent/ingest/alarms.py), then write audits as `{measurement}_command` lines
(edge_agent/ingest/audits.py).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.service.write_service import WriteService

from edge_agent.ingest.alarms import alarm_line
from edge_agent.ingest.audits import audit_line
from edge_agent.ingest.config import InfluxConfig
from edge_agent.ingest.influx_tls import (
    ca_cert,
    ca_file_error,
    certificate_problem,
    warn_unverified,
)
from edge_agent.ingest.schema import LineEncoder
from edge_agent.ingest.store import StoreBatch, StoreRejected, StoreUnavailable

logger = logging.getLogger(__name__)


class InfluxStore:
    """Writes batches through influxdb-client's async write API.

    `config.ca_file` is used as given: make_store resolves it against the site file.
    """

    def __init__(
        self,
        config: InfluxConfig,
        *,
        measurement: str = "edge",
        profiles: Mapping[tuple[str, str, str], str] | None = None,
    ) -> None:
        self.config = config
        self.encoder = LineEncoder(
            measurement, profiles=profiles, string_values=config.string_values
        )
        self._client: InfluxDBClientAsync | None = None
        self._service: WriteService | None = None
        self._warned = False  # verify_tls false: said once

    @property
    def description(self) -> str:
        """URL and bucket (the token is never shown)."""
        return f"{self.config.url} bucket {self.config.bucket}"

    async def open(self) -> None:
        """Create the HTTP client (aiohttp needs the running loop)."""
        if self._client is not None:
            return
        # An empty token sends no Authorization header (VictoriaMetrics without auth).
        config = self.config
        token = config.token.get_secret_value() if config.token else ""
        if not self._warned:
            self._warned = True
            warn_unverified(config.url, verify=config.verify_tls, logger=logger, user="the ingest")
        try:
            # The client builds its TLS context here: a CA file removed since the config
            # was checked fails at start, naming it.
            self._client = InfluxDBClientAsync(
                url=config.url,
                token=token,
                org=config.org,
                timeout=int(config.timeout_s * 1000),
                verify_ssl=config.verify_tls,
                ssl_ca_cert=ca_cert(config.ca_file),
            )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(ca_file_error(config.ca_file, exc)) from exc
        self._service = WriteService(self._client.api_client)  # type: ignore[no-untyped-call]

    def encode(self, batch: StoreBatch) -> bytes:
        """The batch as one line-protocol body (kept on the batch for retries)."""
        if isinstance(batch.encoded, bytes):
            return batch.encoded
        lines: list[str] = []
        encode = self.encoder.encode
        for message in batch.messages:
            encode(message, lines)
        measurement = self.encoder.measurement
        lines.extend(alarm_line(alarm, measurement) for alarm in batch.alarms)
        lines.extend(audit_line(audit, measurement) for audit in batch.audits)
        body = "\n".join(lines).encode()
        if self.config.gzip:
            body = gzip.compress(body, compresslevel=1)
        batch.encoded = body
        return body

    async def write(self, batch: StoreBatch) -> None:
        """One write request for the whole batch."""
        if self._service is None:
            await self.open()
        assert self._service is not None
        body = self.encode(batch)
        encoding = {"content_encoding": "gzip"} if self.config.gzip else {}
        try:
            await self._service.post_write_async(  # type: ignore[no-untyped-call]
                org=self.config.org,
                bucket=self.config.bucket,
                body=body,
                precision="ms",
                content_type="text/plain; charset=utf-8",
                **encoding,
            )
        except InfluxDBError as exc:
            raise _translated(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(_connection_reason(exc, self.config.ca_file)) from exc
        except TimeoutError as exc:
            raise StoreUnavailable(f"no answer within {self.config.timeout_s:g} s") from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        client, self._client, self._service = self._client, None, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]


def _translated(exc: InfluxDBError) -> StoreUnavailable | StoreRejected:
    status = getattr(exc, "status", None)
    message = _short(str(exc.message))
    if status is None:
        return StoreUnavailable(f"no answer: {message}")
    if status == 429 or status >= 500:
        return StoreUnavailable(
            f"HTTP {status}: {message}", retry_after_s=_retry_after(exc.retry_after)
        )
    return StoreRejected(f"HTTP {status}: {message}", status=status)


def _retry_after(value: object) -> float | None:
    try:
        return max(0.0, float(str(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _connection_reason(exc: BaseException, ca_file: Path | None = None) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        problem = exc.certificate_error
        why = certificate_problem(problem, ca_file) or f"not accepted: {_short(str(problem))}"
        return f"TLS certificate of {exc.host}:{exc.port} {why}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake with {exc.host}:{exc.port} failed: {_short(str(exc.os_error))}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_short(str(exc.os_error))}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str, limit: int = 200) -> str:
    text = text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."

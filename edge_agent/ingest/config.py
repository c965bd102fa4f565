"""The `influx:` and `ingest:` blocks of a site config: where the ingest service writes, and how.

    influx: {url: "http://127.0.0.1:8086", token: "${INFLUX_TOKEN}", org: plant, bucket: edge}
    ingest: {group: edge-ingest, store: data/edge.sqlite}

Over https the server's certificate is checked against the system's CAs, or against
`influx.ca_file` (a PEM bundle, relative to the site file) for a private CA or a
self-signed certificate; `influx.verify_tls: false` turns the check off (commissioning
only: logged as a warning at start). Both apply to the ingest and to `edge-agent report`.

With an `influx:` block the ingest writes through influxdb-client to the server's
/api/v2/write (InfluxDB 1.8+/2.x/3, VictoriaMetrics); without one it writes into the
embedded SQLite store at `ingest.store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from drivers.config_numbers import BackoffCap, Seconds, Tick, Timeout, Whole

# An MQTT shared-subscription group name: one topic level, no wildcards.
GROUP_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Measurement names become metric-name prefixes in VictoriaMetrics: keep them plain.
MEASUREMENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SITE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
TOPIC_PATTERN = r"^[^#+\s]+$"
# `site/gateway/device/point`, each level a name or a glob (`*`, `?`, `[...]`).
_LEVEL = r"[A-Za-z0-9_.*?\[\]!-]+"
ALLOW_PATTERN = rf"^{_LEVEL}(/{_LEVEL}){{3}}$"


class InfluxConfig(BaseModel):
    """A time-series server that speaks the InfluxDB v2 write API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    token: SecretStr | None = None  # through ${ENV}; InfluxDB 1.8 takes "user:password"
    org: Annotated[str, Field(min_length=1)]
    bucket: Annotated[str, Field(min_length=1)]
    gzip: bool = True
    timeout_s: Annotated[Timeout, Field(le=300.0)] = 10.0
    # InfluxDB keeps string fields; VictoriaMetrics stores them as 0, so they are off by default.
    string_values: bool = False
    # https: the CA bundle (PEM) that signed the server's certificate, relative to the site
    # file; None: the system's CAs. `edge-agent check` reports one missing or not PEM.
    ca_file: Path | None = None
    # False: no certificate or hostname check at all (commissioning only; warned at start).
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"influx URL must be http://host:port or https://..., got {url!r}")
        if parts.username or parts.password:
            raise ValueError("put credentials in influx.token (through ${ENV}), not the URL")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}") from exc
        return url

    def resolved(self, base: Path) -> InfluxConfig:
        """This block with `ca_file` made absolute against `base` (the site file's folder)."""
        if self.ca_file is None or self.ca_file.is_absolute():
            return self
        return self.model_copy(update={"ca_file": base.resolve() / self.ca_file})


class IngestConfig(BaseModel):
    """How the ingest service subscribes, batches and acknowledges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # With `shared: true`, workers with the same group share one MQTT v5 subscription
    # ($share/<group>/...).
    group: Annotated[str, Field(pattern=GROUP_PATTERN, max_length=64)] = "edge-ingest"
    # False: a plain subscription, one worker. Mosquitto 2.0.11 does not write shared
    # subscriptions to its persistence file: after a broker restart it drops what gateways
    # publish until a worker of the group subscribes again (their replayed backlog too).
    # A plain subscription is restored with the session, so nothing is lost.
    shared: bool = False
    # Stable per worker so the broker keeps its session across restarts; default
    # edge-ingest-{group}-{hostname}[-{worker}].
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # "3.1.1" for brokers without MQTT 5 (the demo's amqtt): a plain subscription, so one
    # worker only. A broker that refuses a v5 CONNECT properly gets 3.1.1 by itself.
    protocol: Literal["5", "3.1.1"] = "5"
    sites: tuple[Annotated[str, Field(pattern=SITE_PATTERN)], ...] | None = None  # None: all
    store: Path = Path("edge-data.sqlite")  # embedded store, relative to the config file
    measurement: Annotated[str, Field(pattern=MEASUREMENT_PATTERN)] = "edge"
    batch_size: Annotated[Whole, Field(ge=1, le=1_000_000)] = 5000  # points per write
    flush_interval_s: Annotated[Tick, Field(le=60.0)] = 0.2  # oldest point's max wait
    # Batches written at the same time; acknowledgements still go out in arrival order.
    write_concurrency: Annotated[Whole, Field(ge=1, le=16)] = 2
    # Messages received and not yet acknowledged (MQTT v5 Receive Maximum): the bound on
    # what a store outage holds back in memory; the broker queues the rest.
    max_inflight: Annotated[Whole, Field(ge=1, le=65535)] = 1000
    session_expiry_s: Annotated[Whole, Field(ge=0)] = 86400
    backoff_max_s: BackoffCap = 30.0  # store retry cap
    deadletter_topic: Annotated[str, Field(pattern=TOPIC_PATTERN)] | None = None
    max_future_s: Annotated[Seconds, Field(ge=0.0)] = 300.0  # later timestamps are rejected
    # Series are written only for this file's site, gateway, devices and points (and the
    # energy and alarm series they derive); `allow` adds `site/gateway/device/point`
    # patterns for gateways this file does not describe (ingest_series.py).
    allow: tuple[Annotated[str, Field(pattern=ALLOW_PATTERN, max_length=300)], ...] = ()
    # Larger messages are dead letters unread (`too_large`), and so are messages with more
    # points (in one poll of a batched message).
    max_message_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 4 * 1024 * 1024
    max_points_per_message: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # A compact data message whose device metadata has not arrived waits this long for
    # it (unacknowledged), then is read with the device's latest metadata if that lists
    # all its points, or goes to the dead letters as `no_metadata` (ingest/meta.py).
    meta_wait_s: Annotated[Seconds, Field(ge=0.0, le=600.0)] = 10.0

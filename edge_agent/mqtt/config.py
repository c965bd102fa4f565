"""The `mqtt:` block of a site config: broker URL, topic prefix, QoS, auth and TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from drivers.config_numbers import BackoffCap, Whole

# One or more topic levels ("factory", "cn/ahs/factory"): no wildcards, no empty level, and
# not starting with $ (reserved for broker topics such as $SYS).
TOPIC_PREFIX = r"^[^/#+\s$][^/#+\s]*(/[^/#+\s]+)*$"


class TlsConfig(BaseModel):
    """TLS settings; an empty block means: verify the broker against the system CAs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate, for brokers that require one
    key_file: Path | None = None
    insecure: bool = False  # skip hostname check; for commissioning only

    def resolved(self, base: Path) -> TlsConfig:
        """The same block with relative file paths made relative to `base` (the site's folder)."""
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return self.model_copy(update={k: base / v for k, v in files.items() if v is not None})


class MqttConfig(BaseModel):
    """Where and how readings are published."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "mqtt://127.0.0.1:1883"
    prefix: Annotated[str, Field(pattern=TOPIC_PREFIX)] = "factory"
    qos: Annotated[Whole, Field(ge=0, le=2)] = 1
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive_s: Annotated[Whole, Field(ge=5, le=3600)] = 30
    backoff_max_s: BackoffCap = 30.0
    max_inflight: Annotated[Whole, Field(ge=1, le=65535)] = 100
    max_queued: Annotated[Whole, Field(ge=0)] = 100_000  # messages held while offline
    # "5": MQTT 5, whose response topic and correlation data write requests may use.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # "compact": units and types once per device, retained on .../{device}/meta, and data
    # messages of values and non-good qualities only (pipeline/compact.py). "json": v1.
    payload: Literal["json", "compact"] = "json"

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        broker_address(url)
        return url

    @property
    def address(self) -> BrokerAddress:
        """Host, port and whether TLS is on, from the URL."""
        return broker_address(self.url)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A parsed broker URL."""

    host: str
    port: int
    tls: bool


def broker_address(url: str) -> BrokerAddress:
    """Parse mqtt://host[:1883] or mqtts://host[:8883]; ValueError names what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("put username and password in mqtt.username / mqtt.password, not the URL")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"MQTT URL takes only host and port, got {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    tls = scheme == "mqtts"
    return BrokerAddress(parts.hostname, port if port is not None else (8883 if tls else 1883), tls)

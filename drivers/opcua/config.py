"""Config models of the OPC UA driver: endpoint, security, device and point.

    - name: plc-1
      driver: opcua
      url: opc.tcp://127.0.0.1:4840
      security: {mode: SignAndEncrypt, policy: Basic256Sha256}   # or {mode: None}
      interval_s: 1.0
      points:
        - {name: tank_temp, node: "nsu=urn:plant:plc;s=Tank1.Temperature", mode: subscribe,
           deadband: {abs: 0.5}, unit: degC}
        - {name: pump_run, node: "nsu=urn:plant:plc;i=1002", mode: poll}
        - {name: flow_sp, node: "nsu=urn:plant:plc;s=Line2.FlowSetpoint", type: Double,
           write: {min: 0, max: 50}}

Every model is frozen and forbids unknown keys. Everything that can be told offline is
checked here (node id syntax, modes, deadband, security combinations), so `edge-agent
check` catches it before a gateway ever connects. Relative certificate paths are relative
to the site file; the loader makes them absolute with `OpcUaDevice.resolved`.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from drivers.config_numbers import BackoffCap, Number, PollInterval, Seconds, Timeout, Whole
from drivers.names import NAME_PATTERN
from drivers.opcua.fingerprint import normalise_fingerprint
from drivers.opcua.nodeid import BrowsePath, NodeRef, parse_node, parse_path
from drivers.opcua.write_types import BUILT_IN, WRITABLE, convert
from drivers.options.alarms import DeviceAlarms, PointAlarms
from drivers.options.energy import EnergyOptions
from drivers.options.report import BatchOptions, ReportOptions
from drivers.options.writes import WriteOptions

DEFAULT_PORT = 4840
MAX_QUEUE = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityMode(enum.StrEnum):
    """MessageSecurityMode of the secure channel."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class SecurityPolicy(enum.StrEnum):
    """Security policies asyncua 2.1 implements that are not deprecated by OPC 10000-7."""

    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128Sha256RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256Sha256RsaPss"


class AcquisitionMode(enum.StrEnum):
    """How a point's value is acquired."""

    SUBSCRIBE = "subscribe"  # monitored item: the server reports changes
    POLL = "poll"  # one batched Read per poll


def parse_url(url: str) -> tuple[str, int]:
    """Host and port of an `opc.tcp://host[:port][/path]` URL; raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "opc.tcp":
        raise ValueError(f"an OPC UA url starts with opc.tcp://, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("put username and password in the device's keys, not the URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r} (use 1-65535)") from exc
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if port == 0:
        raise ValueError(f"port 0 in {url!r}: give the server's port (OPC UA: 4840)")
    return parts.hostname, port if port is not None else DEFAULT_PORT


class OpcUaSecurity(_Model):
    """Secure channel settings; the defaults keep the certificates in pki/ beside the site file."""

    mode: SecurityMode = SecurityMode.NONE
    policy: SecurityPolicy | None = None  # Basic256Sha256 when mode is Sign or SignAndEncrypt
    cert_file: Path = Path("pki/own/cert.der")  # made on first use when missing
    key_file: Path = Path("pki/own/key.pem")  # made on first use, mode 0600
    trust_dir: Path = Path("pki/trusted")  # server certificates trusted
    rejected_dir: Path = Path("pki/rejected")  # where an untrusted server certificate is kept
    server_cert: Path | None = None  # pin: trust exactly this certificate file
    server_fingerprint: str | None = None  # pin: trust exactly this SHA-256 fingerprint

    @field_validator("server_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        return None if value is None else normalise_fingerprint(value)

    @model_validator(mode="after")
    def _combination(self) -> OpcUaSecurity:
        if self.mode is SecurityMode.NONE:
            given = [
                key
                for key in ("policy", "server_cert", "server_fingerprint")
                if getattr(self, key) is not None
            ]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(
                    f"{', '.join(given)} {verb} only with mode Sign or SignAndEncrypt, not None"
                )
        if self.server_cert is not None and self.server_fingerprint is not None:
            raise ValueError("pin the server by server_cert or server_fingerprint, not both")
        return self

    @property
    def effective_policy(self) -> SecurityPolicy | None:
        """The policy in force: None with mode None, Basic256Sha256 unless given."""
        if self.mode is SecurityMode.NONE:
            return None
        return self.policy or SecurityPolicy.BASIC256SHA256

    @property
    def pinned(self) -> bool:
        """True when the server is trusted by pin rather than by the trust directory."""
        return self.server_cert is not None or self.server_fingerprint is not None

    def resolved(self, base: Path) -> OpcUaSecurity:
        """The same settings with relative paths made absolute against `base`."""

        def absolute(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else base / p

        changes = {
            key: absolute(getattr(self, key))
            for key in ("cert_file", "key_file", "trust_dir", "rejected_dir", "server_cert")
            if getattr(self, key) is not None and not getattr(self, key).is_absolute()
        }
        return self.model_copy(update=changes)


class Deadband(_Model):
    """DataChangeFilter deadband: absolute (engineering units) or percent of the EURange."""

    abs: Annotated[Number, Field(ge=0.0)] | None = None
    percent: Annotated[Number, Field(ge=0.0, le=100.0)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Deadband:
        if (self.abs is None) == (self.percent is None):
            raise ValueError("a deadband is {abs: <value>} or {percent: <0..100>}, exactly one")
        return self


class OpcUaPoint(_Model):
    """One value of an OPC UA server."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    node: str | None = None  # nsu=URI;s=... / nsu=URI;i=...
    path: str | tuple[str, ...] | None = None  # browse path from Objects
    namespace: str | None = None  # for bare names in `path`
    mode: AcquisitionMode | None = None  # default: the device's
    sampling_interval_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] | None = None
    queue_size: Annotated[Whole, Field(ge=1, le=MAX_QUEUE)] | None = None
    deadband: Deadband | None = None
    scale: Number = 1.0
    offset: Number = 0.0
    decimals: Annotated[Whole, Field(ge=0, le=12)] | None = None
    unit: Annotated[str, Field(max_length=16)] | None = None
    description: str | None = None
    # The node's DataType as the config expects it (a built-in type name, e.g. Int32):
    # checked offline against `write:`, and against the server's on the first write.
    type: str | None = None
    # Read by the agent's stages (drivers/options/), never by the driver.
    energy: EnergyOptions | None = None
    alarms: PointAlarms = ()
    report: ReportOptions | None = None
    write: WriteOptions | None = None  # written with the node's DataType (write_types.py)

    @field_validator("node")
    @classmethod
    def _node_syntax(cls, node: str | None) -> str | None:
        if node is not None:
            parse_node(node)
        return node

    @field_validator("type")
    @classmethod
    def _built_in(cls, name: str | None) -> str | None:
        if name is not None and name not in BUILT_IN:
            known = {t.lower(): t for t in BUILT_IN}
            hint = known.get(name.lower().replace("_", ""))
            if hint is None:
                raise ValueError(
                    f"type {name!r} is not an OPC UA built-in type (Int32, Double, ...)"
                )
            raise ValueError(f"type {name!r}: did you mean {hint!r}?")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaPoint:
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of node (nsu=URI;s=...) or path (browse names)")
        if self.path is not None:
            # A bare name may take the device's namespace: the device checks that part.
            parse_path(self.path, self.namespace or "urn:device-namespace")
        elif self.namespace is not None:
            raise ValueError("namespace applies to path; a node id carries its own nsu=")
        if self.scale == 0:
            raise ValueError("scale 0 would erase every value")
        if self.write is not None:
            problem = self._write_problem(self.write)
            if problem is not None:
                raise ValueError(f"write: {problem}")
        return self

    def _write_problem(self, write: WriteOptions) -> str | None:
        if write.address is not None:
            return "address applies to register points; an OPC UA point is written at its node"
        if self.type is None:
            return None  # the node's DataType, read on the first write, decides
        if self.type not in WRITABLE:
            return f"a {self.type} node cannot be written (writable: {', '.join(WRITABLE)})"
        numeric = self.type not in ("Boolean", "String")
        if not numeric and (write.min is not None or write.max is not None):
            return f"min and max apply only to numbers, not {self.type}"
        for allowed in write.values or ():
            try:
                convert(self.type, allowed, name=self.name, scale=self.scale, offset=self.offset)
            except ValueError as exc:
                return f"values: {exc}"
        return None

    def target(self, device_namespace: str | None) -> NodeRef | BrowsePath:
        """The parsed node id or browse path."""
        if self.node is not None:
            return parse_node(self.node)
        assert self.path is not None
        return parse_path(self.path, self.namespace or device_namespace)


class OpcUaDevice(_Model):
    """An OPC UA server in a site config: where it is, how to secure it, which nodes to read."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    driver: Literal["opcua"]
    url: str
    interval_s: PollInterval = 1.0
    timeout_s: Annotated[Timeout, Field(le=60.0)] = 2.0
    backoff_max_s: BackoffCap = 30.0
    security: OpcUaSecurity = OpcUaSecurity()
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password: SecretStr | None = None  # through ${ENV}, never written in the file
    application_uri: Annotated[str, Field(min_length=1)] = "urn:edge-agent:client"
    namespace: str | None = None  # default namespace URI of bare browse names
    mode: AcquisitionMode = AcquisitionMode.POLL  # default of the points
    publishing_interval_s: Annotated[PollInterval, Field(le=3600.0)] | None = None  # interval_s
    sampling_interval_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] | None = None  # publishing
    queue_size: Annotated[Whole, Field(ge=1, le=MAX_QUEUE)] = 1
    keepalive_count: Annotated[Whole, Field(ge=1, le=1000)] = 5
    watchdog_intervals: Annotated[Whole, Field(ge=2, le=10_000)] | None = None  # 3 x keepalive
    session_timeout_s: Annotated[Seconds, Field(ge=1.0, le=86400.0)] = 60.0
    max_items_per_request: Annotated[Whole, Field(ge=1, le=100_000)] = 1000
    points: Annotated[tuple[OpcUaPoint, ...], Field(min_length=1)]
    report: ReportOptions | None = None  # default of the points (drivers/options/report.py)
    batch: BatchOptions | None = None  # several polls per data message (schema v2)
    alarms: DeviceAlarms = ()  # comm_loss and rules by point, as for Modbus devices
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parse_url(url)
        return url

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaDevice:
        problems: list[str] = []
        first: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.name in first:
                other = first[p.name]
                problems.append(
                    f"points[{i}]: duplicate point name {p.name!r} (see points[{other}])"
                )
            else:
                first[p.name] = i
            if p.path is not None and p.namespace is None:
                try:
                    parse_path(p.path, self.namespace)
                except ValueError as exc:
                    problems.append(f"points[{i}]: {exc}")
            mode = p.mode or self.mode
            if mode is AcquisitionMode.POLL:
                extra = [
                    k for k in ("deadband", "sampling_interval_s", "queue_size") if getattr(p, k)
                ]
                if extra:
                    problems.append(
                        f"points[{i}] {p.name!r}: {', '.join(extra)} apply only to mode subscribe"
                    )
        if (self.username is None) != (self.password is None):
            problems.append("give username and password together (password through ${ENV})")
        if self.username is not None and self.security.mode is SecurityMode.NONE:
            problems.append(
                "a password over security mode None would cross the network readable; "
                "use mode Sign or SignAndEncrypt"
            )
        if self.watchdog_intervals is not None and self.watchdog_intervals <= self.keepalive_count:
            problems.append(
                f"watchdog_intervals {self.watchdog_intervals} must exceed keepalive_count "
                f"{self.keepalive_count}: an idle subscription is silent that long by design"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def address(self) -> tuple[str, int]:
        """Host and port of the URL."""
        return parse_url(self.url)

    @property
    def publishing_s(self) -> float:
        """The subscription's publishing interval."""
        return self.publishing_interval_s or self.interval_s

    @property
    def watchdog_s(self) -> float:
        """Silence (no data, no keep-alive) after which the subscription is rebuilt."""
        intervals = self.watchdog_intervals or 3 * self.keepalive_count
        return intervals * self.publishing_s

    def point_mode(self, point: OpcUaPoint) -> AcquisitionMode:
        """A point's mode, with the device default applied."""
        return point.mode or self.mode

    def resolved(self, base: Path) -> OpcUaDevice:
        """The same device with relative certificate paths made absolute against `base`."""
        return self.model_copy(update={"security": self.security.resolved(base)})

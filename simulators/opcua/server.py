"""A simulated OPC UA PLC on the asyncua server, with security and fault switches.

    spec (url, namespace, seed, endpoints, users, trusted client certs, extra nodes)
        ▼
    asyncua Server ── Objects/PLC1/... (opcua_plc.py signals, updated every update_interval_s)
        ▲
    fault switches:  stop() / start() / restart()     listener and every session go away
                     freeze(True)                      values stop changing
                     set_status(node, "BadSensorFailure")   served with that status
                     delete_node(node) / restore_node(node)
                     expire_sessions()                 as a session timeout on the server
                     drop_subscriptions()              subscriptions vanish, sessions stay
    client writes:   answered like a PLC's OPC UA server (see _PlcAttributes): a read-only
                     node BadNotWritable, a node users may not write (or a user in
                     read_only_users) BadUserAccessDenied, a Variant of another type
                     BadTypeMismatch, a number outside the node's EURange BadOutOfRange,
                     a DataValue carrying timestamps BadWriteNotSupported; a value written
                     is kept (`setpoints`) and drives the process (Line2.Flow follows
                     Line2.FlowSetpoint while Pump2 runs); a config's own node that it
                     writes (`writable_nodes`) moves until written, then holds the value
    (the same switches over HTTP: `simulators.common.control`, PUT /devices/{name}/fault)

`serve_opcua` is an `async with` block for tests and `run_opcua_simulators` runs until
cancelled (`edge-agent simulate`):

    async with serve_opcua([OpcUaSimSpec(name="plc-1")]) as site:
        plc = site.device("plc-1")          # plc.url has the port actually bound
        plc.set_status("s=Tank1.Temperature", "BadSensorFailure")

`Server.init()` costs about a second; a stop/start keeps the initialised address space and
only replaces the listener, so a restart takes milliseconds. "Restart" drops every
connection and forgets every session and subscription, as a PLC reboot does. Deleting a
node first reports BadNodeIdUnknown to its monitored items (asyncua's own delete does not
reach them), as OPC 10000-4 expects of a server.

This module imports only asyncua and `drivers/` (certificates, node references).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import socket
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.server.binary_server_asyncio import BinaryServer
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.opcua.certificates import (
    CertificatePair,
    der_of,
    ensure_certificate,
    fingerprint,
    trusted_fingerprints,
)
from drivers.opcua.nodeid import NodeRef, parse_node
from simulators.opcua.plc import PLC_NAMESPACE, Sample, Signal, extra_signal, plc_signals

log = logging.getLogger(__name__)
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

_VARIANT = {
    "double": ua.VariantType.Double,
    "float": ua.VariantType.Float,
    "bool": ua.VariantType.Boolean,
    "int32": ua.VariantType.Int32,
    "string": ua.VariantType.String,
}
_POLICY_TYPES = {
    ("None", None): ua.SecurityPolicyType.NoSecurity,
    ("Sign", "Basic256Sha256"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("SignAndEncrypt", "Basic256Sha256"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Sign", "Aes128Sha256RsaOaep"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("SignAndEncrypt", "Aes128Sha256RsaOaep"): (
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt
    ),
    ("Sign", "Aes256Sha256RsaPss"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("SignAndEncrypt", "Aes256Sha256RsaPss"): (
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt
    ),
}
Endpoint = tuple[str, str | None]  # (mode, policy)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaSimSpec:
    """One simulated OPC UA PLC."""

    name: str
    url: str = "opc.tcp://127.0.0.1:0"  # port 0: a free port, see OpcUaSim.url
    namespace: str = PLC_NAMESPACE
    seed: int = 0
    endpoints: tuple[Endpoint, ...] = (("None", None),)
    users: Mapping[str, str] = field(default_factory=dict)  # username -> password
    read_only_users: frozenset[str] = frozenset()  # their writes: BadUserAccessDenied
    allow_anonymous: bool = True
    trusted_clients: tuple[Path, ...] | None = None  # certificate files or dirs; None: any
    pki_dir: Path | None = None  # server certificate and key (made when missing)
    extra_nodes: tuple[NodeRef, ...] = ()  # config nodes the PLC model lacks
    writable_nodes: tuple[NodeRef, ...] = ()  # of those, the ones a config writes: writable
    bulk_nodes: int = 0  # Objects/Bulk/B<i>, s=Bulk.<i>: many Doubles for benchmarks
    update_interval_s: float = 0.5


@dataclass(slots=True)
class SimNode:
    """A served variable: its node, its signal and what it serves right now."""

    node_id: ua.NodeId
    signal: Signal
    parent: Node
    value: object = None
    status: str | None = None  # a status name served instead of Good
    deleted: bool = False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _status(name: str | None) -> ua.StatusCode:
    code: Any = StatusCodes.Good if name is None else getattr(StatusCodes, name, None)
    if code is None:
        raise ValueError(f"unknown status name {name!r}")
    return ua.StatusCode(code)


def _refused(code: int) -> ua.StatusCode:
    value: Any = code  # ua.UInt32 is a NewType of int
    return ua.StatusCode(value)


def _nid(identifier: str | int, ns: int) -> ua.NodeId:
    # asyncua types Identifier and NamespaceIndex as NewTypes; plain values work.
    args: Any = (identifier, ns)
    return ua.NodeId(*args)


class _Users(UserManager):
    """Username/password check; anonymous only when allowed."""

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool) -> None:
        self.users = dict(users)
        self.allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if username in self.users and self.users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


_SERVER = User(role=UserRole.Admin)  # the server's own writes (asyncua's default)


class _PlcAttributes(AttributeService):
    """asyncua's attribute service with the checks a PLC's server makes on a client's Write
    (asyncua itself answers every refusal to a user BadUserAccessDenied, and takes
    timestamps a PLC would refuse)."""

    def __init__(self, aspace: AddressSpace, sim: OpcUaSim) -> None:
        super().__init__(aspace)
        self._sim = sim

    async def write(self, params: ua.WriteParameters, user: User = _SERVER) -> list[ua.StatusCode]:
        results: list[ua.StatusCode] = []
        for item in params.NodesToWrite:
            refusal = None if user.role is UserRole.Admin else self._refusal(item, user)
            if refusal is not None:
                results.append(_refused(refusal))
                continue
            (status,) = await super().write(ua.WriteParameters(NodesToWrite=[item]), user)
            if status.is_good() and user.role is not UserRole.Admin:
                await self._sim.written(item)
            results.append(status)
        return results

    def _refusal(self, item: ua.WriteValue, user: User) -> int | None:
        if item.AttributeId != AttributeIds.Value:
            return None  # asyncua refuses other attributes to users
        aspace = self._aspace
        levels = [
            aspace.read_attribute_value(item.NodeId, attribute)
            for attribute in (AttributeIds.AccessLevel, AttributeIds.UserAccessLevel)
        ]
        if any(dv.Value is None or not isinstance(dv.Value.Value, int) for dv in levels):
            return None  # not a variable, or no such node: asyncua answers
        access, user_access = (int(dv.Value.Value) for dv in levels if dv.Value is not None)
        if not ua.ua_binary.test_bit(access, ua.AccessLevel.CurrentWrite):
            return StatusCodes.BadNotWritable
        if (
            not ua.ua_binary.test_bit(user_access, ua.AccessLevel.CurrentWrite)
            or user.name in self._sim.read_only_users
        ):
            return StatusCodes.BadUserAccessDenied
        dv = item.Value
        if dv.SourceTimestamp is not None or dv.ServerTimestamp is not None:
            return StatusCodes.BadWriteNotSupported  # the PLC stamps its own values
        node = self._sim.by_node_id.get(item.NodeId)
        value = dv.Value.Value if dv.Value is not None else None
        if (
            node is not None
            and node.signal.eu_range is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            low, high = node.signal.eu_range
            if not low <= value <= high:
                return StatusCodes.BadOutOfRange
        return None


class OpcUaSim:
    """A running simulated PLC: its server, its nodes, its fault switches."""

    def __init__(self, spec: OpcUaSimSpec, *, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.name = spec.name
        self._clock = clock
        self._t0 = clock()
        parts = urlsplit(spec.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port if parts.port is not None else 4840
        if self.port == 0:
            self.port = _free_port(self.host)
        self.url = urlunsplit(("opc.tcp", f"{self.host}:{self.port}", parts.path or "/", "", ""))
        self.server = Server(user_manager=_Users(spec.users, spec.allow_anonymous))
        self.nodes: dict[str, SimNode] = {}
        self.by_node_id: dict[ua.NodeId, SimNode] = {}
        self.setpoints: dict[str | int, Sample] = {}  # what clients wrote, by identifier
        self.read_only_users = set(spec.read_only_users)  # a test may change who may write
        self.namespace_index = 0
        self.server_certificate: bytes | None = None
        self.certificate_file: Path | None = None
        self.frozen = False
        self.listening = False
        self._task: asyncio.Task[None] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # --- life -----------------------------------------------------------------------

    async def setup(self) -> None:
        """Initialise the server and its address space (the slow part, ~1 s), then listen."""
        spec = self.spec
        server = self.server
        await server.init()
        server.iserver.attribute_service = _PlcAttributes(server.iserver.aspace, self)
        server.set_endpoint(self.url)
        server.set_server_name(f"edge-agent simulated PLC {spec.name}")
        await server.set_application_uri(f"urn:edge-agent:sim:{spec.name}")
        policies = []
        for mode, policy in spec.endpoints:
            if (mode, policy) not in _POLICY_TYPES:
                raise ValueError(f"{spec.name}: no such endpoint {mode}/{policy}")
            policies.append(_POLICY_TYPES[(mode, policy)])
        server.set_security_policy(policies)
        ids = (["Anonymous"] if spec.allow_anonymous else []) + (["Username"] if spec.users else [])
        server.set_security_IDs(ids)
        if any(mode != "None" for mode, _ in spec.endpoints):
            await self._load_certificate(server)
        if spec.trusted_clients is not None:
            server.set_certificate_validator(self._validate_client)
        self.namespace_index = await server.register_namespace(spec.namespace)
        await self._build()
        self._t0 = self._clock()
        await self._write_all(force=True)
        await server.start()
        self.listening = True
        self._task = asyncio.create_task(self._run_updates(), name=f"opcua-sim:{spec.name}")
        log.info("simulating OPC UA PLC %s at %s", spec.name, self.url)

    async def close(self) -> None:
        """Stop updating and listening (server.stop() waits up to a second for its clock)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.listening:
            self.server.bserver = None  # already stopped by the stop() fault switch
        await self.server.stop()
        self.listening = False
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _load_certificate(self, server: Server) -> None:
        directory = self.spec.pki_dir
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="opcua-sim-")
            directory = Path(self._tmp.name)
        pair = CertificatePair(directory / "server.der", directory / "server.pem")
        await asyncio.to_thread(
            ensure_certificate,
            pair,
            f"urn:edge-agent:sim:{self.spec.name}",
            common_name=f"edge-agent simulated PLC {self.spec.name}",
            server=True,
        )
        self.server_certificate = pair.cert_file.read_bytes()
        self.certificate_file = pair.cert_file
        await server.load_certificate(str(pair.cert_file))
        await server.load_private_key(str(pair.key_file))

    async def _validate_client(
        self, cert: x509.Certificate, _app: ua.ApplicationDescription
    ) -> None:
        trusted: set[str] = set()
        for place in self.spec.trusted_clients or ():
            if place.is_dir():
                trusted |= trusted_fingerprints(place)
            elif place.is_file():
                trusted.add(fingerprint(der_of(place.read_bytes())))
        seen = fingerprint(cert.public_bytes(serialization.Encoding.DER))
        if seen not in trusted:
            log.warning("%s: rejected client certificate %s", self.name, seen)
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    async def _build(self) -> None:
        spec = self.spec
        idx = self.namespace_index
        objects = self.server.nodes.objects
        plc = await objects.add_object(_nid("PLC1", idx), ua.QualifiedName("PLC1", idx))
        folders: dict[str, Node] = {"": plc}
        signals = list(plc_signals(spec.seed, self.setpoints))
        known = {
            str(
                NodeRef(spec.namespace, "i" if isinstance(s.identifier, int) else "s", s.identifier)
            )
            for s in signals
        }
        extra: list[tuple[NodeRef, Signal]] = []
        for k, ref in enumerate(spec.extra_nodes):
            if ref.namespace_uri is None or str(ref) in known or ref.kind not in ("i", "s"):
                continue
            signal = extra_signal(ref.identifier, k)
            if ref in spec.writable_nodes:
                signal = dataclasses.replace(
                    signal, writable=True, pattern=_held(self.setpoints, signal)
                )
            extra.append((ref, signal))
            known.add(str(ref))
        for signal in signals:
            await self._add(folders, signal, idx, plc)
        for ref, signal in extra:
            assert ref.namespace_uri is not None
            ns = await self.server.register_namespace(ref.namespace_uri)
            await self._add(folders, signal, ns, plc, key=str(ref))
        if spec.bulk_nodes:
            bulk = await objects.add_object(_nid("Bulk", idx), ua.QualifiedName("Bulk", idx))
            # Groups of 500: asyncua's add_variable slows with the siblings it has.
            groups: dict[str, Node] = {}
            for i in range(spec.bulk_nodes):
                group = f"G{i // 500}"
                signal = Signal(group, f"B{i}", f"Bulk.{i}", "double", None, None, _bulk_pattern(i))
                await self._add(groups, signal, idx, bulk)

    async def _add(
        self,
        folders: dict[str, Node],
        signal: Signal,
        ns: int,
        plc: Node,
        *,
        key: str | None = None,
    ) -> None:
        parent = folders.get(signal.folder)
        if parent is None:
            parent = await plc.add_object(
                _nid(signal.folder, ns), ua.QualifiedName(signal.folder, ns)
            )
            folders[signal.folder] = parent
        node_id = _nid(signal.identifier, ns)
        node = await _add_variable(parent, node_id, signal, signal.pattern(0.0))
        await _add_eu_range(node, signal)
        await _set_access(node, signal)
        sim_node = SimNode(node_id, signal, parent)
        self.nodes[key or f"nsu={self.spec.namespace};{signal.node}"] = sim_node
        self.by_node_id[node_id] = sim_node

    # --- values ---------------------------------------------------------------------

    def t(self) -> float:
        """Seconds since the simulator started, on its clock."""
        return self._clock() - self._t0

    async def _run_updates(self) -> None:
        while True:
            await asyncio.sleep(self.spec.update_interval_s)
            if not self.frozen:
                await self._write_all()

    async def _write_all(self, *, force: bool = False) -> None:
        t = self.t()
        now = datetime.datetime.now(datetime.UTC)
        for node in self.nodes.values():
            if node.deleted:
                continue
            value = node.signal.pattern(t)
            if value == node.value and not force:
                continue
            await self._serve(node, value, now)

    async def _serve(
        self, node: SimNode, value: object, now: datetime.datetime | None = None
    ) -> None:
        stamp = now or datetime.datetime.now(datetime.UTC)
        node.value = value
        stamps: Any = {"SourceTimestamp": stamp, "ServerTimestamp": stamp}  # ua.DateTime: NewType
        dv = ua.DataValue(
            Value=_variant(node.signal, value),
            StatusCode=_status(node.status),
            **stamps,
        )
        await self.server.write_attribute_value(node.node_id, dv)

    def node(self, key: str) -> SimNode:
        """A node by `nsu=URI;s=...`, or `s=...` / `i=...` in the PLC namespace."""
        if not key.startswith("nsu="):
            key = f"nsu={self.spec.namespace};{key}"
        return self.nodes[str(parse_node(key))]

    def values(self) -> dict[str, object]:
        """What every live node serves now, by key."""
        return {k: n.value for k, n in self.nodes.items() if not n.deleted}

    async def write(self, key: str, value: object) -> None:
        """Serve `value` now (tests of deadband use it with the simulator frozen)."""
        await self._serve(self.node(key), value)

    async def written(self, item: ua.WriteValue) -> None:
        """A client wrote a value: keep it as the set-point and serve it with the PLC's
        own timestamps; the process reads it from the next update on."""
        node = self.by_node_id.get(item.NodeId)
        if node is None or node.deleted or item.Value.Value is None:
            return
        value = item.Value.Value.Value
        self.setpoints[node.signal.identifier] = value
        await self._serve(node, value)

    # --- fault switches -------------------------------------------------------------

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) the signal updates; values stay as they are."""
        self.frozen = frozen

    async def set_status(self, key: str, status: str | None) -> None:
        """Serve a node with this status (None: Good again), value kept."""
        node = self.node(key)
        _status(status)  # unknown names fail here, not in the update loop
        node.status = status
        await self._serve(node, node.value)

    async def delete_node(self, key: str) -> None:
        """Remove a node from the address space; monitored items get BadNodeIdUnknown."""
        node = self.node(key)
        node.status = "BadNodeIdUnknown"
        await self._serve(node, node.value)
        node.deleted = True
        with warnings.catch_warnings():
            # asyncua calls its async data-change callback without awaiting it on delete
            # (the BadNodeIdUnknown above is what reaches the clients instead).
            warnings.simplefilter("ignore", RuntimeWarning)
            # recursive: its EURange property goes with it, as on a PLC that drops the tag
            await self.server.delete_nodes([self.server.get_node(node.node_id)], recursive=True)

    async def restore_node(self, key: str) -> None:
        """Put a deleted node back, Good."""
        node = self.node(key)
        if not node.deleted:
            return
        added = await _add_variable(
            node.parent, node.node_id, node.signal, node.signal.pattern(self.t())
        )
        await _add_eu_range(added, node.signal)
        await _set_access(added, node.signal)
        node.deleted = False
        node.status = None
        await self._serve(node, node.signal.pattern(self.t()))

    async def expire_sessions(self) -> None:
        """Forget every client session and its subscriptions; connections stay open."""
        sessions = list(self.server.iserver._external_sessions.values())
        for session in sessions:
            await session.close_session(True)

    async def drop_subscriptions(self) -> None:
        """Delete every subscription on the server; sessions stay (a silent subscription)."""
        service = self.server.iserver.subscription_service
        await service.delete_subscriptions(list(service.subscriptions))

    async def stop(self) -> None:
        """Stop listening, drop every connection and forget every session (PLC off)."""
        if not self.listening:
            return
        self.listening = False
        bserver = self.server.bserver
        if bserver is not None:
            await bserver.stop()
        await self.expire_sessions()

    async def start(self) -> None:
        """Listen again on the same port (PLC on)."""
        if self.listening:
            return
        bserver = BinaryServer(self.server.iserver, self.host, self.port, self.server.limits)
        bserver.set_policies(self.server._policies)
        await bserver.start()
        self.server.bserver = bserver
        self.listening = True

    async def restart(self) -> None:
        """Stop, then start: every client has to connect and subscribe again."""
        await self.stop()
        await self.start()

    async def reset(self) -> None:
        """Clear every fault: listening, values moving, nodes back and Good, and the
        set-points clients wrote back at their initial values."""
        await self.start()
        self.frozen = False
        if self.setpoints:
            self.setpoints.clear()
            for node in self.nodes.values():
                if node.signal.writable and not node.deleted:
                    await self._serve(node, node.signal.pattern(self.t()))
        for key, node in self.nodes.items():
            if node.deleted:
                await self.restore_node(key)
            elif node.status is not None:
                node.status = None
                await self._serve(node, node.value)

    @property
    def sessions(self) -> int:
        """Client sessions the server holds now."""
        return len(self.server.iserver._external_sessions)

    def status(self) -> dict[str, Any]:
        """A summary for the CLI and the control API; a deleted node is not under `bad`."""
        return {
            "name": self.name,
            "url": self.url,
            "namespace": self.spec.namespace,
            "listening": self.listening,
            "frozen": self.frozen,
            "endpoints": [f"{m}/{p}" if p else m for m, p in self.spec.endpoints],
            "sessions": self.sessions,
            "bad": {k: n.status for k, n in self.nodes.items() if n.status and not n.deleted},
            "deleted": [k for k, n in self.nodes.items() if n.deleted],
        }


def _held(setpoints: dict[str | int, Sample], signal: Signal) -> Callable[[float], Sample]:
    """The signal's pattern until a client writes it, then what was written."""
    moving = signal.pattern
    return lambda t: setpoints.get(signal.identifier, moving(t))


def _variant(signal: Signal, value: object) -> ua.Variant:
    if isinstance(value, tuple):
        return ua.Variant(list(value), _VARIANT[signal.kind])
    return ua.Variant(value, _VARIANT[signal.kind])


async def _add_variable(parent: Node, node_id: ua.NodeId, signal: Signal, value: object) -> Node:
    datatype = None if signal.data_type is None else _nid(signal.data_type, 0)
    node = await parent.add_variable(
        node_id,
        ua.QualifiedName(signal.name, node_id.NamespaceIndex),
        _variant(signal, value),
        datatype=datatype,
    )
    if isinstance(value, tuple):
        await node.write_value_rank(1)  # one dimension
    return node


async def _add_eu_range(node: Node, signal: Signal) -> None:
    """The EURange property of an analog value (restored with its node, not only built)."""
    if signal.eu_range is not None:
        low, high = signal.eu_range
        await node.add_property(node.nodeid.NamespaceIndex, "EURange", ua.Range(low, high))


async def _set_access(node: Node, signal: Signal) -> None:
    if signal.writable:
        await node.set_writable()
        if not signal.user_writable:
            await node.unset_attr_bit(AttributeIds.UserAccessLevel, ua.AccessLevel.CurrentWrite)


def _bulk_pattern(i: int) -> Callable[[float], float]:
    return lambda t: float(i) + int(t * 10) % 1000 / 10.0


@dataclass(slots=True)
class OpcUaSite:
    """Running OPC UA simulators by name."""

    devices: dict[str, OpcUaSim]

    def device(self, name: str) -> OpcUaSim:
        """The simulator of that name (KeyError when there is none)."""
        return self.devices[name]


@contextlib.asynccontextmanager
async def serve_opcua(
    specs: Sequence[OpcUaSimSpec], *, clock: Callable[[], float] | None = None
) -> AsyncIterator[OpcUaSite]:
    """Start every simulated PLC (in parallel: init is slow); stop them on leaving the block."""
    loop = asyncio.get_running_loop()
    sims = {s.name: OpcUaSim(s, clock=clock or loop.time) for s in specs}
    if len(sims) != len(specs):
        raise ValueError("two simulated OPC UA servers have one name")
    started: list[OpcUaSim] = []
    try:
        results = await asyncio.gather(*(s.setup() for s in sims.values()), return_exceptions=True)
        for sim, result in zip(sims.values(), results, strict=True):
            if isinstance(result, BaseException):
                raise result
            started.append(sim)
        yield OpcUaSite(sims)
    finally:
        await asyncio.gather(*(s.close() for s in started), return_exceptions=True)


async def run_opcua_simulators(
    specs: Sequence[OpcUaSimSpec], *, ready: asyncio.Event | None = None
) -> None:
    """Serve until cancelled; `ready` is set once every server listens."""
    async with serve_opcua(specs):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()

"""OPC UA driver: one session per server, subscriptions feeding a cache, batched Reads.

This is the only module of the agent that imports asyncua; its exceptions stop here.

    read() ──► session open? ── no ──► _open(): security, connect, NamespaceArray,
       │                                resolve nodes (nsu= ids, browse paths),
       │                                subscription + monitored items
       ├─► watchdog: subscription silent too long? rebuild it
       ├─► subscribe points: copy of the cache the publish callback keeps current
       ├─► poll points: one Read (split at max_items_per_request) with both timestamps
       └─► Poll(device, read time, values, issues,        one message per device per poll
                point_ts: each value's SourceTimestamp)

Self-healing. A lost connection (the socket closes, a request times out, asyncua's probe
fails), a session the server no longer knows (restart, session timeout) or a failed
rebuild tears the session down and raises DeviceUnreachable; the poller publishes the
device down once and retries on the device's own ticks with capped, jittered exponential
backoff, and the next read() opens a new session with a new subscription and monitored
items. There is no second reconnect loop here (asyncua's own auto_reconnect stays off).
A subscription that stays silent for `watchdog_s` (no notification, no keep-alive) is
deleted and created again on the same session.

Writes (drivers/contract.py WritablePlugin). `write()` runs between two polls on the same
session: the node's DataType and ValueRank are read once per session (a supertype resolved
to its built-in type; an Enumeration is Int32), the value is converted to that type exactly
(write_types.py) or refused before anything is sent, and one Write carries a DataValue
holding only the Variant: no StatusCode, no timestamps, which many servers refuse
(BadWriteNotSupported). A bad result is the write's `failed` reason, the status name
(BadNotWritable, BadTypeMismatch, BadUserAccessDenied, BadOutOfRange); then the Value is
read back and returned, scaled as a poll would. No answer within the timeout: the session
is dropped, as for a read, and the write failed with "timeout".

Quality. Each value keeps the server's StatusCode (see quality.py): Good, Uncertain with
the status name, Bad with the status name and value None. A node that does not exist
(BadNodeIdUnknown), a browse path that matches nothing (BadNoMatch) or a monitored item
the server refuses is bad on its own; the other points keep flowing.

Timestamps. `Poll.ts_ns` is the read time, when read() assembled the answer, as for
Modbus (the v1 payload's `ts_ms`). The server's source and server timestamps of every
point are kept in `OpcUaDriver.timestamps` (ns since the epoch, None when the server sent
none). A value's SourceTimestamp goes into `Poll.point_ts` in the poll that first holds
that value (a new SourceTimestamp), so the payload carries the time the PLC stamped it (a
point's own `ts_ms`, where it differs from the read time); a value that stays the same goes
up again at the read time, as before, so the stores keep a sample per poll of it and a
point back from BAD with the value it had is not stored behind its BAD sample. OPC UA Part 4
(DataValue) makes SourceTimestamp the time of the value and ServerTimestamp the time the
server received it or last knew it to be current (on a Read often the time of the Read
itself), so there is no fall back to ServerTimestamp: a value without a SourceTimestamp
takes the read time, as before. A BAD point has no time. A source time before 2000-01-01
(a PLC whose clock was never set; OPC UA's "no time" is 1601-01-01) or more than
SOURCE_AHEAD_MAX_S ahead of this gateway's clock is not published either (the point takes
the read time; logged once per device): the ingest rejects a message with such a time,
and one wrong clock must not cost the device's readings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import math
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography.hazmat.primitives import serialization

from drivers.contract import WriteFailed, WriteRefused
from drivers.opcua.certificates import (
    CertificatePair,
    der_of,
    ensure_certificate,
    fingerprint,
    keep_rejected,
    trusted_fingerprints,
)
from drivers.opcua.config import (
    AcquisitionMode,
    OpcUaDevice,
    OpcUaPoint,
    SecurityMode,
    SecurityPolicy,
)
from drivers.opcua.nodeid import BrowsePath, NodeRef, parse_node
from drivers.opcua.plan import PlannedPoint, build_points
from drivers.opcua.quality import Issue, plain_value, quality_of, scaled
from drivers.opcua.write_types import convert, type_name
from drivers.reading import DeviceUnreachable, PointSpec, Poll, Quality, Value

log = logging.getLogger(__name__)

# asyncua logs every lost connection, failed publish and closed session, several times
# and at ERROR; the driver reports device trouble itself, once per state change.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

WAITING = (Quality.BAD, "BadWaitingForInitialData")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Source times outside [2000-01-01, now + SOURCE_AHEAD_MAX_S] are a wrong clock, not data
# (the ingest's own bounds are 2000-01-01 and its max_future_s, 300 s by default).
SOURCE_MIN_NS = 946_684_800 * 10**9
SOURCE_AHEAD_MAX_S = 60.0

_POLICIES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    SecurityMode.NONE: ua.MessageSecurityMode.None_,
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
# Service results that mean the session or channel is gone, not that the values are bad.
_SESSION_LOST = {
    "BadSessionIdInvalid",
    "BadSessionClosed",
    "BadSessionNotActivated",
    "BadSecureChannelIdInvalid",
    "BadSecureChannelClosed",
    "BadSecureChannelTokenUnknown",
    "BadConnectionClosed",
    "BadServerHalted",
    "BadShutdown",
    "BadCommunicationError",
    "BadNotConnected",
    "BadServerNotConnected",
    "BadTcpSecureChannelUnknown",
    "BadTimeout",
    "BadRequestTimeout",
}


def status_name(code: int) -> str:
    """The name of a StatusCode, e.g. 'BadNodeIdUnknown'."""
    return ua.status_codes.get_name_and_doc(code)[0]


def _ns(stamp: datetime.datetime | None) -> int | None:
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # asyncua decodes UtcTime naive in some paths
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return (stamp - EPOCH) // datetime.timedelta(microseconds=1) * 1000


def _reason(exc: BaseException) -> str:
    """A device-down reason for an exception from asyncua or the socket."""
    if isinstance(exc, UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError | ConnectionError):
        return "connection lost"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _connect_reason(exc: BaseException) -> str:
    """`_reason`, but for asyncua's bare AssertionError in open_secure_channel: a server may
    answer OpenSecureChannel with a ServiceFault (OPC 10000-6 §6.7.4; node-opcua refuses an
    untrusted client certificate so, with BadSecurityChecksFailed), which asyncua 2.1 cannot
    decode, so the status it carried is lost."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if (
        isinstance(exc, AssertionError)
        and tb
        and tb.tb_frame.f_code.co_name == "open_secure_channel"
    ):
        return "secure channel refused by the server (is this gateway's certificate trusted there?)"
    return _reason(exc)


@dataclass(slots=True)
class DriverStats:
    """Counters of one driver, for tests, the bench and a future metrics endpoint."""

    sessions: int = 0  # sessions opened
    subscriptions: int = 0  # subscriptions created (first one and rebuilds)
    watchdog_rebuilds: int = 0  # rebuilt because the subscription went silent
    notifications: int = 0  # data changes received
    reads: int = 0  # Read requests sent


@dataclass(slots=True)
class _Session:
    """What one connection owns; thrown away whole when it breaks."""

    client: Client
    generation: int
    subscription_id: int | None = None
    last_publish: float = 0.0
    sub_status: str | None = None  # a Bad StatusChangeNotification of the subscription
    got_data: asyncio.Event = field(default_factory=asyncio.Event)
    read_params: list[ua.ReadParameters] = field(default_factory=list)
    read_index: list[list[int]] = field(default_factory=list)  # point index per ReadValueId
    node_ids: dict[int, ua.NodeId] = field(default_factory=dict)
    # point index -> (built-in type name, ValueRank) of the node, read on its first write
    write_types: dict[int, tuple[str, int]] = field(default_factory=dict)


class OpcUaDriver:
    """One OPC UA server: a session, a subscription for subscribe points, Reads for the rest."""

    protocol = "opcua"

    def __init__(self, device: OpcUaDevice) -> None:
        self.name = device.name
        self.device = device
        self.planned = build_points(device)
        self.points: tuple[PointSpec, ...] = tuple(PointSpec(p.name, p.unit) for p in device.points)
        self.subscribed = [p for p in self.planned if p.mode is AcquisitionMode.SUBSCRIBE]
        self.polled = [p for p in self.planned if p.mode is AcquisitionMode.POLL]
        n = len(self.points)
        # The cache of subscribed values: the publish callback writes, read() copies.
        self._values: list[Value] = [None] * n
        self._issues: dict[int, Issue] = {p.index: WAITING for p in self.subscribed}
        # Source and server timestamps (ns) of the latest value of every point.
        self.timestamps: list[tuple[int | None, int | None]] = [(None, None)] * n
        self._fixed: dict[int, Issue] = {}  # points that could not be resolved this session
        self._session: _Session | None = None
        self._generation = 0
        self._silent_logged = False
        self._clock_logged = False  # a source time outside the plausible range: said once
        # The SourceTimestamp each point's value had at the last poll: a value instance
        # goes up with its own time once, in the poll that first holds it.
        self._seen_source: list[int | None] = [None] * n
        self.stats = DriverStats()

    # --- the poller's interface -----------------------------------------------------

    async def read(self) -> Poll:
        """One poll: the subscription cache plus one batched Read of the poll points."""
        session = await self._live_session()
        if session.subscription_id is not None and self.subscribed:
            await self._watch(session)
        values = self._values.copy()
        issues = dict(self._issues)
        if self.polled:
            await self._read_polled(session, values, issues)
        issues.update(self._fixed)
        for i in self._fixed:
            values[i] = None
        now_ns = time.time_ns()
        return Poll(
            self.name, now_ns, self.points, values, issues, self._source_times(issues, now_ns)
        )

    async def close(self) -> None:
        """Close the session; idempotent."""
        await self._teardown(graceful=True)

    async def _live_session(self) -> _Session:
        session = self._session
        if session is None:
            return await self._open()
        lost = self._lost_reason(session)
        if lost is not None:
            await self._teardown()
            raise DeviceUnreachable(self.name, lost)
        return session

    # --- writes ---------------------------------------------------------------------

    def writable(self, name: str) -> tuple[OpcUaPoint, PlannedPoint]:
        """The point of that name if the config made it writable; WriteRefused otherwise."""
        for point, planned in zip(self.device.points, self.planned, strict=True):
            if point.name == name:
                if point.write is None:
                    raise WriteRefused("not_writable", f"{name!r} has no write: in the config")
                return point, planned
        raise WriteRefused("unknown_point", f"no point {name!r}")

    def check_write(self, name: str, value: Value) -> None:
        """What can be told without the server: writable, and the declared type's range."""
        point, planned = self.writable(name)
        if point.type is not None:
            convert(point.type, value, name=name, scale=planned.scale, offset=planned.offset)

    async def write(self, name: str, value: Value) -> Value:
        """Write one point (engineering units; the scale undone) and read it back."""
        self.check_write(name, value)
        point, planned = self.writable(name)
        session = await self._live_session()
        node_id = session.node_ids.get(planned.index)
        if node_id is None:
            _quality, why = self._fixed.get(planned.index, (Quality.BAD, "BadNodeIdUnknown"))
            raise WriteFailed(f"node not resolved: {why}")
        try:
            async with asyncio.timeout(self.device.timeout_s * 2):
                data_type = await self._write_type(session, point, planned.index, node_id)
                raw = convert(
                    data_type, value, name=name, scale=planned.scale, offset=planned.offset
                )
                status = await self._write_value(session, node_id, data_type, raw)
                if status is not None:
                    raise WriteFailed(status)
                dvs = await session.client.uaclient.read(
                    ua.ReadParameters(
                        MaxAge=0,
                        TimestampsToReturn=ua.TimestampsToReturn.Neither,
                        NodesToRead=[
                            ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value)
                        ],
                    )
                )
        except UaStatusCodeError as exc:  # the service as a whole was refused
            reason = status_name(exc.code)
            if reason in _SESSION_LOST:
                await self._teardown()
                raise DeviceUnreachable(self.name, f"session lost ({reason})") from exc
            raise WriteFailed(reason) from exc
        except (TimeoutError, OSError, ConnectionError, UaError) as exc:
            await self._teardown()
            raise DeviceUnreachable(self.name, _reason(exc)) from exc
        return self._read_back(dvs[0], planned)

    async def _write_type(
        self, session: _Session, point: OpcUaPoint, index: int, node_id: ua.NodeId
    ) -> str:
        """The built-in type a write to the node takes (DataType and ValueRank are read once
        per session); WriteRefused for arrays, types that are not written, and a node whose
        type the config misnames."""
        known = session.write_types.get(index)
        if known is None:
            dvs = await session.client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[
                        ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.DataType),
                        ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.ValueRank),
                    ]
                )
            )
            for dv in dvs:
                code = dv.StatusCode.value if dv.StatusCode is not None else 0
                if quality_of(code, status_name) is not None:
                    raise WriteFailed(f"its DataType cannot be read: {status_name(code)}")
            data_type = dvs[0].Value.Value if dvs[0].Value is not None else None
            rank = dvs[1].Value.Value if dvs[1].Value is not None else None
            if not isinstance(data_type, ua.NodeId):
                raise WriteFailed("its DataType cannot be read: no NodeId")
            known = (
                await self._built_in(session, data_type),
                rank if isinstance(rank, int) else -1,
            )
            session.write_types[index] = known
        name, rank = known
        if rank >= 0:  # OneOrMoreDimensions or n dimensions; -1 scalar, -2 any, -3 either
            raise WriteRefused(
                "wrong_type", f"{point.name} is an array node: arrays are not written"
            )
        if name in ("BaseDataType", "Number", "Integer", "UInteger"):
            if point.type is None:
                raise WriteRefused(
                    "wrong_type",
                    f"{point.name} takes any {name}: give the point a type: in the config",
                )
            return point.type
        if point.type is not None and point.type != name:
            raise WriteRefused(
                "wrong_type", f"the config says {point.name} is {point.type}, the node is {name}"
            )
        return name

    async def _built_in(self, session: _Session, data_type: ua.NodeId) -> str:
        """The built-in type a DataType is encoded as (its own, or its supertype's)."""
        if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int):
            built_in = type_name(data_type.Identifier)
            if built_in is not None:
                return built_in
        variant = await data_type_to_variant_type(session.client.get_node(data_type))
        if variant is ua.VariantType.Variant:
            return "BaseDataType"  # abstract (Number, Integer, ...): the config must tell
        built_in = type_name(variant.value)
        return built_in or variant.name

    async def _write_value(
        self, session: _Session, node_id: ua.NodeId, data_type: str, raw: bool | int | float | str
    ) -> str | None:
        """One Write of the Value; None when Good, else the status name."""
        # The Variant only: StatusCode None and no timestamps, so the DataValue's encoding
        # mask carries the value alone (asyncua's write_value adds a SourceTimestamp).
        variant = ua.Variant(raw, ua.VariantType[data_type])
        nothing: Any = None  # ua.StatusCode's field is typed non-optional
        dv = ua.DataValue(Value=variant, StatusCode=nothing)
        results = await session.client.uaclient.write(
            ua.WriteParameters(
                NodesToWrite=[
                    ua.WriteValue(NodeId=node_id, AttributeId=AttributeIds.Value, Value=dv)
                ]
            )
        )
        code = results[0].value
        return None if quality_of(code, status_name) is None else status_name(code)

    def _read_back(self, dv: ua.DataValue, planned: PlannedPoint) -> Value:
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        issue = quality_of(code, status_name) if code else None
        if issue is not None and issue[0] is Quality.BAD:
            raise WriteFailed(f"written, but the read-back failed: {issue[1]}")
        value, why = plain_value(dv.Value.Value if dv.Value is not None else None)
        if why is not None:
            raise WriteFailed(f"written, but the read-back failed: {why}")
        return scaled(value, planned.scale, planned.offset, planned.decimals)

    def _source_times(self, issues: dict[int, Issue], now_ns: int) -> dict[int, int] | None:
        """The SourceTimestamp (ns) of each value this poll is the first to hold; not for
        BAD points nor implausible times. A value that stays the same goes up again at
        the read time, so the stores keep getting samples of it, and a point back from
        BAD with the value it had (same SourceTimestamp) is stored after its BAD sample."""
        latest = now_ns + int(SOURCE_AHEAD_MAX_S * 1e9)
        seen = self._seen_source
        stamps: dict[int, int] = {}
        for i, (source, _server) in enumerate(self.timestamps):
            if source is None or source == seen[i]:
                continue
            issue = issues.get(i)
            if issue is not None and issue[0] is Quality.BAD:
                continue  # a BAD value's time is never published nor remembered
            seen[i] = source
            if SOURCE_MIN_NS <= source <= latest:
                stamps[i] = source
            elif not self._clock_logged:
                self._clock_logged = True
                shown = (EPOCH + datetime.timedelta(microseconds=source // 1000)).isoformat()
                log.warning(
                    "%s: point %s has source time %s (%s); its values are published at the "
                    "read time instead (is the PLC's clock set?)",
                    self.name,
                    self.points[i].name,
                    shown,
                    "before 2000" if source < SOURCE_MIN_NS else "ahead of this gateway's clock",
                )
        return stamps or None

    # --- session life ---------------------------------------------------------------

    def _lost_reason(self, session: _Session) -> str | None:
        state = session.client.uaclient.state
        if state is not UaClientState.CONNECTED:
            return "connection lost"
        return None

    async def _open(self) -> _Session:
        device = self.device
        self._generation += 1
        # asyncua probes the server every watchdog interval and calls the connection lost
        # when a probe takes longer than that; a busy server must not look dead, and
        # request timeouts and the subscription watchdog already catch a silent one.
        probe_s = max(2 * device.timeout_s, device.interval_s, 5.0)
        client = Client(device.url, timeout=device.timeout_s, watchdog_intervall=probe_s)
        client.application_uri = device.application_uri
        client.name = client.description = f"edge-agent {device.name}"
        client.session_timeout = int(device.session_timeout_s * 1000)
        if device.username is not None and device.password is not None:
            client.set_user(device.username)
            client.set_password(device.password.get_secret_value())
        session = _Session(client, self._generation)
        try:
            async with asyncio.timeout(device.timeout_s * 4):
                if device.security.mode is not SecurityMode.NONE:
                    await self._secure(client)
                await client.connect()
        except DeviceUnreachable:
            await self._discard(client)
            raise
        except Exception as exc:  # asyncua raises many kinds; all mean "not connected"
            await self._discard(client)
            raise DeviceUnreachable(self.name, _connect_reason(exc)) from exc
        self._session = session
        self.stats.sessions += 1
        try:
            async with asyncio.timeout(device.timeout_s * 4):
                await self._resolve(session)
                if self.subscribed:
                    await self._subscribe(session)
        except Exception as exc:
            await self._teardown()
            reason = exc.reason if isinstance(exc, DeviceUnreachable) else _reason(exc)
            raise DeviceUnreachable(self.name, reason) from exc
        if self.subscribed and session.subscription_id is not None:
            # The first poll of a new session carries values, not "waiting for data".
            try:
                async with asyncio.timeout(device.publishing_s * 2 + device.timeout_s):
                    await session.got_data.wait()
            except TimeoutError:
                pass
        return session

    async def _secure(self, client: Client) -> None:
        sec = self.device.security
        policy = sec.effective_policy
        assert policy is not None
        pair = CertificatePair(sec.cert_file, sec.key_file)
        made = await asyncio.to_thread(
            ensure_certificate,
            pair,
            self.device.application_uri,
            common_name=f"edge-agent@{socket.gethostname()}",
        )
        if made:
            log.warning("%s: made a client certificate %s (key 0600)", self.name, sec.cert_file)
        if sec.server_cert is not None:
            server_der = der_of(sec.server_cert.read_bytes())
        else:
            server_der = await self._fetch_server_certificate(client, policy)
            seen = fingerprint(server_der)
            if sec.server_fingerprint is not None:
                if seen != sec.server_fingerprint:
                    raise DeviceUnreachable(
                        self.name, f"server certificate {seen} is not the pinned fingerprint"
                    )
            elif seen not in trusted_fingerprints(sec.trust_dir):
                kept = keep_rejected(sec.rejected_dir, server_der)
                raise DeviceUnreachable(
                    self.name,
                    f"server certificate not trusted (sha256 {seen[:23]}...); "
                    f"saved as {kept}, move it to {sec.trust_dir}/ to trust it",
                )
        await client.set_security(
            _POLICIES[policy],
            certificate=str(sec.cert_file),
            private_key=str(sec.key_file),
            server_certificate=server_der,
            mode=_MODES[sec.mode],
        )

    async def _fetch_server_certificate(self, client: Client, policy: SecurityPolicy) -> bytes:
        endpoints = await client.connect_and_get_server_endpoints()
        mode = _MODES[self.device.security.mode]
        uri = _POLICIES[policy].URI
        for ep in endpoints:
            if ep.SecurityMode == mode and ep.SecurityPolicyUri == uri and ep.ServerCertificate:
                cert = uacrypto.x509_from_der(ep.ServerCertificate)  # type: ignore[no-untyped-call]
                return bytes(cert.public_bytes(serialization.Encoding.DER))
        offered = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise DeviceUnreachable(
            self.name,
            f"server has no endpoint {policy}/{self.device.security.mode} "
            f"(offers {', '.join(offered)})",
        )

    async def _discard(self, client: Client) -> None:
        """Drop a client that never became a session."""
        try:
            async with asyncio.timeout(self.device.timeout_s):
                await client.close_session()
        except Exception:
            pass
        finally:
            client.disconnect_socket()

    async def _teardown(self, *, graceful: bool = False) -> None:
        session, self._session = self._session, None
        self._fixed = {}
        if session is None:
            return
        client = session.client
        # Subscribed values are as old as the last notification now: say so until new ones.
        for p in self.subscribed:
            self._values[p.index] = None
            self._issues[p.index] = WAITING
        try:
            async with asyncio.timeout(self.device.timeout_s):
                connected = client.uaclient.state is UaClientState.CONNECTED
                await client.close_session()  # cancels asyncua's tasks first, then asks
                if graceful and connected:
                    await client.close_secure_channel()
        except Exception:
            pass  # the server may be gone; the socket is closed below either way
        finally:
            client.disconnect_socket()

    # --- resolving nodes ------------------------------------------------------------

    async def _resolve(self, session: _Session) -> None:
        client = session.client
        namespaces = await client.get_namespace_array()
        index = {uri: i for i, uri in enumerate(namespaces)}
        paths: list[tuple[int, BrowsePath]] = []
        for p in self.planned:
            target = p.target
            if isinstance(target, BrowsePath):
                missing = [uri for uri, _ in target.segments if uri not in index]
                if missing:
                    self._fixed[p.index] = (Quality.BAD, f"namespace not on server: {missing[0]}")
                else:
                    paths.append((p.index, target))
                continue
            if target.namespace_uri is None:
                ns = 0
            elif target.namespace_uri in index:
                ns = index[target.namespace_uri]
            else:
                reason = f"namespace not on server: {target.namespace_uri}"
                self._fixed[p.index] = (Quality.BAD, reason)
                continue
            session.node_ids[p.index] = _node_id(target, ns)
        if paths:
            await self._translate(session, paths, index)
        polled = [p.index for p in self.polled if p.index in session.node_ids]
        step = self.device.max_items_per_request
        for start in range(0, len(polled), step):
            chunk = polled[start : start + step]
            session.read_params.append(
                ua.ReadParameters(
                    MaxAge=0,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    NodesToRead=[
                        ua.ReadValueId(NodeId=session.node_ids[i], AttributeId=AttributeIds.Value)
                        for i in chunk
                    ],
                )
            )
            session.read_index.append(chunk)

    async def _translate(
        self, session: _Session, paths: Sequence[tuple[int, BrowsePath]], index: dict[str, int]
    ) -> None:
        hierarchical = _make_node_id(ObjectIds.HierarchicalReferences, 0)
        requests = [
            ua.BrowsePath(
                StartingNode=_make_node_id(ObjectIds.ObjectsFolder, 0),
                RelativePath=ua.RelativePath(
                    Elements=[
                        _path_element(hierarchical, ua.QualifiedName(name, index[uri]))
                        for uri, name in path.segments
                    ]
                ),
            )
            for _, path in paths
        ]
        results = await session.client.uaclient.translate_browsepaths_to_nodeids(requests)
        for (i, _), result in zip(paths, results, strict=True):
            issue = quality_of(result.StatusCode.value, status_name)
            if issue is not None or not result.Targets:
                self._fixed[i] = issue or (Quality.BAD, "BadNoMatch")
                continue
            target = result.Targets[0].TargetId
            session.node_ids[i] = _make_node_id(target.Identifier, target.NamespaceIndex)

    # --- subscription ---------------------------------------------------------------

    async def _subscribe(self, session: _Session) -> None:
        device = self.device
        publishing_ms = device.publishing_s * 1000.0
        lifetime = max(
            3 * device.keepalive_count, math.ceil(2 * device.watchdog_s / device.publishing_s)
        )
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms,
            RequestedLifetimeCount=lifetime,
            RequestedMaxKeepAliveCount=device.keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        generation = session.generation

        def on_publish(result: ua.PublishResult) -> None:
            if self._session is not session or session.generation != generation:
                return  # a notification of a session or subscription already replaced
            self._on_publish(session, result)

        session.sub_status = None
        session.got_data.clear()
        created = await session.client.uaclient.create_subscription(params, on_publish)
        session.subscription_id = created.SubscriptionId
        session.last_publish = time.monotonic()
        self.stats.subscriptions += 1
        items = [p for p in self.subscribed if p.index in session.node_ids]
        step = device.max_items_per_request
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            results = await session.client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=created.SubscriptionId,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=[_item_request(p, session.node_ids[p.index]) for p in chunk],
                )
            )
            for p, result in zip(chunk, results, strict=True):
                issue = quality_of(result.StatusCode.value, status_name)
                if issue is not None and issue[0] is Quality.BAD:
                    self._fixed[p.index] = issue

    def _on_publish(self, session: _Session, result: ua.PublishResult) -> None:
        session.last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive: proof of life, nothing to store
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    self._store(item.ClientHandle, item.Value)
                session.got_data.set()
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    session.sub_status = status_name(status.value)

    def _store(self, index: int, dv: ua.DataValue | None) -> None:
        if dv is None or not 0 <= index < len(self._values):
            return
        self.stats.notifications += 1
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        issue = quality_of(code, status_name) if code else None
        self.timestamps[index] = (_ns(dv.SourceTimestamp), _ns(dv.ServerTimestamp))
        if issue is not None and issue[0] is Quality.BAD:
            self._values[index] = None
            self._issues[index] = issue
            return
        value, why = plain_value(dv.Value.Value if dv.Value is not None else None)
        if why is not None:
            self._values[index] = None
            self._issues[index] = (Quality.BAD, why)
            return
        p = self.planned[index]
        self._values[index] = scaled(value, p.scale, p.offset, p.decimals)
        if issue is None:
            self._issues.pop(index, None)
        else:
            self._issues[index] = issue

    async def _watch(self, session: _Session) -> None:
        """Rebuild a subscription that went silent or that the server reported bad."""
        silent_s = time.monotonic() - session.last_publish
        why: str | None = None
        if session.sub_status is not None:
            why = f"subscription status {session.sub_status}"
        elif silent_s > self.device.watchdog_s:
            why = f"no notification or keep-alive for {silent_s:.1f} s"
        if why is None:
            self._silent_logged = False
            return
        if not self._silent_logged:
            log.warning("%s: %s; rebuilding the subscription", self.name, why)
            self._silent_logged = True
        self.stats.watchdog_rebuilds += 1
        old = session.subscription_id
        session.subscription_id = None
        self._generation += 1
        session.generation = self._generation
        for p in self.subscribed:
            self._fixed.pop(p.index, None)
        try:
            async with asyncio.timeout(self.device.timeout_s * 4):
                if old is not None:
                    # Already gone on the server, most likely: that is why we are here.
                    with contextlib.suppress(UaStatusCodeError):
                        await session.client.uaclient.delete_subscriptions([old])
                await self._subscribe(session)
        except Exception as exc:
            await self._teardown()
            reason = _reason(exc)
            raise DeviceUnreachable(self.name, f"subscription rebuild failed: {reason}") from exc

    # --- polling --------------------------------------------------------------------

    async def _read_polled(
        self, session: _Session, values: list[Value], issues: dict[int, Issue]
    ) -> None:
        client = session.client
        try:
            answers = await asyncio.gather(*(client.uaclient.read(p) for p in session.read_params))
        except UaStatusCodeError as exc:
            name = status_name(exc.code)
            if name in _SESSION_LOST:
                await self._teardown()
                raise DeviceUnreachable(self.name, f"session lost ({name})") from exc
            for p in self.polled:  # the service failed as a whole: every polled value is bad
                values[p.index] = None
                issues[p.index] = (Quality.BAD, name)
            return
        except (TimeoutError, OSError, ConnectionError, UaError) as exc:
            await self._teardown()
            raise DeviceUnreachable(self.name, _reason(exc)) from exc
        self.stats.reads += len(answers)
        planned = self.planned
        timestamps = self.timestamps
        for chunk, dvs in zip(session.read_index, answers, strict=True):
            for i, dv in zip(chunk, dvs, strict=True):
                code = dv.StatusCode.value if dv.StatusCode is not None else 0
                issue = quality_of(code, status_name) if code else None
                timestamps[i] = (_ns(dv.SourceTimestamp), _ns(dv.ServerTimestamp))
                if issue is not None and issue[0] is Quality.BAD:
                    values[i] = None
                    issues[i] = issue
                    continue
                value, why = plain_value(dv.Value.Value if dv.Value is not None else None)
                if why is not None:
                    values[i] = None
                    issues[i] = (Quality.BAD, why)
                    continue
                p = planned[i]
                values[i] = scaled(value, p.scale, p.offset, p.decimals)
                if issue is not None:
                    issues[i] = issue


def _make_node_id(identifier: object, ns: int, kind: ua.NodeIdType | None = None) -> ua.NodeId:
    # asyncua types Identifier and NamespaceIndex as NewTypes of int/str; plain values work.
    args: Any = (identifier, ns, kind) if kind is not None else (identifier, ns)
    return ua.NodeId(*args)


def _node_id(ref: NodeRef, ns: int) -> ua.NodeId:
    if ref.kind == "i":
        return _make_node_id(int(ref.identifier), ns, ua.NodeIdType.Numeric)
    if ref.kind == "g":
        return _make_node_id(uuid.UUID(str(ref.identifier)), ns, ua.NodeIdType.Guid)
    if ref.kind == "b":
        return _make_node_id(base64.b64decode(str(ref.identifier)), ns, ua.NodeIdType.ByteString)
    return _make_node_id(str(ref.identifier), ns, ua.NodeIdType.String)


def _path_element(reference: ua.NodeId, name: ua.QualifiedName) -> ua.RelativePathElement:
    flags: Any = {"IsInverse": False, "IncludeSubtypes": True}  # ua.Boolean is a NewType
    return ua.RelativePathElement(ReferenceTypeId=reference, TargetName=name, **flags)


def _item_request(p: PlannedPoint, node_id: ua.NodeId) -> ua.MonitoredItemCreateRequest:
    mfilter: ua.DataChangeFilter | None = None
    if p.deadband is not None:
        absolute = p.deadband.abs is not None
        mfilter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=ua.DeadbandType.Absolute if absolute else ua.DeadbandType.Percent,
            DeadbandValue=p.deadband.abs if absolute else p.deadband.percent,
        )
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(
            ClientHandle=p.index,
            SamplingInterval=p.sampling_ms,
            Filter=mfilter,
            QueueSize=p.queue_size,
            DiscardOldest=True,
        ),
    )


# --- browsing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrowseEntry:
    """One node of a server's address space, as `edge-agent browse` lists it."""

    depth: int
    node: str  # nsu=URI;s=... (what a point's `node:` takes)
    browse_name: str  # Name, or nsu=URI;Name outside the parent's namespace
    node_class: str
    data_type: str | None = None
    access: str | None = None  # r, w, rw


async def browse(
    url: str,
    *,
    path: Sequence[str] = (),
    depth: int = 3,
    timeout_s: float = 5.0,
    max_nodes: int = 5000,
    standard: bool = False,
) -> list[BrowseEntry]:
    """Walk a server's address space from Objects (or `path` below it), security None.

    `path` segments match browse names (`Name`, or `nsu=URI;Name` to pick a namespace).
    The standard namespace-0 objects under Objects (Server, ...) are left out unless
    `standard`. Raises DeviceUnreachable when the server cannot be reached or the path
    matches nothing.
    """
    client = Client(url, timeout=timeout_s)
    client.application_uri = "urn:edge-agent:browse"
    try:
        async with asyncio.timeout(timeout_s * 2):
            await client.connect()
    except Exception as exc:
        client.disconnect_socket()
        raise DeviceUnreachable(url, _reason(exc)) from exc
    try:
        namespaces = await client.get_namespace_array()
        node = client.nodes.objects
        for segment in path:
            node = await _child(client, node, segment, namespaces)
        entries: list[BrowseEntry] = []
        skip_standard = not path and not standard
        await _walk(client, node, namespaces, 0, depth, entries, max_nodes, skip_standard)
        return entries
    except (UaError, OSError, TimeoutError) as exc:
        raise DeviceUnreachable(url, _reason(exc)) from exc
    finally:
        try:
            async with asyncio.timeout(timeout_s):
                await client.disconnect()
        except Exception:
            client.disconnect_socket()


def node_text(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """A NodeId in the config's `nsu=URI;x=...` form (namespace 0 without nsu)."""
    kind = {
        ua.NodeIdType.String: "s",
        ua.NodeIdType.Guid: "g",
        ua.NodeIdType.ByteString: "b",
    }.get(node_id.NodeIdType, "i")
    raw: object = node_id.Identifier
    identifier = base64.b64encode(raw).decode() if isinstance(raw, bytes) else str(raw)
    text = f"{kind}={identifier}"
    ns = node_id.NamespaceIndex
    if ns == 0:
        return text
    uri = namespaces[ns] if ns < len(namespaces) else f"urn:unknown-namespace-{ns}"
    # The text form must read back to the same node: round-trip it through the parser.
    return str(parse_node(f"nsu={uri};{text}"))


async def _child(client: Client, node: Node, segment: str, namespaces: Sequence[str]) -> Node:
    uri, _, name = segment.rpartition(";") if segment.startswith("nsu=") else ("", "", segment)
    uri = uri.removeprefix("nsu=")
    for ref in await node.get_children_descriptions():
        qn = ref.BrowseName
        if qn.Name == name and (not uri or namespaces[qn.NamespaceIndex] == uri):
            return client.get_node(ref.NodeId)
    raise DeviceUnreachable(client.server_url.geturl(), f"no child {segment!r} (BadNoMatch)")


async def _walk(
    client: Client,
    node: Node,
    namespaces: Sequence[str],
    level: int,
    depth: int,
    out: list[BrowseEntry],
    max_nodes: int,
    skip_standard: bool = False,
) -> None:
    if level >= depth or len(out) >= max_nodes:
        return
    refs = await node.get_children_descriptions()
    if skip_standard:
        refs = [r for r in refs if r.NodeId.NamespaceIndex != 0]
    variables = [r for r in refs if r.NodeClass == ua.NodeClass.Variable]
    details: dict[ua.NodeId, tuple[str | None, str | None]] = {}
    if variables:
        ids = [r.NodeId for r in variables]
        types = await client.uaclient.read_attributes(ids, AttributeIds.DataType)
        levels = await client.uaclient.read_attributes(ids, AttributeIds.UserAccessLevel)
        for nid, t, a in zip(ids, types, levels, strict=True):
            details[nid] = (await _type_name(client, t), _access_text(a))
    for ref in refs:
        if len(out) >= max_nodes:
            return
        qn = ref.BrowseName
        uri = namespaces[qn.NamespaceIndex] if qn.NamespaceIndex < len(namespaces) else "?"
        name = (
            qn.Name
            if qn.NamespaceIndex in (0, ref.NodeId.NamespaceIndex)
            else f"nsu={uri};{qn.Name}"
        )
        data_type, access = details.get(ref.NodeId, (None, None))
        out.append(
            BrowseEntry(
                depth=level,
                node=node_text(ref.NodeId, namespaces),
                browse_name=name,
                node_class=ref.NodeClass.name,
                data_type=data_type,
                access=access,
            )
        )
        if ref.NodeClass == ua.NodeClass.Object:
            await _walk(
                client, client.get_node(ref.NodeId), namespaces, level + 1, depth, out, max_nodes
            )


async def _type_name(client: Client, dv: ua.DataValue) -> str | None:
    if dv.Value is None or not isinstance(dv.Value.Value, ua.NodeId):
        return None
    nid = dv.Value.Value
    if nid.NamespaceIndex == 0 and isinstance(nid.Identifier, int):
        return ObjectIdNames.get(nid.Identifier, str(nid.Identifier))
    try:
        qn = await client.get_node(nid).read_browse_name()
    except UaError:
        return str(nid)
    return str(qn.Name)


def _access_text(dv: ua.DataValue) -> str | None:
    if dv.Value is None or not isinstance(dv.Value.Value, int):
        return None
    level = dv.Value.Value
    text = ("r" if level & ua.AccessLevel.CurrentRead.mask else "") + (
        "w" if level & ua.AccessLevel.CurrentWrite.mask else ""
    )
    return text or "-"

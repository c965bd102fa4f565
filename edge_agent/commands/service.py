"""Write requests on `{prefix}/{site}/{gateway}/{device}/cmd`: checked, queued, executed
between polls, read back, answered and recorded.

    MQTT .../{device}/cmd ─► parse (request.py) ─► checks ─► the line's WriteSlots (slots.py)
         ─► between two polls: expiry, device up? ─► plugin.write: write, read back (at
            once, or by the device's next poll on a busy shared line: readback.py)
         ─► reply on .../{device}/cmd/reply  +  audit on .../{device}/cmd/audit (outbox)

The checks, in order, each a rejection with its code: writes enabled for the gateway, the
device known, the point writable (its protocol can write, the config says `write:`), the
value within the point's limits and exactly representable in its type, expiry within
writes.max_expires_s, the point's writes per minute, room in the line's queue. A request
still waiting when its expiry passes is rejected as expired and never reaches the device;
a device known to be down is not tried.

Every request the gateway can read (valid JSON with its fields) is recorded twice through
the outbox, durable like readings: an audit message when it arrives ("request") and one
with its result ("result": who, what, the old value of the last poll, the value read
back, the times). Garbage is only counted and logged within a budget (refusal_log.py),
like refused alarm commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.contract import (
    PolledDriver,
    ReadBackLater,
    WritablePlugin,
    WriteFailed,
    WriteRefused,
)
from drivers.reading import DeviceUnreachable, Value
from drivers.registry import plugin
from edge_agent.alarms.refusal_log import RefusalLog, shown
from edge_agent.commands.config import WritesConfig
from edge_agent.commands.readback import PolledReadBack, read_back_now
from edge_agent.commands.request import Rejection, Result, WriteRequest, parse_request
from edge_agent.commands.slots import WriteSlots
from edge_agent.mqtt.sink import MqttSink
from edge_agent.pipeline.stages import Outlet
from edge_agent.runtime.poller import Unit

log = logging.getLogger(__name__)

CMD_SUFFIX = "cmd"
RATE_WINDOW_S = 60.0
# Rejected requests audited per device per RATE_WINDOW_S: beyond it a flood of refused
# requests is counted only, so it cannot fill the outbox that readings share (accepted ones
# are bounded by writes.per_point_per_min and writes.queue_max, and always audited).
REJECTED_AUDITS_PER_WINDOW = 60
# While this many messages wait for the broker, a rejection gets no reply (as for alarm
# commands): a flood cannot fill the MQTT queue either.
REFUSED_REPLY_BACKLOG = 1000
ALARM_COMMANDS = "alarms"  # {base}/alarms/cmd is the alarm stage's, not a device's


@dataclass(frozen=True, slots=True)
class Response:
    """An MQTT 5 request's response topic and correlation data."""

    topic: str
    correlation: bytes | None


def response_of(properties: Properties | None) -> Response | None:
    """The response topic (and correlation data) a request names, if any."""
    topic = getattr(properties, "ResponseTopic", None)
    if not isinstance(topic, str) or not topic:
        return None
    correlation = getattr(properties, "CorrelationData", None)
    return Response(topic, bytes(correlation) if correlation is not None else None)


@dataclass(slots=True)
class Pending:
    """One request on its way: what the reply and the audit messages say about it."""

    device: str
    request: WriteRequest
    received_ms: int
    deadline: float  # loop time
    old_value: Value = None
    executed_ms: int | None = None
    response: Response | None = None  # MQTT 5: where else the reply goes
    audited: bool = True  # False: a rejection over the audit budget, counted only


@dataclass(slots=True)
class WriteCounters:
    """What became of the requests, for metrics and tests."""

    requests: int = 0
    unaudited: int = 0  # rejections over REJECTED_AUDITS_PER_WINDOW, counted only
    replies_dropped: int = 0  # rejections not answered while the MQTT queue was backed up
    # (result, code): ("done", ""), ("failed", ""), ("rejected", "out_of_range"), ...
    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    read_backs: Counter[str] = field(default_factory=Counter)  # "at_once", "poll"


class WriteCommands:
    """The command path of one gateway, a stage so the agent runs and isolates it."""

    name = "commands"

    def __init__(
        self,
        config: WritesConfig,
        outlet: Outlet,
        sink: MqttSink,
        *,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.outlet = outlet
        self.sink = sink
        self.wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.counters = WriteCounters()
        self.refusals = RefusalLog(log, "write requests")
        self._units: dict[str, tuple[Unit, WriteSlots]] = {}
        self._lines: dict[str, tuple[WriteSlots, list[str]]] = {}
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._rejected: dict[str, deque[float]] = {}  # audited rejections, per device
        # (device, point) -> its write's read-back waiting for the device's next poll
        self._read_backs: dict[tuple[str, str], PolledReadBack] = {}

    # -- the lines (runtime/agent.py) ---------------------------------------------------------

    def line_started(self, key: str, units: Sequence[Unit], frame_gap_s: float) -> WriteSlots:
        """The queue the poller of line `key` serves between its polls."""
        self.line_stopped(key)
        slots = WriteSlots(limit=self.config.queue_max, frame_gap_s=frame_gap_s, units=units)
        names = [u.driver.name for u in units]
        self._lines[key] = (slots, names)
        for unit in units:
            self._units[unit.driver.name] = (unit, slots)
        return slots

    def line_stopped(self, key: str) -> None:
        """Answer the writes still waiting on a stopped line; they never ran."""
        entry = self._lines.pop(key, None)
        if entry is None:
            return
        slots, names = entry
        for name in names:
            if self._units.get(name, (None, None))[1] is slots:
                del self._units[name]
        slots.close("the device's line was restarted (config reload) before the write ran")

    # -- stage -----------------------------------------------------------------------------

    def observe(self, poll: object) -> None:
        """Nothing: the old value comes from the poller's last poll of the device."""

    async def run(self) -> None:
        """Subscribe to every device's command topic, then wait."""
        try:
            self.sink.subscribe(f"{self.outlet.base_topic}/+/{CMD_SUFFIX}", self.on_request)
            await asyncio.Future()
        finally:
            self.refusals.flush()

    # -- requests ---------------------------------------------------------------------------

    def on_request(self, topic: str, payload: bytes) -> None:
        """One request from the broker: reject it at once, or queue it on its line."""
        device = topic[len(self.outlet.base_topic) + 1 : -len(CMD_SUFFIX) - 1]
        if device == ALARM_COMMANDS:
            return
        self.submit(device, payload, response=response_of(self.sink.message_properties))

    def submit(self, device: str, payload: bytes, *, response: Response | None = None) -> None:
        """A request (the JSON of the command contract) for `device`, from MQTT or from
        another encoding of the same commands (Sparkplug DCMD): the same checks, queue,
        reply and audit."""
        self.counters.requests += 1
        request, rejection, request_id = parse_request(payload)
        if request is None:
            assert rejection is not None
            self.refusals.refused(
                rejection.code, "write request refused: %s (%s)", rejection.reason, shown(payload)
            )
            self._reply(device, request_id, "rejected", rejection=rejection, response=response)
            return
        loop = asyncio.get_running_loop()
        expires_s = request.expires_s or self.config.expires_s
        now = loop.time()
        pending = Pending(device, request, self.wall_ms(), now + expires_s, response=response)
        rejection = self._check(pending, expires_s, now)
        if rejection is None:
            return  # queued, and its arrival audited
        pending.audited = self._may_audit(device, now)
        if pending.audited:
            self._audit(pending, "request")
        self._finish(pending, "rejected", rejection=rejection)

    def _may_audit(self, device: str, now: float) -> bool:
        """Whether one more rejection of `device` is audited in this window."""
        recent = self._rejected.setdefault(device, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= REJECTED_AUDITS_PER_WINDOW:
            self.counters.unaudited += 1
            return False
        recent.append(now)
        return True

    def _check(self, pending: Pending, expires_s: float, now: float) -> Rejection | None:
        """Why the request cannot go to its device; None once it is queued."""
        request = pending.request
        if not self.config.enabled:
            return Rejection("writes_disabled", "writes are disabled on this gateway")
        found = self._units.get(pending.device)
        if found is None:
            return Rejection("unknown_device", f"no device {pending.device[:64]!r} is polled here")
        unit, slots = found
        driver = _protocol_driver(unit)
        protocol = plugin(driver.protocol)
        if not isinstance(protocol, WritablePlugin):
            return Rejection(
                "not_writable", f"{plugin(driver.protocol).title} points are read-only"
            )
        options = protocol.write_options(driver).get(request.point)
        try:
            protocol.check_write(driver, request.point, request.value)
        except WriteRefused as exc:
            if exc.code not in ("unknown_point", "not_writable") and options is not None:
                limit = options.refusal(request.value)
                if limit is not None:  # a limit says more than the type's range
                    return Rejection("out_of_range", limit)
            return Rejection(exc.code, exc.reason)
        assert options is not None
        limit = options.refusal(request.value)
        if limit is not None:
            return Rejection("out_of_range", limit)
        if expires_s > self.config.max_expires_s:
            return Rejection(
                "bad_request",
                f"expires_s: at most writes.max_expires_s ({self.config.max_expires_s:g})",
            )
        recent = self._recent.setdefault((pending.device, request.point), deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= self.config.per_point_per_min:
            return Rejection(
                "rate_limited",
                f"more than {self.config.per_point_per_min} writes a minute to {request.point}",
            )
        pending.old_value = _last_value(unit, request.point)
        if not slots.put(
            lambda: self._execute(pending, unit, protocol, slots),
            lambda reason: self._finish(
                pending, "rejected", rejection=Rejection("device_down", reason)
            ),
        ):
            return Rejection("rate_limited", f"{len(slots)} writes already wait on this line")
        recent.append(now)
        self._audit(pending, "request")
        return None

    async def _execute(
        self, pending: Pending, unit: Unit, protocol: WritablePlugin, slots: WriteSlots
    ) -> None:
        """Run on the line between polls: the last checks, then the write and read-back
        (at once, or by the device's next poll: readback.py)."""
        request = pending.request
        if asyncio.get_running_loop().time() > pending.deadline:
            expires_s = request.expires_s or self.config.expires_s
            reason = f"expired: not executed within {expires_s:g} s"
            self._finish(pending, "rejected", rejection=Rejection("expired", reason))
            return
        if unit.stats.up is False:
            reason = f"device down: {unit.stats.reason}"
            self._finish(pending, "rejected", rejection=Rejection("device_down", reason))
            return
        pending.executed_ms = self.wall_ms()
        driver = _protocol_driver(unit)
        try:
            if not isinstance(protocol, ReadBackLater) or len(slots.units) < 2:
                value = await protocol.write(driver, request.point, request.value)
                self.counters.read_backs["at_once"] += 1
            else:
                earlier = self._read_backs.pop((pending.device, request.point), None)
                if earlier is not None and not earlier.settled:
                    self.counters.read_backs["at_once"] += 1
                    await earlier.read_now(lambda: protocol.read_back(driver, request.point))
                loop = asyncio.get_running_loop()
                began = loop.time()
                await protocol.write_only(driver, request.point, request.value)
                wait_max_s = request.expires_s or self.config.expires_s
                if not read_back_now(
                    slots, unit, write_s=loop.time() - began, wait_max_s=wait_max_s
                ):
                    read_back = self._polled_read_back(pending, unit)
                    self._read_backs[pending.device, request.point] = read_back
                    slots.after_poll(read_back)
                    self.counters.read_backs["poll"] += 1
                    return
                self.counters.read_backs["at_once"] += 1
                value = await protocol.read_back(driver, request.point)
        except WriteRefused as exc:
            self._finish(pending, "rejected", rejection=Rejection(exc.code, exc.reason))
        except (WriteFailed, DeviceUnreachable) as exc:
            self._finish(pending, "failed", reason=exc.reason)
        except asyncio.CancelledError:
            self._finish(pending, "failed", reason="stopped during the write; read the point")
            raise
        except Exception as exc:
            log.exception("%s: write of %s failed in the driver", unit.driver.name, request.point)
            self._finish(pending, "failed", reason=f"driver error: {exc}")
        else:
            self._finish(pending, "done", value=value)

    def _polled_read_back(self, pending: Pending, unit: Unit) -> PolledReadBack:
        """Answer `pending` from its device's next poll."""
        return PolledReadBack(
            unit,
            pending.request.point,
            done=lambda value: self._finish(pending, "done", value=value),
            failed=lambda reason: self._finish(pending, "failed", reason=reason),
        ).waiting()

    # -- answers ----------------------------------------------------------------------------

    def _finish(
        self,
        pending: Pending,
        result: Result,
        *,
        value: Value = None,
        rejection: Rejection | None = None,
        reason: str | None = None,
    ) -> None:
        reply = self._reply(
            pending.device,
            pending.request.id,
            result,
            value=value,
            rejection=rejection,
            reason=reason,
            response=pending.response,
        )
        if pending.audited:
            self._audit(pending, "result", reply=reply)

    def _reply(
        self,
        device: str,
        request_id: str | None,
        result: Result,
        *,
        value: Value = None,
        rejection: Rejection | None = None,
        reason: str | None = None,
        response: Response | None = None,
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {"id": request_id, "result": result}
        if result == "rejected" and self.sink.stats.pending >= REFUSED_REPLY_BACKLOG:
            self.counters.replies_dropped += 1
            self.counters.results[result, rejection.code if rejection else ""] += 1
            return reply
        if result == "done":
            reply["value"] = value
        elif rejection is not None:
            reply["reason"] = rejection.reason
            reply["code"] = rejection.code
        else:
            reply["reason"] = reason
        self.counters.results[result, "" if rejection is None else rejection.code] += 1
        body = orjson.dumps(reply)
        self.sink.publish(f"{self.outlet.base_topic}/{device}/{CMD_SUFFIX}/reply", body, qos=1)
        if response is not None:
            properties = None
            if response.correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = response.correlation
            try:
                self.sink.publish(response.topic, body, qos=1, properties=properties)
            except ValueError:  # a topic with wildcards: the broker should not have passed it
                log.debug("reply to %s: not a topic to publish to", shown(response.topic))
        return reply

    def _audit(self, pending: Pending, event: str, *, reply: dict[str, Any] | None = None) -> None:
        request = pending.request
        doc: dict[str, Any] = {
            "event": event,
            "device": pending.device,
            "id": request.id,
            "point": request.point,
            "value": request.value,
            "by": request.by,
            "received_ms": pending.received_ms,
        }
        if reply is not None:
            doc.update(
                result=reply["result"],
                reason=reply.get("reason"),
                code=reply.get("code"),
                old_value=pending.old_value,
                new_value=reply.get("value"),
                executed_ms=pending.executed_ms,
            )
            doc["ts_ms"] = self.wall_ms()
        else:
            doc["ts_ms"] = pending.received_ms
        self.outlet.send(f"{pending.device}/{CMD_SUFFIX}/audit", doc, device=pending.device)


def _protocol_driver(unit: Unit) -> PolledDriver:
    """The protocol's own driver of a unit, under the metrics' timing wrapper if any
    (ops/metrics.py: MeteredDriver keeps it as `inner`); its plugin asks for its type."""
    inner = getattr(unit.driver, "inner", None)
    return inner if inner is not None else unit.driver


def _last_value(unit: Unit, point: str) -> Value:
    """The point's value in the device's last poll (None when bad or never polled)."""
    poll = unit.stats.last_poll
    if poll is None:
        return None
    for i, spec in enumerate(poll.points):
        if spec.name == point:
            return None if i in poll.issues else poll.values[i]
    return None

"""The safety alarm stage: rules on every poll, ISA-18.2 states, transitions through the outbox.

    poll ─► observe ─► checks + delays ─► AlarmStatus ─► transition ─┬─► outbox: .../alarms
                                                                      ├─► alarm store (state)
    run(): stale data, comm-loss delays,                              └─► retained .../alarms/active
           shelving expiry, flood window
    MQTT .../alarms/cmd ─► ack, reset, shelve, ... ─► transition ─► reply on .../alarms/cmd/reply

Quality: a BAD reading never decides a process alarm (limit, rate, state, deviation): the
alarm holds its state and a pending delay starts again. Bad data raises the point's stale
alarm (no good reading for N intervals) or the device's comm_loss alarm (a poll with no
readable point) instead. An UNCERTAIN reading is judged, and says so in the message.

Every transition is staged in the outbox (its seq), committed with the alarm's new state
in the alarm store, then the outbox is flushed at once: see alarm_store.py for why that
order loses nothing and duplicates nothing across a crash. Transitions of one poll are
committed together.

The timer follows work: run() sleeps until the earliest deadline something has (a stale
alarm's last good reading + stale_after_s, a pending comm-loss delay, a shelving's end, a
raise leaving the flood or chatter window), rounded up to a multiple of `alarms.tick_s` on
the loop's clock, and waits without a timer when nothing is timed. observe and commands
wake it when they create a deadline earlier than the one it sleeps for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from drivers.options.alarms import (
    LIMIT_KINDS,
    AlarmRule,
    DeviceAlarmRule,
    expand_rules,
    merged_device_rules,
    reference_issues,
)
from drivers.reading import PointSpec, Poll, Quality, Value
from edge_agent.alarms.commands import AlarmCommand, Refusal, parse_command
from edge_agent.alarms.config import AlarmsConfig
from edge_agent.alarms.counters import AlarmCounters, RaiseWindows
from edge_agent.alarms.refusal_log import RefusalLog, shown
from edge_agent.alarms.rules import Check, Delay, build_check
from edge_agent.alarms.state import AlarmState, AlarmStatus, Event, Refused, Transition
from edge_agent.alarms.store import AlarmStore, PendingMessage
from edge_agent.config.errors import ConfigError, ConfigIssue, format_loc
from edge_agent.config.site import LoadedConfig
from edge_agent.delivery.forwarder import Forwarder
from edge_agent.mqtt.sink import MqttSink
from edge_agent.pipeline.stages import Outlet, Stage
from edge_agent.runtime.wake_grid import next_multiple

log = logging.getLogger(__name__)

SUFFIX = "alarms"
ACTIVE_SUFFIX = "alarms/active"
CMD_SUFFIX = "alarms/cmd"
REPLY_SUFFIX = "alarms/cmd/reply"
# A refused command gets no reply while this many messages wait for the broker: a flood of
# bad commands must not fill the MQTT queue that readings and transitions go through.
REFUSED_REPLY_BACKLOG = 1000
SCHEMA_VERSION = 1
# A shelving ends at a wall-clock time; the timer sleeps on the loop's clock. An NTP step of
# the wall clock must not push an expiry out by hours: look again at least this often.
SHELVED_RECHECK_S = 60.0

_LABEL = {
    "high_high": "high-high",
    "high": "high",
    "low": "low",
    "low_low": "low-low",
    "rate_of_change": "rate of change",
    "state": "state",
    "deviation": "deviation",
    "stale": "stale data",
    "comm_loss": "communication lost",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False, slots=True)
class Alarm:
    """One configured alarm: its rule, its check and delay, its ISA-18.2 status."""

    id: str
    device: str
    point: str | None  # None: a device alarm (comm_loss)
    rule: AlarmRule
    check: Check | None
    delay: Delay
    unit: str | None = None
    stale_after_s: float = 0.0
    status: AlarmStatus = field(default_factory=AlarmStatus)
    raw: bool = False  # comm_loss: the last poll had no readable point (the timer re-checks)
    last_good: float = 0.0  # stale: loop time of the last good reading (or of the start)
    value: Value = None  # the reading behind the last evaluation
    quality: str = "good"
    reason: str | None = None

    def describe(self) -> dict[str, Any]:
        """The alarm's current state, as in the retained active set and command replies."""
        s = self.status
        return {
            "id": self.id,
            "device": self.device,
            "point": self.point,
            "alarm": self.rule.name,
            "kind": self.rule.kind,
            "priority": self.rule.priority,
            "state": s.state.value,
            "active": s.active,
            "acked": s.acked,
            "latched": s.latched,
            "shelved_until_ms": s.shelved_until_ms,
            "out_of_service": s.out_of_service,
            "since_ms": s.since_ms,
            "transition": s.transitions,
            "value": self.value,
            "unit": self.unit,
            "message": self.message(),
        }

    def message(self) -> str:
        """The rule's message, or a generated one, filled with the last reading."""
        rule = self.rule
        limit = rule.limit
        value = _text(self.value)
        if rule.message is not None:
            fields = {
                "device": self.device,
                "point": self.point or "",
                "value": value,
                "limit": _text(limit),
                "unit": self.unit or "",
            }
            return rule.message.format_map(fields)
        label = _LABEL[rule.kind or ""]
        unit = f" {self.unit}" if self.unit else ""
        if rule.kind == "comm_loss":
            return f"{self.device}: {label}" + (f" ({self.reason})" if self.reason else "")
        if rule.kind == "stale":
            return f"{self.point}: {label}, no good reading for {self.stale_after_s:g} s" + (
                f" ({self.reason})" if self.reason else ""
            )
        if rule.kind == "state":
            return f"{self.point} {label}: {value}"
        if rule.kind == "deviation":
            return f"{self.point} {label} from {rule.setpoint}: {value}{unit} (limit {limit:g})"
        if rule.kind == "rate_of_change":
            return f"{self.point} {label}: {value}{unit} (limit {limit:g} per {rule.period_s:g} s)"
        return f"{self.point} {label}: {value}{unit} (limit {_text(limit)}{unit})"


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


@dataclass(slots=True)
class DeviceWatch:
    """The alarms of one device, bound to the point order of its polls."""

    name: str
    by_point: dict[str, list[Alarm]]
    setpoints: dict[str, str]  # alarm id -> set-point point name
    comm_loss: list[Alarm]
    bound_to: tuple[PointSpec, ...] | None = None
    value_alarms: list[tuple[int, int, Alarm]] = field(default_factory=list)  # sp -1: none
    stale_alarms: list[tuple[int, Alarm]] = field(default_factory=list)

    def bind(self, points: tuple[PointSpec, ...]) -> None:
        """Index the alarms by the position of their points in this device's polls."""
        index = {p.name: i for i, p in enumerate(points)}
        self.value_alarms = []
        self.stale_alarms = []
        for name, alarms in self.by_point.items():
            i = index.get(name)
            if i is None:
                continue
            for alarm in alarms:
                if alarm.unit is None:
                    alarm.unit = points[i].unit
                if alarm.check is None:
                    self.stale_alarms.append((i, alarm))
                    continue
                setpoint = self.setpoints.get(alarm.id)
                sp_index = -1 if setpoint is None else index.get(setpoint)
                if sp_index is None:
                    log.warning("%s: set-point %s is not in the polls", alarm.id, setpoint)
                    continue
                self.value_alarms.append((i, sp_index, alarm))
        self.bound_to = points


class AlarmStage:
    """The `Stage` of safety alarms; see the module docstring."""

    name = "alarms"

    def __init__(
        self,
        watches: list[DeviceWatch],
        *,
        outlet: Outlet,
        sink: MqttSink,
        forwarder: Forwarder,
        store: AlarmStore,
        config: AlarmsConfig | None = None,
        wall_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.config = config or AlarmsConfig()
        self.wall_ms = wall_ms  # shelving expiry and operator timestamps (a fake in tests)
        self.outlet = outlet
        self.sink = sink
        self.forwarder = forwarder
        self.store = store
        self.watches = {w.name: w for w in watches}
        self.alarms: dict[str, Alarm] = {}
        for w in watches:
            for alarm in [*w.comm_loss, *(a for alist in w.by_point.values() for a in alist)]:
                self.alarms[alarm.id] = alarm
        self.counters = AlarmCounters()
        # Refused commands by reason (metrics); a flood of them logs a line a minute.
        self.refusals = RefusalLog(log, "alarm commands")
        self.replies_dropped = 0  # replies to refused commands not sent (REFUSED_REPLY_BACKLOG)
        cfg = self.config
        self.windows = RaiseWindows(
            self.counters,
            flood_count=cfg.flood_count,
            flood_window_s=cfg.flood_window_s,
            chatter_count=cfg.chatter_count,
            chatter_window_s=cfg.chatter_window_s,
        )
        self._batch: list[tuple[Alarm, PendingMessage | None]] = []
        self._active_dirty = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # What the timer looks at: stale and comm-loss alarms, and the shelved ones.
        self._timed = [a for a in self.alarms.values() if a.rule.kind in ("stale", "comm_loss")]
        self._shelved: frozenset[Alarm] = frozenset()
        self.ticks = 0  # timer wake-ups that looked at the timed conditions (tests, bench)
        self._wake = asyncio.Event()  # a deadline earlier than the timer's appeared
        self._wake_at = math.inf  # loop time the timer sleeps until (inf: no timer)
        self._timer_due = False
        self._ticked_at = -math.inf

    # -- the hot path ------------------------------------------------------------------------

    def observe(self, poll: Poll) -> None:
        """Evaluate the rules of the poll's device; publish what changed."""
        watch = self.watches.get(poll.device)
        if watch is None or self._loop is None:
            return
        if poll.points is not watch.bound_to:
            watch.bind(poll.points)
        now = self._loop.time()
        ts_ms = poll.ts_ns // 1_000_000 or self.wall_ms()
        values = poll.values
        issues = poll.issues
        if watch.comm_loss:
            bad = len(issues) == len(values) and all(q is Quality.BAD for q, _ in issues.values())
            reason = next(iter(issues.values()))[1] if bad and issues else None
            for alarm in watch.comm_loss:
                alarm.raw = bad
                if bad:
                    alarm.reason = reason
                self._condition(alarm, alarm.delay.update(bad, now), now, ts_ms)
                due = alarm.delay.due
                if due is not None and due < self._wake_at:
                    self._wake.set()
        for index, sp_index, alarm in watch.value_alarms:
            issue = issues.get(index) if issues else None
            if issue is not None and issue[0] is Quality.BAD:
                alarm.delay.interrupt()  # bad data never decides a process alarm
                continue
            setpoint: Value = None
            if sp_index >= 0:
                sp_issue = issues.get(sp_index) if issues else None
                if sp_issue is not None and sp_issue[0] is Quality.BAD:
                    alarm.delay.interrupt()
                    continue
                setpoint = values[sp_index]
            check = alarm.check
            assert check is not None
            value = values[index]
            raw = check.evaluate(value, now, setpoint)
            if raw is None:
                alarm.delay.interrupt()
                continue
            alarm.value = value
            alarm.quality = "good" if issue is None else issue[0].value
            self._condition(alarm, alarm.delay.update(raw, now), now, ts_ms)
        for index, alarm in watch.stale_alarms:
            issue = issues.get(index) if issues else None
            if issue is None:  # only a GOOD reading is fresh data
                alarm.last_good = now
                alarm.value = values[index]
                alarm.reason = None
            else:
                alarm.reason = issue[1]
            self._condition(alarm, now - alarm.last_good >= alarm.stale_after_s, now, ts_ms)
            # Cleared (or never raised): stale again at this deadline, unless a poll comes.
            if not alarm.status.active and alarm.last_good + alarm.stale_after_s < self._wake_at:
                self._wake.set()
        if self._batch:
            self._commit()

    def _condition(self, alarm: Alarm, active: bool, now: float, ts_ms: int) -> None:
        status = alarm.status
        if active == status.active:
            return
        transition = status.set_active(active, latch=alarm.rule.latch or False, now_ms=ts_ms)
        if transition is None:
            self._batch.append((alarm, None))  # hidden: remember the condition only
            self._active_dirty = True
            return
        if transition.event is Event.RAISE:
            self.windows.raised(alarm.id, now)
            if now + min(self.config.flood_window_s, self.config.chatter_window_s) < self._wake_at:
                self._wake.set()  # a window to expire
        elif transition.event is Event.CLEAR:
            self.counters.cleared += 1
        self._stage(alarm, transition, ts_ms)

    # -- publishing --------------------------------------------------------------------------

    def _stage(
        self,
        alarm: Alarm,
        transition: Transition,
        ts_ms: int,
        *,
        operator: str | None = None,
        comment: str | None = None,
    ) -> None:
        rule = alarm.rule
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "ts_ms": ts_ms,
            "event": transition.event.value,
            "previous": transition.previous.value,
            **alarm.describe(),
            "quality": alarm.quality,
            "chattering": alarm.id in self.counters.chattering,
        }
        if rule.kind in LIMIT_KINDS or rule.kind in ("rate_of_change", "deviation"):
            doc["limit"] = rule.limit
        if alarm.reason is not None and rule.kind in ("stale", "comm_loss"):
            doc["reason"] = alarm.reason
        if operator is not None:
            doc["operator"] = operator
            doc["comment"] = comment
        seq = self.outlet.send(SUFFIX, doc, device=alarm.device)
        self._batch.append((alarm, PendingMessage(seq, SUFFIX, alarm.device, orjson.dumps(doc))))
        self._active_dirty = True
        log.info(
            "alarm %s: %s -> %s (%s)", alarm.id, transition.previous, transition.state, doc["event"]
        )

    def _commit(self) -> None:
        """Store the batch's states and messages, then flush the outbox (see the docstring)."""
        batch, self._batch = self._batch, []
        messages = [m for _, m in batch if m is not None]
        store = self.store
        try:
            store.save([(alarm.id, alarm.status, message) for alarm, message in batch])
        except sqlite3.Error as exc:
            # The transitions still go out; only their survival across a restart is at stake.
            self._store_trouble(exc)
        if messages:
            self.forwarder.flush()
            try:
                store.done(messages[-1].seq)
            except sqlite3.Error as exc:
                self._store_trouble(exc)
        if self._active_dirty and self._loop is not None:
            self._active_dirty = False
            self._loop.call_soon(self.publish_active)

    def _store_trouble(self, exc: sqlite3.Error) -> None:
        self.counters.store_errors += 1
        if self.counters.store_errors == 1:
            log.error(
                "alarm store %s: %s; alarm state may not survive a restart", self.store.path, exc
            )

    def active_doc(self) -> dict[str, Any]:
        """The retained document: every alarm not in the normal state, and the counters."""
        shown = [a for a in self.alarms.values() if a.status.state is not AlarmState.NORMAL]
        shown.sort(key=lambda a: (a.rule.priority or 4, a.status.since_ms, a.id))
        by_priority = {str(p): 0 for p in range(1, 5)}
        for a in shown:
            if a.status.active and not a.status.hidden:
                by_priority[str(a.rule.priority)] += 1
        return {
            "schema_version": SCHEMA_VERSION,
            "gateway": self.outlet.gateway,
            "ts_ms": self.wall_ms(),
            "alarms": [
                {**a.describe(), "chattering": a.id in self.counters.chattering} for a in shown
            ],
            "active_by_priority": by_priority,
            "counters": self.counters.as_dict(),
        }

    def summary(self) -> str:
        """One line for the live view: what is active, unacknowledged, hidden; the counters."""
        states = [a.status.state for a in self.alarms.values()]
        active = [a for a in self.alarms.values() if a.status.active and not a.status.hidden]
        by_priority = " ".join(
            f"p{p}={sum(1 for a in active if a.rule.priority == p)}" for p in range(1, 5)
        )
        c = self.counters
        unack = sum(s in (AlarmState.ACTIVE_UNACK, AlarmState.RTN_UNACK) for s in states)
        hidden = sum(s in (AlarmState.SHELVED, AlarmState.OUT_OF_SERVICE) for s in states)
        latched = sum(s is AlarmState.LATCHED for s in states)
        return (
            f"alarms: {len(active)} active ({by_priority}), {unack} unacked, {latched} latched, "
            f"{hidden} shelved/out of service; raised {c.raised}"
            f"{', FLOOD' if c.flood else ''}, chattering {len(c.chattering)}"
        )

    def publish_active(self) -> None:
        """Publish the active set, retained."""
        self.outlet.retain(ACTIVE_SUFFIX, self.active_doc())

    # -- commands ----------------------------------------------------------------------------

    def on_command(self, _topic: str, payload: bytes) -> dict[str, Any]:
        """One command from the broker: apply it, answer with the alarm's new state.

        A refused command is counted by reason (`refusals`, in metrics); only the first of
        a flood is logged in full, the rest in one summary line per minute. Its reply is
        dropped (and counted) while the broker is REFUSED_REPLY_BACKLOG messages behind.
        """
        self.counters.commands += 1
        command, refusal, request_id = parse_command(payload)
        reply: dict[str, Any] = {"request_id": request_id}
        if command is not None:
            reply.update(cmd=command.cmd, id=command.id)
            refusal = self._apply(command)
            alarm = self.alarms.get(command.id)
            if alarm is not None:
                reply["alarm"] = alarm.describe()
        reply["ok"] = refusal is None
        if refusal is not None:
            self.counters.refused += 1
            reply["error"] = refusal.error
            self.refusals.refused(
                refusal.reason, "alarm command refused: %s (%s)", refusal.error, shown(payload)
            )
            if self.sink.stats.pending >= REFUSED_REPLY_BACKLOG:
                self.replies_dropped += 1
                return reply
        self.sink.publish(f"{self.outlet.base_topic}/{REPLY_SUFFIX}", orjson.dumps(reply), qos=1)
        return reply

    def _apply(self, command: AlarmCommand) -> Refusal | None:
        alarm = self.alarms.get(command.id)
        if alarm is None:
            return Refusal("unknown_alarm", f"unknown alarm {command.id!r}")
        status = alarm.status
        now_ms = self.wall_ms()
        latch = alarm.rule.latch or False
        try:
            match command.cmd:
                case "ack":
                    transition = status.ack(now_ms=now_ms)
                    self.counters.acked += 1
                case "reset":
                    transition = status.reset(now_ms=now_ms)
                case "shelve":
                    assert command.duration_s is not None
                    if command.duration_s > self.config.shelve_max_s:
                        return Refusal(
                            "bad_field",
                            f"duration_s over alarms.shelve_max_s ({self.config.shelve_max_s:g})",
                        )
                    until = now_ms + int(command.duration_s * 1000)
                    transition = status.shelve(until, now_ms=now_ms)
                case "unshelve":
                    transition = status.unshelve(latch=latch, now_ms=now_ms)
                case "out_of_service":
                    transition = status.remove_from_service(now_ms=now_ms)
                case "in_service":
                    transition = status.return_to_service(latch=latch, now_ms=now_ms)
        except Refused as exc:
            return Refusal("not_allowed", str(exc))
        self._stage(alarm, transition, now_ms, operator=command.operator, comment=command.comment)
        self._commit()
        self._find_shelved()
        self._wake.set()  # a shelving to expire, or none any more
        return None

    def _find_shelved(self) -> None:
        self._shelved = frozenset(
            a for a in self.alarms.values() if a.status.shelved_until_ms is not None
        )

    # -- timers ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Open the store, take the stored states, re-send transitions a crash left behind."""
        self._loop = asyncio.get_running_loop()
        store = self.store
        store.open()
        stored = store.load()
        now = self._loop.time()
        for alarm in self.alarms.values():
            status = stored.pop(alarm.id, None)
            if status is not None:
                alarm.status = status
                alarm.delay.active = status.active
                if alarm.check is not None:
                    alarm.check.on = status.active
            alarm.last_good = now  # the stale clock starts now
        self._find_shelved()
        if stored:
            log.info("alarm store: forgetting %d alarms no longer configured", len(stored))
            store.forget(list(stored))
        next_seq = self.forwarder.next_seq()
        pending = store.pending()
        resent = 0
        for message in pending:
            if message.seq < next_seq:
                continue  # the outbox has it
            doc = orjson.loads(message.doc)
            doc["historical"] = True
            seq = self.outlet.send(message.suffix, doc, device=message.device)
            store.replace_pending(
                message.seq, PendingMessage(seq, message.suffix, message.device, message.doc)
            )
            resent += 1
        if pending:
            self.forwarder.flush()
            store.done(self.forwarder.next_seq() - 1)
        if resent:
            log.warning("alarm store: %d transitions were not in the outbox; sent now", resent)

    def tick(self, now: float | None = None) -> None:
        """Stale data, comm-loss delays, shelving expiry, the flood window (at loop time
        `now`, the loop's clock by default)."""
        loop = self._loop
        if loop is None:
            return
        self.ticks += 1
        if now is None:
            now = loop.time()
        now_ms = self.wall_ms()
        for alarm in self._timed:
            if alarm.rule.kind == "stale":
                self._condition(alarm, now - alarm.last_good >= alarm.stale_after_s, now, now_ms)
            elif alarm.delay.pending:
                self._condition(alarm, alarm.delay.update(alarm.raw, now), now, now_ms)
        for alarm in self._shelved:
            until = alarm.status.shelved_until_ms
            if until is not None and until <= now_ms:
                transition = alarm.status.unshelve(latch=alarm.rule.latch or False, now_ms=now_ms)
                self._stage(
                    alarm, transition, now_ms, operator="system", comment="shelving expired"
                )
                self._shelved = self._shelved - {alarm}
        before = (self.counters.flood, len(self.counters.chattering))
        self.windows.expire(now)
        if (self.counters.flood, len(self.counters.chattering)) != before:
            self._active_dirty = True
        if self._batch or self._active_dirty:
            self._commit()

    def next_due(self) -> float | None:
        """The earliest loop time a timed condition may change without a poll or command."""
        due = math.inf
        for alarm in self._timed:
            if alarm.rule.kind == "stale":
                if not alarm.status.active:
                    due = min(due, alarm.last_good + alarm.stale_after_s)
            elif (pending := alarm.delay.due) is not None:
                due = min(due, pending)
        if self._shelved and self._loop is not None:
            now = self._loop.time()
            now_ms = self.wall_ms()
            for alarm in self._shelved:
                until = alarm.status.shelved_until_ms
                if until is not None:
                    due = min(due, now + min(SHELVED_RECHECK_S, (until - now_ms) / 1000))
        expiry = self.windows.next_expiry()
        if expiry is not None:
            due = min(due, expiry)
        return None if due == math.inf else due

    def _wake_time(self, due: float, now: float) -> float:
        """`due` rounded up to the tick grid; a later grid point when that is not after
        `now` (a deadline already passed, or one a rounding error kept from resolving)."""
        tick = self.config.tick_s
        at = math.ceil(due / tick) * tick
        return at if at > now else next_multiple(now, tick)

    def _timer(self) -> None:
        self._timer_due = True
        self._wake.set()

    async def run(self) -> None:
        """Restore, subscribe to commands, then look at the timed conditions when one is
        due (see the module docstring) until cancelled."""
        self.restore()
        loop = asyncio.get_running_loop()
        try:
            self.sink.subscribe(f"{self.outlet.base_topic}/{CMD_SUFFIX}", self.on_command, qos=1)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._run_republish(), name="alarms:republish")
                while True:
                    await self._wait_due(loop)
        finally:
            self._wake_at = math.inf
            self.refusals.flush()
            self.store.close()

    async def _wait_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until the next deadline (or until woken by an earlier one); tick if due."""
        self._wake.clear()
        due = self.next_due()
        if due is None:
            self._wake_at = math.inf
            await self._wake.wait()
            return
        at = self._wake_at = self._wake_time(due, max(loop.time(), self._ticked_at))
        self._timer_due = False
        handle = loop.call_at(at, self._timer)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()
        if self._timer_due:
            # asyncio may run a timer up to its clock resolution early: it is `at` now.
            self._ticked_at = at
            self.tick(max(loop.time(), at))

    async def _run_republish(self) -> None:
        # Retained state may be gone after a broker restart without persistence.
        while True:
            await self.sink.wait_connected()
            self.publish_active()
            await self.sink.wait_disconnected()


def alarm_store_path(loaded: LoadedConfig) -> Path:
    """The alarm store, beside the outbox and named after it: outbox.alarms.sqlite."""
    outbox = loaded.path.parent / loaded.site.outbox.path
    return outbox.with_name(f"{outbox.stem}.alarms.sqlite")


def build_watches(loaded: LoadedConfig) -> list[DeviceWatch]:
    """The alarms of every enabled device; raises ConfigError for dangling references."""
    watches: list[DeviceWatch] = []
    issues: list[ConfigIssue] = []
    for index, setup in enumerate(loaded.devices):
        device = setup.device
        if not device.enabled:
            continue
        profile = setup.profile
        points = tuple(profile.points if profile is not None else device.points or ())
        profile_rules: tuple[DeviceAlarmRule, ...] = profile.alarms if profile is not None else ()
        device_rules: tuple[DeviceAlarmRule, ...] = device.alarms
        inline = setup.profile_name == "inline"
        found = reference_issues(points, profile_rules, device_rules, inline=inline)
        for loc, message in found:
            issues.append(
                ConfigIssue(loaded.path, None, format_loc(("devices", index, *loc)), message)
            )
        if found:
            continue
        name = device.name
        interval_s = device.interval_s
        rules: dict[str, list[AlarmRule]] = {}
        units: dict[str, str | None] = {}
        for p in points:
            units[p.name] = p.unit
            concrete = expand_rules(p.alarms)
            if concrete:
                rules[p.name] = concrete
        comm: list[AlarmRule] = []
        for device_rule in merged_device_rules(profile_rules, device_rules):
            for rule in device_rule.expand():
                if device_rule.point is None:
                    comm.append(rule)
                    continue
                mine = rules.setdefault(device_rule.point, [])
                mine[:] = [r for r in mine if r.name != rule.name] + [rule]
        if not rules and not comm:
            continue
        by_point: dict[str, list[Alarm]] = {}
        setpoints: dict[str, str] = {}
        for point, point_rules in rules.items():
            for rule in point_rules:
                alarm = _alarm(f"{name}/{point}/{rule.name}", name, point, rule, interval_s)
                alarm.unit = units.get(point)
                by_point.setdefault(point, []).append(alarm)
                if rule.setpoint is not None:
                    setpoints[alarm.id] = rule.setpoint
        comm_loss = [_alarm(f"{name}/{r.name}", name, None, r, interval_s) for r in comm]
        watches.append(DeviceWatch(name, by_point, setpoints, comm_loss))
    if issues:
        raise ConfigError(issues)
    return watches


def _alarm(
    alarm_id: str, device: str, point: str | None, rule: AlarmRule, interval_s: float
) -> Alarm:
    delay = Delay(rule.on_delay_s, rule.off_delay_s)
    if rule.kind == "stale":
        after_s = (rule.intervals or 3) * interval_s
        return Alarm(alarm_id, device, point, rule, None, delay, stale_after_s=after_s)
    return Alarm(alarm_id, device, point, rule, build_check(rule), delay)


def build_alarm_stages(
    loaded: LoadedConfig, outlet: Outlet, *, sink: MqttSink, forwarder: Forwarder
) -> list[Stage]:
    """The alarm stage of a site, or nothing when no device has an alarm rule."""
    watches = build_watches(loaded)
    if not watches:
        return []
    site = loaded.site
    store = AlarmStore(alarm_store_path(loaded), synchronous=site.outbox.synchronous)
    config: AlarmsConfig = site.alarms
    return [
        AlarmStage(
            watches, outlet=outlet, sink=sink, forwarder=forwarder, store=store, config=config
        )
    ]

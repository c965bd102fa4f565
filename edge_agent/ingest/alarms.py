"""Alarm transitions for the ingest: validation of `.../alarms` messages and their line protocol.

The alarm stage (edge_agent/alarms/stage.py) publishes one message per ISA-18.2 transition on
`{prefix}/{site}/{gateway}/alarms`. The ingest validates it completely (a bad one is a dead
letter, like a bad data message) and stores it:

- time-series store: one line per transition, measurement `{measurement}_alarm` (so
  VictoriaMetrics names the series `edge_alarm_state`, `edge_alarm_event`, ...):

      edge_alarm,alarm=high,device=boiler,gateway=gw-01,id=boiler/pressure/high,
          point=pressure,priority=3,site=plant-a state=1i,event=1i,active=1i,acked=0i,
          transition=1i,value=85.2 1764154930123

  Tags are configured names only (bounded); the message, operator and comment are free
  text and never tags (the embedded store keeps them). State and event are integer codes
  (STATE_CODES, EVENT_CODES) so a dashboard can threshold and count them.
- embedded store: one row per transition with every field (embedded_store.py).

Idempotent like readings: an alarm's transition is keyed by (site, gateway, id, ts_ms), so
a redelivered or replayed transition leaves one point / one row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.ingest.fields import boolean, integer, one_of, shown, timestamp
from edge_agent.ingest.schema import (
    NAME,
    QUALITY_CODES,
    SCHEMA_VERSION,
    Rejected,
    Source,
    json_object,
    shown_name,
    topic_levels,
)

ALARMS_TOPIC = "alarms"
# Codes for the time-series store; 0 is the only "nothing to show" state.
STATE_CODES: Mapping[str, int] = {
    "normal": 0,
    "active_unack": 1,
    "active_ack": 2,
    "rtn_unack": 3,
    "latched": 4,
    "shelved": 5,
    "out_of_service": 6,
}
EVENT_CODES: Mapping[str, int] = {
    "raise": 1,
    "clear": 2,
    "ack": 3,
    "reset": 4,
    "shelve": 5,
    "unshelve": 6,
    "out_of_service": 7,
    "in_service": 8,
}
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}){1,2}")
_TEXT_MAX = 2000  # message, comment: generous, but a runaway payload is a dead letter


@dataclass(frozen=True, slots=True)
class AlarmMessage:
    """A validated alarm transition (README "Safety alarms" for the meaning of each field)."""

    source: Source  # device from the payload
    seq: int
    ts_ms: int
    historical: bool
    id: str
    point: str | None
    alarm: str  # the rule's name
    kind: str
    priority: int
    event: str
    previous: str
    state: str
    active: bool
    acked: bool
    latched: bool
    transition: int
    value: float | int | bool | str | None
    unit: str | None
    quality: str
    message: str
    operator: str | None
    comment: str | None
    reason: str | None


def parse_alarm_topic(topic: str, prefix: str) -> Source | None:
    """`{prefix}/{site}/{gateway}/alarms` -> Source (device "" until the payload names it)."""
    parts = topic_levels(topic, prefix)
    if parts is None:
        return None
    if len(parts) == 3 and parts[2] == ALARMS_TOPIC:
        return Source(topic, parts[0], parts[1], "")
    return None


def decode_alarm(
    source: Source, payload: bytes, *, now_ms: int, max_future_ms: int
) -> AlarmMessage:
    """Validate one transition message completely; raises Rejected naming the first problem."""
    doc = json_object(payload, "an alarm message")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:
        raise Rejected("schema_version", f"schema_version {shown(version)}, expected 1")
    device = doc.get("device")
    for name in (source.site, source.gateway):
        if NAME.fullmatch(name) is None:
            raise Rejected("topic_mismatch", f"topic level {shown_name(name)} is not a valid name")
    if doc.get("gateway") != source.gateway:
        raise Rejected(
            "topic_mismatch",
            f"message says gateway {shown(doc.get('gateway'))}, topic says {source.gateway!r}",
        )
    if type(device) is not str or NAME.fullmatch(device) is None:
        raise Rejected("bad_field", f"device {shown(device)} is not a valid name")
    seq = integer(doc, "seq", low=1)
    ts_ms = timestamp(doc, "ts_ms", now_ms=now_ms, max_future_ms=max_future_ms)
    alarm_id = doc.get("id")
    if type(alarm_id) is not str or _ID.fullmatch(alarm_id) is None:
        raise Rejected("bad_field", f"id {shown(alarm_id)} is not device/point/name")
    if not alarm_id.startswith(device + "/"):
        raise Rejected("bad_field", f"id {alarm_id!r} is not an alarm of device {device!r}")
    point = doc.get("point")
    if point is not None and (type(point) is not str or NAME.fullmatch(point) is None):
        raise Rejected("bad_field", f"point {shown(point)} is not a valid name")
    alarm = _name(doc, "alarm")
    if alarm_id != "/".join(p for p in (device, point, alarm) if p is not None):
        raise Rejected("bad_field", f"id {alarm_id!r} does not match device, point and alarm")
    value = doc.get("value")
    if value is not None and not isinstance(value, float | int | bool | str):
        raise Rejected("bad_value", f"value {shown(value)}")
    quality = doc.get("quality")
    if type(quality) is not str or quality not in QUALITY_CODES:
        raise Rejected("bad_field", f"quality {shown(quality)}")
    unit = _text(doc, "unit", limit=32)
    if unit is not None and not unit.isprintable():
        raise Rejected("bad_field", f"unit {shown(unit)}")
    message = _text(doc, "message")
    if message is None:
        raise Rejected("bad_field", "message must be a string")
    return AlarmMessage(
        source=Source(source.topic, source.site, source.gateway, device),
        seq=seq,
        ts_ms=ts_ms,
        historical=boolean(doc, "historical"),
        id=alarm_id,
        point=point,
        alarm=alarm,
        kind=_name(doc, "kind"),
        priority=integer(doc, "priority", low=1, high=4),
        event=one_of(doc, "event", EVENT_CODES),
        previous=one_of(doc, "previous", STATE_CODES),
        state=one_of(doc, "state", STATE_CODES),
        active=boolean(doc, "active"),
        acked=boolean(doc, "acked"),
        latched=boolean(doc, "latched"),
        transition=integer(doc, "transition", low=1),
        value=value,
        unit=unit,
        quality=quality,
        message=message,
        operator=_text(doc, "operator", limit=64),
        comment=_text(doc, "comment"),
        reason=_text(doc, "reason"),
    )


def _name(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if type(value) is not str or NAME.fullmatch(value) is None:
        raise Rejected("bad_field", f"{key} {shown(value)} is not a valid name")
    return value


def _text(doc: dict[str, object], key: str, *, limit: int = _TEXT_MAX) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not str or len(value) > limit:
        raise Rejected("bad_field", f"{key} must be a string of at most {limit} characters")
    return value


def alarm_line(message: AlarmMessage, measurement: str = "edge") -> str:
    """One line of line protocol for a transition (module docstring); tags sorted by key."""
    s = message.source
    tags = f"alarm={message.alarm},device={s.device},gateway={s.gateway},id={message.id}"
    if message.point is not None:
        tags += f",point={message.point}"
    tags += f",priority={message.priority},site={s.site}"
    fields = (
        f"state={STATE_CODES[message.state]}i,event={EVENT_CODES[message.event]}i,"
        f"active={int(message.active)}i,acked={int(message.acked)}i,"
        f"transition={message.transition}i"
    )
    value = message.value
    if type(value) is bool:
        fields += f",value={int(value)}"
    elif type(value) is int or type(value) is float:
        fields += f",value={float(value)!r}"
    return f"{measurement}_alarm,{tags} {fields} {message.ts_ms}"

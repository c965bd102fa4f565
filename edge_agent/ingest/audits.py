"""Write audits for the ingest: validation of `.../{device}/cmd/audit` messages and their rows.

The command path (edge_agent/commands/service.py) records every write request twice
through the outbox, on `{prefix}/{site}/{gateway}/{device}/cmd/audit`: an `event:
"request"` when it arrives and an `event: "result"` with what became of it (the command
contract's JSON Schema, `#/$defs/audit`). The ingest validates each one completely (a bad
one is a dead letter, like a bad data message) and stores it, replays (`historical:
true`) included:

- time-series store: one line per audit message, measurement `{measurement}_command` (so
  VictoriaMetrics names the series `edge_command_value`, `edge_command_new_value`, ...):

      edge_command,code=out_of_range,device=plc-1,event=result,gateway=gw-01,point=flow_sp,
          result=rejected,site=plant-a,who=li.wei value=60,old_value=42.5,
          received_ms=1764154930101i,executed_ms=...i 1764154930123

  Tags are bounded: `device` a device the ingest knows (else the message is a dead letter,
  `not_configured`), `point` only when it is one of that device's points (a request for a
  point that does not exist is stored without it), `event`, `result` and `code` from
  fixed lists, `who` (the request's `by`) only while the worker has seen fewer than
  WHO_TAGS_MAX distinct ones (then `_other`). Numbers and booleans (as 0/1) are fields;
  text (the request id, the reason, a text value) only goes to stores that keep text.
- embedded store: one row per audit message with every field (embedded_store.py,
  table `command_audit`).

Idempotent like readings: an audit message is keyed by (site, gateway, seq, ts_ms) in the
embedded store and by its tags and ts_ms in the time-series store, so a redelivered or
replayed one leaves one point / one row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge_agent.ingest.fields import boolean, integer, one_of, shown, timestamp
from edge_agent.ingest.schema import (
    NAME,
    Rejected,
    Source,
    escape_tag,
    json_object,
    shown_name,
    topic_levels,
)

AUDIT_SUFFIX = "cmd/audit"
EVENTS = ("request", "result")
RESULTS = ("done", "rejected", "failed")
# The rejection codes of the command contract (edge_agent/commands/request.py REJECTIONS);
# anything else is not a tag value the ingest accepts.
CODES = frozenset(
    {
        "bad_request",
        "writes_disabled",
        "unknown_device",
        "unknown_point",
        "not_writable",
        "wrong_type",
        "out_of_range",
        "expired",
        "rate_limited",
        "device_down",
    }
)
WHO_TAGS_MAX = 256  # distinct `who` tag values one worker writes; later ones are "_other"
WHO_OTHER = "_other"
_TEXT_MAX = 2000  # reason: generous, but a runaway payload is a dead letter
_SHORT_MAX = 250  # id, point, by, text values: the request's own bounds (commands/request.py)
AuditValue = bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class AuditMessage:
    """A validated audit message (README "Writes" for the meaning of each field)."""

    source: Source  # device from the payload, which must match the topic's
    seq: int
    ts_ms: int
    historical: bool
    event: str
    id: str
    point: str
    value: AuditValue  # asked for
    by: str | None
    received_ms: int
    result: str | None = None  # the rest: only on event "result"
    reason: str | None = None
    code: str | None = None
    old_value: AuditValue = None
    new_value: AuditValue = None
    executed_ms: int | None = None
    # Set by the ingest (service.py) once it knows the names: whether `point` is a tag,
    # and the `who` tag value (WhoTags).
    point_tag: bool = False
    who_tag: str | None = None


def parse_audit_topic(topic: str, prefix: str) -> Source | None:
    """`{prefix}/{site}/{gateway}/{device}/cmd/audit` -> Source; None for other topics."""
    parts = topic_levels(topic, prefix)
    if parts is None:
        return None
    if len(parts) == 5 and parts[3] == "cmd" and parts[4] == "audit":
        return Source(topic, parts[0], parts[1], parts[2])
    return None


def decode_audit(
    source: Source, payload: bytes, *, now_ms: int, max_future_ms: int
) -> AuditMessage:
    """Validate one audit message completely; raises Rejected naming the first problem."""
    doc = json_object(payload, "an audit message")
    for name in (source.site, source.gateway, source.device):
        if NAME.fullmatch(name) is None:
            raise Rejected("topic_mismatch", f"topic level {shown_name(name)} is not a valid name")
    if doc.get("gateway") != source.gateway:
        raise Rejected(
            "topic_mismatch",
            f"message says gateway {shown(doc.get('gateway'))}, topic says {source.gateway!r}",
        )
    if doc.get("device") != source.device:
        raise Rejected(
            "topic_mismatch",
            f"message says device {shown(doc.get('device'))}, topic says {source.device!r}",
        )
    seq = integer(doc, "seq", low=1)
    ts_ms = timestamp(doc, "ts_ms", now_ms=now_ms, max_future_ms=max_future_ms)
    event = one_of(doc, "event", EVENTS)
    point = _text(doc, "point", limit=_SHORT_MAX)
    if point is None:
        raise Rejected("bad_field", "point must be a string")
    request_id = _text(doc, "id", limit=_SHORT_MAX)
    if request_id is None:
        raise Rejected("bad_field", "id must be a string")
    message = AuditMessage(
        source=source,
        seq=seq,
        ts_ms=ts_ms,
        historical=boolean(doc, "historical"),
        event=event,
        id=request_id,
        point=point,
        value=_value(doc, "value"),
        by=_text(doc, "by", limit=64),
        received_ms=timestamp(doc, "received_ms", now_ms=now_ms, max_future_ms=max_future_ms),
    )
    if event == "request":
        return message
    code = doc.get("code")
    if code is not None and (type(code) is not str or code not in CODES):
        raise Rejected("bad_field", f"code {shown(code)} is not a rejection code")
    executed = doc.get("executed_ms")
    return replace(
        message,
        result=one_of(doc, "result", RESULTS),
        reason=_text(doc, "reason"),
        code=code,
        old_value=_value(doc, "old_value"),
        new_value=_value(doc, "new_value"),
        executed_ms=None
        if executed is None
        else timestamp(doc, "executed_ms", now_ms=now_ms, max_future_ms=max_future_ms),
    )


def audit_line(message: AuditMessage, measurement: str = "edge") -> str:
    """One line of line protocol (module docstring); tags sorted by key."""
    s = message.source
    tags = ""
    if message.code is not None:
        tags += f",code={message.code}"
    tags += f",device={s.device},event={message.event},gateway={s.gateway}"
    if message.point_tag:
        tags += f",point={message.point}"
    if message.result is not None:
        tags += f",result={message.result}"
    tags += f",site={s.site}"
    if message.who_tag is not None:
        tags += f",who={escape_tag(message.who_tag)}"
    fields = [f"received_ms={message.received_ms}i"]
    for key in ("value", "old_value", "new_value"):
        number = _number(getattr(message, key))
        if number is not None:
            fields.append(f"{key}={number!r}")
    if message.executed_ms is not None:
        fields.append(f"executed_ms={message.executed_ms}i")
    return f"{measurement}_command{tags} {','.join(fields)} {message.ts_ms}"


class WhoTags:
    """The `who` tag values one worker has written: at most WHO_TAGS_MAX distinct ones."""

    def __init__(self, limit: int = WHO_TAGS_MAX) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self.folded = 0  # audits whose `who` was written as WHO_OTHER

    def tag(self, by: str | None) -> str | None:
        """The tag value for `by`: itself while there is room, then WHO_OTHER."""
        if by is None:
            return None
        if by in self._seen:
            return by
        if len(self._seen) < self.limit:
            self._seen.add(by)
            return by
        self.folded += 1
        return WHO_OTHER


def stored_value(value: AuditValue) -> tuple[float | None, str | None]:
    """(number, text) of a value for a store's columns: booleans as 0/1, text as text."""
    number = _number(value)
    if number is not None:
        return number, None
    return None, value if isinstance(value, str) else None


def _number(value: AuditValue) -> float | None:
    if type(value) is bool:
        return float(value)
    if type(value) is int or type(value) is float:
        return float(value)
    return None


def _text(doc: dict[str, object], key: str, *, limit: int = _TEXT_MAX) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not str or len(value) > limit or not value.isprintable():
        raise Rejected("bad_field", f"{key} must be printable text of at most {limit} characters")
    return value


def _value(doc: dict[str, object], key: str) -> AuditValue:
    value = doc.get(key)
    if value is None or type(value) in (bool, int, float):
        return value  # type: ignore[return-value]
    if type(value) is str and len(value) <= _SHORT_MAX:
        return value
    raise Rejected("bad_value", f"{key} {shown(value)}")

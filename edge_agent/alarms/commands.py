"""Operator commands on `{prefix}/{site}/{gateway}/alarms/cmd`, and their replies.

A command is one JSON object:

    {"cmd": "ack", "id": "boiler-1/pressure/high", "operator": "li.wei",
     "comment": "valve checked", "request_id": "c-42"}

    cmd          ack | reset | shelve | unshelve | out_of_service | in_service
    id           the alarm: {device}/{point}/{name}, or {device}/{name} for device alarms
    operator     who (required; recorded in the transition message)
    comment      why (required for shelve and out_of_service)
    duration_s   shelve only: how long (at most alarms.shelve_max_s)
    request_id   optional; copied into the reply so a client can match it

The reply (on `.../alarms/cmd/reply`) is {"request_id", "ok", "cmd", "id", "alarm": the
alarm's new state} or {"request_id", "ok": false, "error": "..."}.

Commands come from the network, so they are bounded and strictly typed: a payload of at
most MAX_COMMAND_BYTES; `id`, `operator` and `request_id` printable and at most 200, 64
and 100 characters, `comment` at most 500; `duration_s` a JSON number (not true/false, not
"10") from SHELVE_MIN_S up to alarms.shelve_max_s. A refusal names the field and the
limit and never echoes more than a bounded prefix of what was sent (an overlong
`request_id` comes back cut to 100 characters). Each refusal has a `reason` from
REFUSAL_REASONS, the label it is counted under in metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

CommandName = Literal["ack", "reset", "shelve", "unshelve", "out_of_service", "in_service"]

MAX_COMMAND_BYTES = 4096  # a command is a few hundred bytes; anything larger is refused unread
REQUEST_ID_MAX = 100
SHELVE_MIN_S = 1.0  # the stage checks shelving every tick_s; less than a second means nothing
SHOWN_MAX = 40  # characters of a sent name (e.g. an unknown key) quoted in a refusal
# Why a command was refused: the label of edge_agent_alarm_command_refusals.
REFUSAL_REASONS = (
    "too_large",  # payload over MAX_COMMAND_BYTES
    "not_json",
    "not_object",
    "too_long",  # a field over its length limit
    "bad_field",  # missing, unknown, wrong type or out of range
    "unknown_alarm",
    "not_allowed",  # the alarm's state does not allow it (nothing to acknowledge, ...)
)


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must be printable text (no control characters)")
    return text


Printable = AfterValidator(_printable)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is refused: a bounded `reason` (metric label) and the reply's text."""

    reason: str
    error: str


class AlarmCommand(BaseModel):
    """One operator command."""

    # strict: no true/false or "10" for a number, no number for a string.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cmd: CommandName
    id: Annotated[str, Field(min_length=1, max_length=200), Printable]
    operator: Annotated[str, Field(min_length=1, max_length=64), Printable]
    comment: Annotated[str, Field(max_length=500)] | None = None
    duration_s: Annotated[float, Field(ge=SHELVE_MIN_S, allow_inf_nan=False)] | None = None
    request_id: Annotated[str, Field(max_length=REQUEST_ID_MAX), Printable] | None = None

    @model_validator(mode="after")
    def _complete(self) -> AlarmCommand:
        if self.cmd == "shelve" and self.duration_s is None:
            raise ValueError("shelve needs duration_s")
        if self.cmd != "shelve" and self.duration_s is not None:
            raise ValueError(f"duration_s does not apply to {self.cmd}")
        if self.cmd in ("shelve", "out_of_service") and not (self.comment or "").strip():
            raise ValueError(f"{self.cmd} needs a comment (the reason)")
        return self


def parse_command(payload: bytes) -> tuple[AlarmCommand | None, Refusal | None, str | None]:
    """(command, None, request_id) or (None, refusal, request_id or its bounded prefix)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return (
            None,
            Refusal(
                "too_large",
                f"a command of {len(payload):,} bytes is over the limit of {MAX_COMMAND_BYTES}",
            ),
            None,
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return None, Refusal("not_json", f"not JSON: {_cut(str(exc), 80)}"), None
    if not isinstance(doc, dict):
        return None, Refusal("not_object", "a command is a JSON object"), None
    raw_id = doc.get("request_id")
    request_id = raw_id[:REQUEST_ID_MAX] if isinstance(raw_id, str) else None
    try:
        return AlarmCommand.model_validate(doc), None, request_id
    except ValidationError as exc:
        return None, _refusal(exc.errors()[0]), request_id


def _refusal(error: ErrorDetails) -> Refusal:
    """The first validation error as a refusal that quotes nothing unbounded."""
    where = _cut(".".join(str(p) for p in error["loc"]), SHOWN_MAX)
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif where == "duration_s" and kind in ("float_type", "float_parsing", "finite_number"):
        message = "a number of seconds (not a string, not true/false)"
    text = f"{where}: {message}" if where else message
    return Refusal("too_long" if kind == "string_too_long" else "bad_field", text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"

"""A write request from `{prefix}/{site}/{gateway}/{device}/cmd`, and the words of its reply.

    {"id": "c-1", "point": "flow_setpoint", "value": 42.5, "expires_s": 10}

    id         the client's name for the request (printable, at most 100 characters),
               copied into the reply so the client can match it
    point      the point to write (a point with `write:` in the config)
    value      true/false, a number, or text: what the point's type takes
    expires_s  optional: not executed this long after it arrived (default writes.expires_s,
               at most writes.max_expires_s)
    by         optional: who asks (an operator's name), recorded in the audit message

The reply, on `.../{device}/cmd/reply`:

    {"id": "c-1", "result": "done", "value": 42.5}                       # the value read back
    {"id": "c-2", "result": "rejected", "reason": "above max 50", "code": "out_of_range"}
    {"id": "c-3", "result": "failed", "reason": "exception 02 (illegal data address)"}

Requests come from the network, so they are bounded and strictly typed like the alarm
commands (edge_agent/alarms/commands.py): at most MAX_REQUEST_BYTES, no unknown fields,
no "42" for a number; a refusal names the field and never echoes more than a bounded
prefix of what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from edge_agent.alarms.commands import REQUEST_ID_MAX, Printable

MAX_REQUEST_BYTES = 4096
Result = Literal["done", "rejected", "failed"]
# Why a request was rejected: the `code` of its reply and the label it is counted under.
REJECTIONS = (
    "bad_request",  # not JSON, not an object, a field missing, unknown or of the wrong type
    "writes_disabled",  # the site file has no `writes: {enabled: true}`
    "unknown_device",  # no device of that name is polled by this gateway
    "unknown_point",
    "not_writable",  # the point has no `write:`, or its protocol cannot write
    "wrong_type",  # a value of another type, or one the register cannot hold exactly
    "out_of_range",  # outside the point's write limits or its type's range
    "expired",  # not executed before its expiry
    "rate_limited",  # the point's writes per minute, or the line's queue, are used up
    "device_down",  # the device is not answering: the write was not tried
)


class WriteRequest(BaseModel):
    """One request to write one point."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, Field(min_length=1, max_length=REQUEST_ID_MAX), Printable]
    point: Annotated[str, Field(min_length=1, max_length=64), Printable]
    value: StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=250)]
    expires_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    by: Annotated[str, Field(min_length=1, max_length=64), Printable] | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is not executed: `code` from REJECTIONS, `reason` for people."""

    code: str
    reason: str


def parse_request(payload: bytes) -> tuple[WriteRequest | None, Rejection | None, str | None]:
    """(request, None, id) or (None, rejection, the id's bounded prefix if one was sent)."""
    if len(payload) > MAX_REQUEST_BYTES:
        reason = f"a request of {len(payload):,} bytes is over the limit of {MAX_REQUEST_BYTES}"
        return None, Rejection("bad_request", reason), None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, Rejection("bad_request", "not JSON"), None
    if not isinstance(doc, dict):
        return None, Rejection("bad_request", "a request is a JSON object"), None
    raw_id = doc.get("id")
    request_id = raw_id[:REQUEST_ID_MAX] if isinstance(raw_id, str) else None
    try:
        return WriteRequest.model_validate(doc), None, request_id
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"][:1])[:40]
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif where == "value":
            message = "true/false, a number or text (at most 250 characters)"
        elif where == "expires_s" and kind != "greater_than":
            message = "a number of seconds (not a string, not true/false)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        return (
            None,
            Rejection("bad_request", f"{where}: {message}" if where else message),
            (request_id),
        )

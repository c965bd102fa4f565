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
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CommandName = Literal["ack", "reset", "shelve", "unshelve", "out_of_service", "in_service"]


class AlarmCommand(BaseModel):
    """One operator command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd: CommandName
    id: Annotated[str, Field(min_length=1, max_length=200)]
    operator: Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=500)] | None = None
    duration_s: Annotated[float, Field(gt=0)] | None = None
    request_id: Annotated[str, Field(max_length=100)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> AlarmCommand:
        if self.cmd == "shelve" and self.duration_s is None:
            raise ValueError("shelve needs duration_s")
        if self.cmd != "shelve" and self.duration_s is not None:
            raise ValueError(f"duration_s does not apply to {self.cmd}")
        if self.cmd in ("shelve", "out_of_service") and not (self.comment or "").strip():
            raise ValueError(f"{self.cmd} needs a comment (the reason)")
        return self


def parse_command(payload: bytes) -> tuple[AlarmCommand | None, str | None, str | None]:
    """(command, None, request_id) or (None, error text, request_id if one was readable)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}", None
    if not isinstance(doc, dict):
        return None, "a command is a JSON object", None
    request_id = doc.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    try:
        return AlarmCommand.model_validate(doc), None, request_id
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        return None, f"{where}: {message}" if where else message, request_id

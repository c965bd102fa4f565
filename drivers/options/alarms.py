"""`alarms:` on a point: the safety stage's rules for it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AlarmRule(BaseModel):
    """One alarm rule of a point (limits, rate of change, state, stale data...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""`report:` on a point (or as a device/profile default): report-by-exception settings.

    report: {deadband_pct: 0.5, max_interval_s: 300}              # device or profile default
    report: {deadband: 0.2}                                       # absolute, in the unit
    report: {deadband_pct: 1, span: [0, 400]}                     # 1 % of 0..400 = 4.0
    report: {min_interval_s: 10, max_interval_s: 60}
    report: {max_interval_s: 0}                                   # every poll (opt out)

Levels merge key by key, the most specific winning: point, then device, then profile.
A key given at a level counts even when it repeats the default (`deadband: null` on a
point switches off a device's deadband for it). A point with no `report:` at any level is
published on every poll, as without report by exception.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.config_numbers import Number, Seconds, Tick, Whole

DEFAULT_MAX_INTERVAL_S = 300.0


class ReportOptions(BaseModel):
    """When a point's value is worth sending up again.

    A numeric value goes up when it moved by more than the deadband since the value last
    published; with both deadbands given, by more than the larger of the two. Booleans and
    strings go up on any change. Nothing goes up sooner than `min_interval_s` after the
    last publication, except a change of quality or reason, which always goes up at once;
    and every point goes up at least every `max_interval_s` (the heartbeat).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    deadband: Annotated[Number, Field(ge=0.0)] | None = None  # absolute, in the point's unit
    deadband_pct: Annotated[Number, Field(ge=0.0, le=100.0)] | None = None
    # [low, high]: deadband_pct is a percent of high - low; without it, of the last
    # published value (so 1 % of 230 V is 2.3 V).
    span: tuple[Number, Number] | None = None
    min_interval_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] = 0.0
    max_interval_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] = DEFAULT_MAX_INTERVAL_S

    @model_validator(mode="after")
    def _consistent(self) -> ReportOptions:
        if self.span is not None and not self.span[1] > self.span[0]:
            raise ValueError(f"span [{self.span[0]}, {self.span[1]}]: high must exceed low")
        both = {"min_interval_s", "max_interval_s"} <= self.model_fields_set
        if both and self.max_interval_s and self.min_interval_s > self.max_interval_s:
            raise ValueError(
                f"min_interval_s {self.min_interval_s} exceeds the heartbeat max_interval_s "
                f"{self.max_interval_s}"
            )
        return self


def merge_report(*levels: ReportOptions | None) -> ReportOptions | None:
    """One point's effective options from its levels, most specific first (None: no RBE)."""
    given = [level for level in levels if level is not None]
    if not given:
        return None
    if len(given) == 1:
        return given[0]
    merged: dict[str, Any] = {}
    for level in reversed(given):  # least specific first, so later levels override
        merged.update({key: getattr(level, key) for key in level.model_fields_set})
    # Levels were valid on their own; their mix is taken as given (the heartbeat wins a
    # min_interval_s above it, see the filter).
    return ReportOptions.model_construct(_fields_set=set(merged), **merged)


class BatchOptions(BaseModel):
    """`batch:` on a device: several of its polls in one data message (schema v2).

    A batch goes up when it holds `max_polls` polls, would grow past `max_bytes`, or its
    oldest poll is `max_age_s` old, and at once when a reading's quality or reason
    changes. Each poll keeps its own timestamp. Polls wait in memory, not in the outbox,
    until their batch goes up: a crash loses at most `max_age_s` of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_polls: Annotated[Whole, Field(ge=1, le=10_000)] = 60
    max_age_s: Annotated[Tick, Field(le=3600.0)] = 60.0
    max_bytes: Annotated[Whole, Field(ge=256, le=256 * 1024 * 1024)] = 65_536

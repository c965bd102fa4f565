"""`alarms:` rules: on a point, or on a device or profile (comm loss, rules for named points).

One rule is one alarm (ISA-18.2: each alarm has its own state), so a pressure with a high
and a high-high limit carries two rules. Kinds:

    high_high, high      active at x >= limit, clears at x < limit - deadband
    low, low_low         active at x <= limit, clears at x > limit + deadband
    rate_of_change       the value moved by >= limit within period_s (direction up/down/both)
    state                the value equals `value` (a bit, or one of several enum values)
    deviation            |x - setpoint| >= limit, `setpoint` a point of the same device
    stale                no good reading of the point for `intervals` poll intervals
    comm_loss            (device level only) a poll with no readable point at all

Presets expand to several rules (GB/T 50493-2019 gas detection set-points; a preset's
levels may be set lower than the standard's maximum, never higher):

    gas_lel     combustible gas in %LEL: level 1 (lel_1) at 25, level 2 (lel_2) at 50
    gas_toxic   toxic gas: level 1 (toxic_1) at 100 % OEL, level 2 (toxic_2) at 200 % OEL;
                `oel` is the occupational exposure limit in the point's unit

Priority 1 is the most urgent, 4 the least. `message` may use {device}, {point}, {value},
{limit} and {unit}. The models only hold configuration; edge_agent/alarm_*.py acts on it.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from drivers.config_numbers import Number, Seconds, Whole
from drivers.names import NAME_PATTERN

AlarmKind = Literal[
    "high_high",
    "high",
    "low",
    "low_low",
    "rate_of_change",
    "state",
    "deviation",
    "stale",
    "comm_loss",
]
LIMIT_KINDS = frozenset({"high_high", "high", "low", "low_low"})
PresetName = Literal["gas_lel", "gas_toxic"]
StateValue = bool | int | str

# GB/T 50493-2019: combustible level 1 <= 25 %LEL, level 2 <= 50 %LEL; toxic level 1 <=
# 100 % OEL, level 2 <= 200 % OEL (reference/safety.md §5.3, a secondary source).
GAS_LEL_LEVELS = (25.0, 50.0)
GAS_TOXIC_FACTORS = (1.0, 2.0)

DEFAULT_PRIORITY: dict[str, int] = {
    "high_high": 2,
    "low_low": 2,
    "high": 3,
    "low": 3,
    "rate_of_change": 3,
    "state": 3,
    "deviation": 3,
    "stale": 4,
    "comm_loss": 3,
}
_PLACEHOLDERS = frozenset({"device", "point", "value", "limit", "unit"})

# Which optional keys each kind takes (beyond name, priority, message, latch).
_KEYS: dict[str, frozenset[str]] = {
    **dict.fromkeys(LIMIT_KINDS, frozenset({"limit", "deadband", "on_delay_s", "off_delay_s"})),
    "rate_of_change": frozenset(
        {"limit", "period_s", "direction", "deadband", "on_delay_s", "off_delay_s"}
    ),
    "state": frozenset({"value", "on_delay_s", "off_delay_s"}),
    "deviation": frozenset(
        {"setpoint", "limit", "direction", "deadband", "on_delay_s", "off_delay_s"}
    ),
    "stale": frozenset({"intervals"}),
    "comm_loss": frozenset({"on_delay_s", "off_delay_s"}),
    "gas_lel": frozenset({"level1", "level2", "deadband", "on_delay_s", "off_delay_s"}),
    "gas_toxic": frozenset({"oel", "level1", "level2", "deadband", "on_delay_s", "off_delay_s"}),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(LIMIT_KINDS, ("limit",)),
    "rate_of_change": ("limit", "period_s"),
    "state": ("value",),
    "deviation": ("setpoint", "limit"),
    "gas_toxic": ("oel",),
}
_COMMON = frozenset({"kind", "preset", "name", "priority", "message", "latch", "point"})


class _RuleFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AlarmKind | None = None
    preset: PresetName | None = None
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=32)] | None = None
    priority: Annotated[Whole, Field(ge=1, le=4)] | None = None
    message: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    latch: bool | None = None  # stays annunciated after return to normal until a reset
    limit: Number | None = None
    deadband: Annotated[Number, Field(ge=0.0)] = 0.0
    on_delay_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] = 0.0
    off_delay_s: Annotated[Seconds, Field(ge=0.0, le=86400.0)] = 0.0
    period_s: Annotated[Seconds, Field(gt=0.0, le=86400.0)] | None = None
    direction: Literal["up", "down", "both"] | None = None
    value: StateValue | tuple[StateValue, ...] | None = None
    setpoint: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None
    intervals: Annotated[Whole, Field(ge=1, le=100_000)] | None = None
    oel: Annotated[Number, Field(gt=0.0)] | None = None
    level1: Annotated[Number, Field(gt=0.0)] | None = None
    level2: Annotated[Number, Field(gt=0.0)] | None = None

    def _check(self, *, device_level: bool) -> None:
        if (self.kind is None) == (self.preset is None):
            raise ValueError("give exactly one of kind or preset")
        what = self.kind or self.preset
        assert what is not None
        if what == "comm_loss" and not device_level:
            raise ValueError(
                "comm_loss is a device alarm: put it under the device's (or profile's) alarms"
            )
        given = {k for k in self.model_fields_set if k not in _COMMON}
        foreign = sorted(given - _KEYS[what])
        if foreign:
            raise ValueError(f"{', '.join(foreign)} does not apply to {what}")
        missing = [k for k in _REQUIRED.get(what, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{what} needs {' and '.join(missing)}")
        if self.preset is not None and (self.name or self.priority or self.message):
            raise ValueError("a preset names its own alarms: name, priority, message do not apply")
        if self.kind in ("rate_of_change", "deviation") and self.limit is not None:
            if self.limit <= 0:
                raise ValueError(f"limit of {self.kind} must be > 0")
            if self.deadband >= self.limit:
                raise ValueError("deadband must be smaller than limit")
        if self.kind == "state" and isinstance(self.value, tuple) and not self.value:
            raise ValueError("value needs at least one entry")
        if self.message is not None:
            _check_message(self.message)
        if self.preset is not None:
            _check_levels(self)

    def expand(self) -> tuple[AlarmRule, ...]:
        """The concrete rules: a preset's levels, or the rule itself with defaults applied."""
        if self.preset is None:
            assert self.kind is not None
            return (
                AlarmRule.model_construct(
                    **{
                        **{k: v for k, v in self if k != "point"},
                        "name": self.name or self.kind,
                        "priority": self.priority or DEFAULT_PRIORITY[self.kind],
                        "latch": bool(self.latch),
                    }
                ),
            )
        level1, level2 = preset_levels(self)
        tag = "lel" if self.preset == "gas_lel" else "toxic"
        what = "combustible gas" if tag == "lel" else "toxic gas"
        common = {
            "deadband": self.deadband,
            "on_delay_s": self.on_delay_s,
            "off_delay_s": self.off_delay_s,
            # Gas alarms stay annunciated until an operator resets them, unless configured.
            "latch": True if self.latch is None else self.latch,
        }
        return (
            _concrete("high", f"{tag}_1", 2, level1, f"{what} level 1: {{value}} {{unit}}", common),
            _concrete(
                "high_high", f"{tag}_2", 1, level2, f"{what} level 2: {{value}} {{unit}}", common
            ),
        )


def _concrete(
    kind: AlarmKind, name: str, priority: int, limit: float, message: str, common: dict[str, Any]
) -> AlarmRule:
    return AlarmRule.model_construct(
        kind=kind, name=name, priority=priority, limit=limit, message=message, **common
    )


def preset_levels(rule: _RuleFields) -> tuple[float, float]:
    """A preset's (level 1, level 2) limits in the point's unit."""
    if rule.preset == "gas_lel":
        top1, top2 = GAS_LEL_LEVELS
    else:
        assert rule.oel is not None
        top1, top2 = (rule.oel * f for f in GAS_TOXIC_FACTORS)
    return (rule.level1 or top1, rule.level2 or top2)


def _check_levels(rule: _RuleFields) -> None:
    level1, level2 = preset_levels(rule)
    if rule.preset == "gas_lel":
        top1, top2 = GAS_LEL_LEVELS
        unit = " %LEL"
    else:
        assert rule.oel is not None
        top1, top2 = (rule.oel * f for f in GAS_TOXIC_FACTORS)
        unit = f" (100/200 % of oel {rule.oel:g})"
    if level1 > top1 or level2 > top2:
        raise ValueError(
            f"GB/T 50493-2019 allows level 1 <= {top1:g} and level 2 <= {top2:g}{unit}; "
            f"got {level1:g} and {level2:g}"
        )
    if level1 >= level2:
        raise ValueError(f"level1 ({level1:g}) must be below level2 ({level2:g})")


def _check_message(message: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(message) if f is not None}
    except ValueError as exc:
        raise ValueError(f"message: {exc}") from None
    unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in _PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"message: unknown placeholder {{{unknown[0]}}} "
            f"(use {', '.join('{' + p + '}' for p in sorted(_PLACEHOLDERS))})"
        )


class AlarmRule(_RuleFields):
    """One alarm rule of a point (limits, rate of change, state, deviation, stale, preset)."""

    @model_validator(mode="after")
    def _valid(self) -> AlarmRule:
        self._check(device_level=False)
        return self


class DeviceAlarmRule(_RuleFields):
    """A rule under a device's or profile's `alarms:`: comm_loss, or a rule for `point`."""

    point: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> DeviceAlarmRule:
        self._check(device_level=True)
        if self.kind == "comm_loss" and self.point is not None:
            raise ValueError("comm_loss is about the whole device: point does not apply")
        if self.kind != "comm_loss" and self.point is None:
            raise ValueError(f"{self.kind or self.preset} needs point (which point it watches)")
        return self


def _distinct(rules: tuple[Any, ...]) -> tuple[Any, ...]:
    seen: set[tuple[str | None, str]] = set()
    for rule in rules:
        for concrete in rule.expand():
            key = (getattr(rule, "point", None), concrete.name)
            if key in seen:
                where = f" of point {key[0]!r}" if key[0] else ""
                raise ValueError(
                    f"two alarms named {concrete.name!r}{where}: give one of them a name"
                )
            seen.add(key)
    return rules


PointAlarms = Annotated[tuple[AlarmRule, ...], AfterValidator(_distinct)]
DeviceAlarms = Annotated[tuple[DeviceAlarmRule, ...], AfterValidator(_distinct)]


def expand_rules(rules: Sequence[_RuleFields]) -> list[AlarmRule]:
    """Every concrete rule of a list of rules and presets, in order."""
    return [concrete for rule in rules for concrete in rule.expand()]


class _PointLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def alarms(self) -> tuple[AlarmRule, ...]: ...


def merged_device_rules(
    profile_rules: Sequence[DeviceAlarmRule], device_rules: Sequence[DeviceAlarmRule]
) -> list[DeviceAlarmRule]:
    """The profile's device-level rules, with a device's rule replacing the same (point, name)."""

    def key(rule: DeviceAlarmRule) -> tuple[str | None, str]:
        return (rule.point, rule.name or rule.kind or rule.preset or "")

    mine = {key(r) for r in device_rules}
    return [*(r for r in profile_rules if key(r) not in mine), *device_rules]


def reference_issues(
    points: Sequence[_PointLike],
    profile_rules: Sequence[DeviceAlarmRule],
    device_rules: Sequence[DeviceAlarmRule],
    *,
    inline: bool,
) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules naming points a device does not have: (location under the device, message).

    Locations of rules that live in a profile file point at the device's `profile` key.
    """
    names = {p.name for p in points}
    issues: list[tuple[tuple[str | int, ...], str]] = []
    for k, p in enumerate(points):
        for j, point_rule in enumerate(p.alarms):
            loc: tuple[str | int, ...] = (
                ("points", k, "alarms", j, "setpoint") if inline else ("profile",)
            )
            sp = point_rule.setpoint
            if sp == p.name:
                issues.append((loc, f"{p.name!r} cannot be its own set-point"))
            elif sp is not None and sp not in names:
                issues.append((loc, f"set-point {sp!r} of {p.name!r} is not a point"))
    for where, rules in (("profile", profile_rules), ("alarms", device_rules)):
        for j, rule in enumerate(rules):
            loc = ("profile",) if where == "profile" else ("alarms", j)
            prefix = f"profile alarms[{j}]: " if where == "profile" else ""
            if rule.point is not None and rule.point not in names:
                issues.append((loc, f"{prefix}no point {rule.point!r} in this device"))
            elif rule.setpoint is not None and rule.setpoint not in names:
                issues.append((loc, f"{prefix}set-point {rule.setpoint!r} is not a point"))
    return issues

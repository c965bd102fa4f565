"""The ISA-18.2 state of one alarm, and every transition an operator or the process causes.

                 raise                      ack
    NORMAL ─────────────► ACTIVE_UNACK ─────────────► ACTIVE_ACK
      ▲   ▲                 │     ▲ raise               │
      │   │ ack        clear│     │                     │ clear
      │   └──────────── RTN_UNACK ◄┘                    │ (not latched)
      └─────────────────────────────────────────────────┘
    latching rule: after clear it shows LATCHED (acked or not) until a reset (refused
    while the condition is still active); a reset also acknowledges.
    SHELVED (until an expiry) and OUT_OF_SERVICE hide any of these; the condition is still
    tracked, nothing is annunciated, and on return the alarm is NORMAL, or ACTIVE_UNACK if
    the condition is active at that moment.

`AlarmStatus` is what is persisted; `state` is derived from it. Every method returns the
transition it made (None when nothing visible changed) or raises `Refused` with a reason
the command reply carries.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class AlarmState(enum.StrEnum):
    """The ISA-18.2 states (plus the latched one), as published."""

    NORMAL = "normal"
    ACTIVE_UNACK = "active_unack"
    ACTIVE_ACK = "active_ack"
    RTN_UNACK = "rtn_unack"
    LATCHED = "latched"
    SHELVED = "shelved"
    OUT_OF_SERVICE = "out_of_service"


class Event(enum.StrEnum):
    """What made a transition."""

    RAISE = "raise"
    CLEAR = "clear"
    ACK = "ack"
    RESET = "reset"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"  # by command, or the shelving time ran out
    OUT_OF_SERVICE = "out_of_service"
    IN_SERVICE = "in_service"


class Refused(Exception):
    """A command that does not apply to the alarm's state; the reason goes to the operator."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One published change of an alarm."""

    event: Event
    previous: AlarmState
    state: AlarmState


@dataclass(slots=True)
class AlarmStatus:
    """The persisted state of one alarm."""

    active: bool = False  # the process condition, after on/off delays; tracked even if hidden
    acked: bool = True
    latched: bool = False  # a latching alarm went active and was not reset yet
    shelved_until_ms: int | None = None
    out_of_service: bool = False
    transitions: int = 0  # per-alarm count of published transitions: gaps and order show
    since_ms: int = 0  # wall time of the last transition

    @property
    def state(self) -> AlarmState:
        """The state shown to operators."""
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved_until_ms is not None:
            return AlarmState.SHELVED
        if self.active:
            return AlarmState.ACTIVE_ACK if self.acked else AlarmState.ACTIVE_UNACK
        if self.latched:
            return AlarmState.LATCHED
        return AlarmState.NORMAL if self.acked else AlarmState.RTN_UNACK

    @property
    def hidden(self) -> bool:
        """Shelved or out of service: condition changes are not annunciated."""
        return self.out_of_service or self.shelved_until_ms is not None

    def as_dict(self) -> dict[str, Any]:
        """The persisted fields, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AlarmStatus:
        """Back from `as_dict` (unknown keys from other versions are ignored)."""
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    # -- the process -------------------------------------------------------------------------

    def set_active(self, active: bool, *, latch: bool, now_ms: int) -> Transition | None:
        """The condition (after delays) became active or inactive."""
        if active == self.active:
            return None
        if self.hidden:
            self.active = active  # remembered for the return from shelving / service
            return None
        before = self.state
        self.active = active
        if active:
            self.acked = False
            self.latched = self.latched or latch
            return self._moved(Event.RAISE, before, now_ms)
        return self._moved(Event.CLEAR, before, now_ms)

    # -- operators ---------------------------------------------------------------------------

    def ack(self, *, now_ms: int) -> Transition:
        """Acknowledge; an alarm whose condition is gone (and not latched) returns to normal."""
        self._visible("acknowledge")
        if self.acked:
            raise Refused(
                "nothing to acknowledge" if self.state is AlarmState.NORMAL else "already acked"
            )
        before = self.state
        self.acked = True
        return self._moved(Event.ACK, before, now_ms)

    def reset(self, *, now_ms: int) -> Transition:
        """Reset a latched alarm whose condition is gone; acknowledges it too."""
        self._visible("reset")
        if not self.latched:
            raise Refused("not latched: nothing to reset")
        if self.active:
            raise Refused("the condition is still active: reset refused")
        before = self.state
        self.latched = False
        self.acked = True
        return self._moved(Event.RESET, before, now_ms)

    def shelve(self, until_ms: int, *, now_ms: int) -> Transition:
        """Hide the alarm until `until_ms` (a new shelve moves the expiry)."""
        if self.out_of_service:
            raise Refused("out of service: cannot shelve")
        before = self.state
        self.shelved_until_ms = until_ms
        return self._moved(Event.SHELVE, before, now_ms)

    def unshelve(self, *, latch: bool, now_ms: int) -> Transition:
        """Show the alarm again (by command, or at expiry)."""
        if self.shelved_until_ms is None or self.out_of_service:
            raise Refused("not shelved")
        before = self.state
        self.shelved_until_ms = None
        self._return(latch)
        return self._moved(Event.UNSHELVE, before, now_ms)

    def remove_from_service(self, *, now_ms: int) -> Transition:
        """Out of service for maintenance: hidden with no expiry (replaces shelving)."""
        if self.out_of_service:
            raise Refused("already out of service")
        before = self.state
        self.out_of_service = True
        self.shelved_until_ms = None
        return self._moved(Event.OUT_OF_SERVICE, before, now_ms)

    def return_to_service(self, *, latch: bool, now_ms: int) -> Transition:
        """Back in service after maintenance."""
        if not self.out_of_service:
            raise Refused("not out of service")
        before = self.state
        self.out_of_service = False
        self._return(latch)
        return self._moved(Event.IN_SERVICE, before, now_ms)

    # -- internals ---------------------------------------------------------------------------

    def _return(self, latch: bool) -> None:
        # ISA-18.2: back from shelving or service the alarm starts afresh: normal, or
        # unacknowledged if the condition is active right now.
        self.acked = not self.active
        self.latched = self.active and latch

    def _visible(self, what: str) -> None:
        if self.out_of_service:
            raise Refused(f"out of service: cannot {what}")
        if self.shelved_until_ms is not None:
            raise Refused(f"shelved: cannot {what}")

    def _moved(self, event: Event, before: AlarmState, now_ms: int) -> Transition:
        self.transitions += 1
        self.since_ms = now_ms
        return Transition(event, before, self.state)

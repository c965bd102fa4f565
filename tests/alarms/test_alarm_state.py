"""The ISA-18.2 state machine of one alarm: every transition, refusals, invariants."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.alarms.state import AlarmState, AlarmStatus, Event, Refused

S = AlarmState


def _path(status: AlarmStatus, steps: list[str], *, latch: bool = False) -> list[tuple[str, str]]:
    out = []
    for step in steps:
        match step:
            case "on" | "off":
                t = status.set_active(step == "on", latch=latch, now_ms=1)
            case "ack":
                t = status.ack(now_ms=1)
            case "reset":
                t = status.reset(now_ms=1)
            case "shelve":
                t = status.shelve(10_000, now_ms=1)
            case "unshelve":
                t = status.unshelve(latch=latch, now_ms=1)
            case "oos":
                t = status.remove_from_service(now_ms=1)
            case "ios":
                t = status.return_to_service(latch=latch, now_ms=1)
        out.append((t.event.value, t.state.value) if t else ("-", status.state.value))
    return out


def test_ack_before_and_after_return_to_normal() -> None:
    assert _path(AlarmStatus(), ["on", "ack", "off"]) == [
        ("raise", "active_unack"),
        ("ack", "active_ack"),
        ("clear", "normal"),
    ]
    assert _path(AlarmStatus(), ["on", "off", "on", "off", "ack"]) == [
        ("raise", "active_unack"),
        ("clear", "rtn_unack"),
        ("raise", "active_unack"),
        ("clear", "rtn_unack"),
        ("ack", "normal"),
    ]


def test_latched_alarm_needs_a_reset_after_return_to_normal() -> None:
    status = AlarmStatus()
    assert _path(status, ["on", "ack", "off"], latch=True) == [
        ("raise", "active_unack"),
        ("ack", "active_ack"),
        ("clear", "latched"),
    ]
    assert _path(status, ["on"], latch=True) == [("raise", "active_unack")]  # a new ack is due
    with pytest.raises(Refused, match="still active"):
        status.reset(now_ms=1)
    assert _path(status, ["off", "reset"], latch=True) == [
        ("clear", "latched"),
        ("reset", "normal"),  # a reset acknowledges too
    ]


def test_shelved_and_out_of_service_hide_the_condition_and_start_afresh() -> None:
    status = AlarmStatus()
    assert _path(status, ["on", "shelve", "off", "on", "unshelve"]) == [
        ("raise", "active_unack"),
        ("shelve", "shelved"),
        ("-", "shelved"),
        ("-", "shelved"),
        ("unshelve", "active_unack"),
    ]
    assert _path(status, ["ack", "oos", "off", "ios"]) == [
        ("ack", "active_ack"),
        ("out_of_service", "out_of_service"),
        ("-", "out_of_service"),
        ("in_service", "normal"),
    ]
    # Out of service replaces shelving; shelving is refused out of service.
    assert _path(status, ["shelve", "oos"]) == [
        ("shelve", "shelved"),
        ("out_of_service", "out_of_service"),
    ]
    assert status.shelved_until_ms is None
    with pytest.raises(Refused, match="out of service: cannot shelve"):
        status.shelve(5, now_ms=1)


@pytest.mark.parametrize(
    ("steps", "last", "reason"),
    [
        ([], "ack", "nothing to acknowledge"),
        (["on", "ack"], "ack", "already acked"),
        ([], "reset", "not latched"),
        ([], "unshelve", "not shelved"),
        ([], "ios", "not out of service"),
        (["oos"], "oos", "already out of service"),
        (["shelve"], "reset", "shelved: cannot reset"),
    ],
)
def test_refusals_say_why(steps: list[str], last: str, reason: str) -> None:
    status = AlarmStatus()
    _path(status, steps)
    before = status.as_dict()
    with pytest.raises(Refused, match=reason):
        _path(status, [last])
    assert status.as_dict() == before  # a refused command changes nothing


STEPS = st.sampled_from(["on", "off", "ack", "reset", "shelve", "unshelve", "oos", "ios"])


@given(st.lists(STEPS, max_size=40), st.booleans())
def test_any_sequence_keeps_the_state_consistent(steps: list[str], latch: bool) -> None:
    status = AlarmStatus()
    published = 0
    for step in steps:
        try:
            result = _path(status, [step], latch=latch)
        except Refused:
            continue
        if result[0][0] != "-":
            published += 1
        state = status.state
        assert status.transitions == published
        if state is S.NORMAL:
            assert status.acked and not status.active and not status.latched
        if state in (S.ACTIVE_UNACK, S.ACTIVE_ACK):
            assert status.active
        if status.latched:
            assert latch
    # Whatever happened, an operator can always bring it back to normal.
    for step in ("ios", "unshelve", "off", "ack", "reset"):
        with contextlib.suppress(Refused):
            _path(status, [step], latch=latch)
    assert status.state is S.NORMAL
    assert AlarmStatus.from_dict(status.as_dict()) == status
    assert Event.RAISE.value == "raise"

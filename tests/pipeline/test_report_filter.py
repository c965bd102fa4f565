"""Report by exception, scripted: deadbands, heartbeat, quality changes, every value type.

Each script is a list of polls of one device at given times (the poll's own `ts_ns` is the
filter's clock); the assertions name exactly which readings went up. The config-level
tests load real site files, so merging point, device and profile options is checked
through the loader, and the poller test runs the real scheduler on a virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.options.report import ReportOptions, merge_report
from drivers.reading import PointSpec, Poll, Quality, Value
from edge_agent.config.site import load_config
from edge_agent.pipeline.by_exception import (
    PointRule,
    ReportFilter,
    build_report_filter,
    rebuild_report_filter,
    report_rules,
)
from edge_agent.pipeline.payload import DeviceEncoder
from edge_agent.runtime.poller import Unit, run_line

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = orjson.loads((ROOT / "edge_agent/schemas/data-v1.schema.json").read_bytes())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
S = 1_000_000_000
T0 = 1_764_000_000 * S  # a wall-clock epoch, as drivers stamp polls

Issue = tuple[Quality, str] | None


def _filter(interval_s: float = 1.0, **options: Any) -> ReportFilter:
    rule = PointRule.compile(ReportOptions(**options), interval_s=interval_s)
    return ReportFilter({"d": {"x": rule}})


def _run(
    f: ReportFilter, script: list[tuple[float, Value, Issue]], *, points: tuple[PointSpec, ...]
) -> list[tuple[float, Value, str]]:
    """Feed one-point polls (t_s, value, issue); return (t_s, value, quality) published."""
    out = []
    for t, value, issue in script:
        poll = Poll("d", T0 + round(t * S), points, [value], {0: issue} if issue else {})
        sent = f.select(poll)
        if sent is not None:
            assert sent.points == points
            quality = sent.issues.get(0, (Quality.GOOD, ""))[0]
            out.append((t, sent.values[0], quality.value))
    return out


X = (PointSpec("x", "V"),)


def _values(f: ReportFilter, values: list[Value], step_s: float = 1.0) -> list[float]:
    """Times (s) at which a good value of the script went up."""
    script = [(k * step_s, v, None) for k, v in enumerate(values)]
    return [t for t, _, _ in _run(f, script, points=X)]


# -- numbers: deadbands ---------------------------------------------------------------------


def test_absolute_deadband_is_exceeded_strictly_and_measured_from_the_last_published() -> None:
    f = _filter(deadband=0.5, max_interval_s=1000)
    # 230.0 sent; 230.5 is exactly the deadband (not more): held; 230.6 goes; then a slow
    # drift of 0.2 per poll goes up each time it has moved more than 0.5 from 230.6.
    values = [230.0, 230.5, 230.6, 230.8, 231.0, 231.2, 230.0, 230.0]
    assert _values(f, values) == [0, 2, 5, 6]


def test_integer_values_take_the_deadband_too() -> None:
    f = _filter(deadband=2, max_interval_s=1000)
    assert _values(f, [10, 11, 12, 13, 9, 9, 100]) == [0, 3, 4, 6]


def test_percent_of_last_published_value() -> None:
    f = _filter(deadband_pct=1.0, max_interval_s=1000)
    # 1 % of 200 is 2.0: 201.9 holds, 202.1 goes; then 1 % of 202.1 is 2.021.
    assert _values(f, [200.0, 201.9, 202.1, 204.1, 204.2, 100.0]) == [0, 2, 4, 5]


def test_percent_of_last_published_zero_means_any_change() -> None:
    f = _filter(deadband_pct=5.0, max_interval_s=1000)
    assert _values(f, [0.0, 0.0, 0.001, 0.001, 0.00104]) == [0, 2]


def test_percent_of_span() -> None:
    f = _filter(deadband_pct=1.0, span=(-100.0, 300.0), max_interval_s=1000)
    # 1 % of 400 = 4.0, whatever the value's size.
    assert _values(f, [0.0, 3.9, 4.1, 0.1, 0.0, -3.95]) == [0, 2, 4]


def test_both_deadbands_the_larger_wins() -> None:
    f = _filter(deadband=1.0, deadband_pct=1.0, max_interval_s=1000)
    # Near 230 the percent (2.3) is larger; near 10 the absolute 1.0 is.
    assert _values(f, [230.0, 232.0, 232.4, 10.0, 10.9, 11.1]) == [0, 2, 3, 5]


def test_no_deadband_sends_every_change_and_no_repeat() -> None:
    f = _filter(max_interval_s=1000)
    assert _values(f, [1.0, 1.0, 1.0000001, 1.0000001, 2.0, 2.0]) == [0, 2, 4]


# -- time: heartbeat and minimum interval ---------------------------------------------------


def test_heartbeat_repeats_an_unchanged_value() -> None:
    f = _filter(deadband=10.0, max_interval_s=10.0)
    assert _values(f, [5.0] * 31) == [0, 10, 20, 30]


def test_heartbeat_is_met_within_half_a_poll_despite_answer_jitter() -> None:
    f = _filter(deadband=10.0, max_interval_s=10.0)
    # The first answer came 20 ms late: the poll at 10 s (9.98 s after it) still carries
    # the heartbeat rather than the one at 11 s.
    script = [(k + (0.02 if k == 0 else 0.0), 5.0, None) for k in range(21)]
    times = [round(t) for t, _, _ in _run(f, script, points=X)]
    assert times == [0, 10, 20]


def test_heartbeat_zero_publishes_every_poll() -> None:
    f = _filter(deadband=10.0, max_interval_s=0)
    assert _values(f, [5.0] * 5) == [0, 1, 2, 3, 4]


def test_min_interval_holds_changes_then_sends_the_latest() -> None:
    f = _filter(min_interval_s=5.0, max_interval_s=1000)
    # Changes every second; only one per 5 s goes up, always the current value.
    sent = _run(f, [(k, float(k), None) for k in range(12)], points=X)
    assert sent == [(0, 0.0, "good"), (5, 5.0, "good"), (10, 10.0, "good")]


def test_min_interval_a_change_that_settles_is_sent_when_the_interval_ends() -> None:
    f = _filter(min_interval_s=5.0, max_interval_s=1000)
    values = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert _values(f, values) == [0, 5]


def test_a_clock_that_steps_back_publishes_and_starts_over() -> None:
    f = _filter(deadband=10.0, max_interval_s=10.0)
    script = [(100.0, 5.0, None), (101.0, 5.0, None), (50.0, 5.0, None), (51.0, 5.0, None)]
    assert [t for t, _, _ in _run(f, script, points=X)] == [100.0, 50.0]


# -- quality and reason ---------------------------------------------------------------------

TIMEOUT = (Quality.BAD, "timeout")
EXC02 = (Quality.BAD, "exception 02 (illegal data address)")
STALE = (Quality.UNCERTAIN, "last usable value")


def test_quality_changes_go_up_at_once_through_deadband_and_min_interval() -> None:
    f = _filter(deadband=100.0, min_interval_s=60.0, max_interval_s=600)
    script: list[tuple[float, Value, Issue]] = [
        (0, 230.0, None),
        (1, None, TIMEOUT),  # good -> bad
        (2, None, TIMEOUT),  # same: held
        (3, None, EXC02),  # reason changed: goes
        (4, 230.0, None),  # bad -> good with the same value as before: goes
        (5, 230.1, STALE),  # uncertain: goes
        (6, 230.1, STALE),  # same: held
        (7, 230.1, None),  # good again: goes
    ]
    assert _run(f, script, points=X) == [
        (0, 230.0, "good"),
        (1, None, "bad"),
        (3, None, "bad"),
        (4, 230.0, "good"),
        (5, 230.1, "uncertain"),
        (7, 230.1, "good"),
    ]


def test_a_bad_point_repeats_only_on_its_heartbeat() -> None:
    f = _filter(max_interval_s=10.0)
    script: list[tuple[float, Value, Issue]] = [(k, None, TIMEOUT) for k in range(25)]
    assert [t for t, _, _ in _run(f, script, points=X)] == [0, 10, 20]


def test_an_uncertain_value_still_takes_the_deadband() -> None:
    f = _filter(deadband=1.0, max_interval_s=1000)
    script: list[tuple[float, Value, Issue]] = [
        (0, 10.0, STALE),
        (1, 10.5, STALE),
        (2, 11.5, STALE),
    ]
    assert _run(f, script, points=X) == [(0, 10.0, "uncertain"), (2, 11.5, "uncertain")]


# -- booleans and strings: only change counts -------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"deadband": 5.0}, {"deadband_pct": 50.0}])
def test_booleans_go_up_on_every_change_whatever_the_deadband(options: dict[str, Any]) -> None:
    f = _filter(max_interval_s=1000, **options)
    assert _values(f, [False, False, True, True, False, True, True]) == [0, 2, 4, 5]


def test_booleans_ignore_min_interval_a_flip_and_back_is_not_lost() -> None:
    f = _filter(min_interval_s=60.0, max_interval_s=1000)
    assert _values(f, [False, True, False, False]) == [0, 1, 2]


def test_booleans_have_a_heartbeat_and_quality_changes() -> None:
    f = _filter(max_interval_s=3.0)
    script: list[tuple[float, Value, Issue]] = [
        (0, True, None),
        (1, True, None),
        (2, True, None),
        (3, True, None),
        (4, None, TIMEOUT),
        (5, True, None),
    ]
    assert [t for t, _, _ in _run(f, script, points=X)] == [0, 3, 4, 5]


def test_strings_go_up_on_change_only() -> None:
    f = _filter(deadband=1.0, min_interval_s=60.0, max_interval_s=1000)
    assert _values(f, ["RUN", "RUN", "STOP", "STOP", "RUN", "RUN "]) == [0, 2, 4, 5]


# -- subsets of a poll ----------------------------------------------------------------------

ABC = (PointSpec("a", "V"), PointSpec("b", "A"), PointSpec("c"))


def _three(**options: Any) -> ReportFilter:
    rule = PointRule.compile(ReportOptions(**options), interval_s=1.0)
    return ReportFilter({"d": {"a": rule, "b": rule, "c": None}})


def test_a_poll_keeps_only_its_changed_points_with_issues_reindexed() -> None:
    f = _three(deadband=1.0, max_interval_s=1000)
    first = Poll("d", T0, ABC, [1.0, 2.0, 3.0])
    assert f.select(first) is first  # everything is new: the very same poll goes up
    second = Poll("d", T0 + S, ABC, [1.5, None, 3.0], {1: TIMEOUT})
    sent = f.select(second)
    assert sent is not None and sent is not second
    # a held (0.5 <= 1.0); b went bad; c has no options, so it goes every poll.
    assert sent.points == (ABC[1], ABC[2])
    assert sent.values == [None, 3.0]
    assert sent.issues == {0: TIMEOUT}
    assert sent.ts_ns == second.ts_ns and sent.device == "d"


def test_a_poll_with_nothing_worth_sending_is_none() -> None:
    rule = PointRule.compile(ReportOptions(deadband=1.0), interval_s=1.0)
    f = ReportFilter({"d": {"a": rule, "b": rule, "c": rule}})
    assert f.select(Poll("d", T0, ABC, [1.0, 2.0, "s"])) is not None
    assert f.select(Poll("d", T0 + S, ABC, [1.1, 2.1, "s"])) is None
    counts = f.counts["d"]
    assert (counts.polls, counts.messages) == (2, 1)
    assert (counts.readings_polled, counts.readings_published) == (6, 3)


def test_devices_without_options_pass_untouched() -> None:
    f = _three(deadband=1.0)
    poll = Poll("other", T0, ABC, [1.0, 2.0, 3.0])
    assert f.select(poll) is poll
    assert f.select(poll) is poll
    assert "other" not in f.counts


def test_due_heartbeats_ride_along_with_a_message_that_goes_anyway() -> None:
    rule = PointRule.compile(ReportOptions(max_interval_s=10.0), interval_s=1.0)
    f = ReportFilter({"d": {"a": rule, "b": rule}})
    ab = ABC[:2]
    sent_b = []
    for k in range(21):
        # a changes at t = 6 and t = 13 only; b never changes.
        a = 1.0 if k < 6 else (2.0 if k < 13 else 3.0)
        sent = f.select(Poll("d", T0 + k * S, ab, [a, 5.0]))
        if sent is not None and ab[1] in sent.points:
            sent_b.append(k)
    # b rides along with a's change at 6 (past half its heartbeat), and again at 13 (7 s
    # later, still past half); nothing else is due before 22.5 s.
    assert sent_b == [0, 6, 13]


def test_a_driver_with_a_new_point_list_is_bound_again() -> None:
    f = _three(deadband=1.0, max_interval_s=1000)
    assert f.select(Poll("d", T0, ABC, [1.0, 2.0, 3.0])) is not None
    swapped = (ABC[1], ABC[0], ABC[2])
    # A new point list (e.g. a reconnected OPC UA session) starts afresh: all go up.
    poll = Poll("d", T0 + S, swapped, [2.0, 1.0, 3.0])
    assert f.select(poll) is poll


# -- the encoder's subset path ----------------------------------------------------------------


def test_encoder_renders_subsets_and_full_polls_alike() -> None:
    enc = DeviceEncoder(gateway="gw", device="d", points=ABC)
    f = _three(deadband=1.0, max_interval_s=1000)
    polls = [
        Poll("d", T0, ABC, [1.0, 2.0, 3.0]),
        Poll("d", T0 + S, ABC, [1.1, None, 3.0], {1: TIMEOUT}),
        Poll("d", T0 + 2 * S, ABC, [5.0, 2.0, 4.0]),
        Poll("d", T0 + 3 * S, ABC, [None, None, None], {0: EXC02, 1: EXC02, 2: EXC02}),
        Poll("d", T0 + 4 * S, ABC, [5.0, 2.0, 4.0]),
    ]
    docs = []
    for seq, poll in enumerate(polls, start=1):
        sent = f.select(poll)
        assert sent is not None
        doc = orjson.loads(enc.encode(sent, seq=seq))
        VALIDATOR.validate(doc)
        docs.append(doc)
    assert [sorted(d["points"]) for d in docs] == [
        ["a", "b", "c"],
        ["b", "c"],
        ["a", "b", "c"],
        ["a", "b", "c"],
        ["a", "b", "c"],
    ]
    assert docs[1]["points"] == {
        "b": {"value": None, "unit": "A", "quality": "bad", "reason": "timeout"},
        "c": {"value": 3.0, "unit": None, "quality": "good"},
    }
    assert docs[1]["ts_ms"] == (T0 + S) // 1_000_000 and docs[1]["seq"] == 2
    # The reason set by a subset message is gone from the next full one.
    assert docs[2]["points"]["b"] == {"value": 2.0, "unit": "A", "quality": "good"}
    assert docs[4]["points"]["a"] == {"value": 5.0, "unit": "V", "quality": "good"}
    assert enc.messages == 5 and enc.bytes > 0


def test_encoder_refuses_a_point_the_device_does_not_have() -> None:
    enc = DeviceEncoder(gateway="gw", device="d", points=ABC)
    with pytest.raises(ValueError, match="no point 'zz'"):
        enc.encode(Poll("d", T0, (PointSpec("zz"),), [1.0]), seq=1)


# -- properties -------------------------------------------------------------------------------

_quality = st.sampled_from([None, None, None, TIMEOUT, EXC02, STALE])


@settings(max_examples=150, deadline=None)
@given(
    deadband=st.sampled_from([0.0, 0.5, 2.0]),
    min_s=st.sampled_from([0.0, 3.0]),
    max_s=st.sampled_from([0.0, 5.0, 30.0]),
    steps=st.lists(
        st.tuples(st.floats(-5, 5, allow_nan=False), _quality, st.integers(1, 3)),
        min_size=1,
        max_size=60,
    ),
)
def test_the_uplink_never_strays_beyond_its_promises(
    deadband: float,
    min_s: float,
    max_s: float,
    steps: list[tuple[float, Issue, int]],
) -> None:
    f = _filter(deadband=deadband, min_interval_s=min_s, max_interval_s=max_s)
    t, value = 0, 100.0
    shown: tuple[float, Value, Issue] | None = None  # what a subscriber holds: t, value, issue
    for delta, issue, gap in steps:
        t += gap
        value += delta
        v: Value = None if issue and issue[0] is Quality.BAD else value
        sent = f.select(Poll("d", T0 + t * S, X, [v], {0: issue} if issue else {}))
        if sent is not None:
            shown = (t, sent.values[0], sent.issues.get(0))
        assert shown is not None, "the first reading always goes up"
        age = t - shown[0]
        # 1. The subscriber always has the current quality and reason.
        assert shown[2] == issue
        # 2. Nothing is older than the heartbeat (half a poll of slack).
        assert age == 0 or age < max_s - 0.5
        # 3. Once the minimum interval has passed, the value is within the deadband.
        if v is not None and age >= min_s:
            held = shown[1]
            assert isinstance(held, float)
            assert abs(v - held) <= deadband + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    increments=st.lists(
        st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.5, 3.0, -50.0]), min_size=1, max_size=80
    )
)
def test_a_counter_total_from_the_thinned_uplink_equals_the_edge_total(
    increments: list[float],
) -> None:
    """Counters go up on every change: dropping repeats drops no delta (resets included)."""
    loaded_rules = {"d": {"x": PointRule.compile(ReportOptions(max_interval_s=60), interval_s=1)}}
    f = ReportFilter(loaded_rules)
    counter = 1000.0
    edge, uplink = [], []
    for k, inc in enumerate(increments):
        counter = 0.0 if inc < 0 else counter + inc  # a negative step: the meter was reset
        edge.append(counter)
        sent = f.select(Poll("d", T0 + k * S, X, [counter]))
        if sent is not None:
            uplink.append(sent.values[0])

    def total(series: list[Value]) -> float:
        pairs = itertools.pairwise(series)
        return sum(b - a if b >= a else b for a, b in pairs)  # type: ignore[operator]

    assert total(uplink) == pytest.approx(total(edge), abs=1e-9)
    assert uplink[-1] == edge[-1]


# -- options from the config ------------------------------------------------------------------


def test_merge_takes_each_key_from_the_most_specific_level() -> None:
    point = ReportOptions(deadband=0.2)
    device = ReportOptions(max_interval_s=60)
    profile = ReportOptions(deadband_pct=1.0, max_interval_s=900, min_interval_s=5)
    merged = merge_report(point, device, profile)
    assert merged is not None
    assert (merged.deadband, merged.deadband_pct, merged.min_interval_s) == (0.2, 1.0, 5)
    assert merged.max_interval_s == 60
    # A key given as null at a more specific level switches the default off.
    off = merge_report(ReportOptions(deadband_pct=None), None, profile)
    assert off is not None and off.deadband_pct is None and off.max_interval_s == 900
    assert merge_report(None, None, None) is None


def test_options_reject_an_empty_span_and_a_min_above_the_heartbeat() -> None:
    with pytest.raises(ValueError, match="high must exceed low"):
        ReportOptions(deadband_pct=1, span=(10, 10))
    with pytest.raises(ValueError, match="exceeds the heartbeat"):
        ReportOptions(min_interval_s=60, max_interval_s=30)
    with pytest.raises(ValueError, match="extra"):
        ReportOptions.model_validate({"deadband_percent": 1})


SITE = """\
site: plant-a
gateway: gw-01
devices:
  - name: meter
    driver: modbus
    url: tcp://127.0.0.1:5020
    interval_s: 1.0
    profile: meter-rbe
    report: {max_interval_s: 60}
  - name: plc
    driver: modbus
    url: tcp://127.0.0.1:5021
    points:
      - {name: run, table: coil, address: 0}
      - {name: speed, address: 1, report: {deadband: 5}}
  - name: plain
    driver: modbus
    url: tcp://127.0.0.1:5022
    profile: chint-dtsu666
"""

PROFILE = """\
name: {name}
order: ABCD
{report}
points:
  - {{name: voltage_a, address: 0, type: float32, unit: V}}
  - {{name: current_a, address: 2, type: float32, unit: A, report: {{deadband: 0.05}}}}
  - {{name: freq, address: 4, type: float32, unit: Hz, report: {{deadband_pct: null}}}}
  - {{name: energy_import, address: 6, type: float32, unit: kWh,
      energy: {{kind: electricity, direction: import}}}}
  - {{name: energy_export, address: 8, type: float32, unit: kWh,
      energy: {{kind: electricity, direction: export}}, report: {{deadband: 0.1}}}}
  - {{name: energy_total_a, address: 10, type: float32, unit: kWh}}
  - {{name: reactive_energy_a, address: 12, type: float32, unit: kvarh}}
"""


def _site(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/meter-rbe.yaml").write_text(
        PROFILE.format(name="meter-rbe", report="report: {deadband_pct: 0.5, min_interval_s: 2}")
    )
    (tmp_path / "site.yaml").write_text(SITE)
    return tmp_path / "site.yaml"


def test_rules_come_from_point_device_and_profile(tmp_path: Path) -> None:
    rules = report_rules(load_config(_site(tmp_path)))
    assert set(rules) == {"meter", "plc"}  # `plain` has no options anywhere
    meter = rules["meter"]
    # profile 0.5 % and min 2 s, device heartbeat 60 s (half a 1 s poll of slack).
    assert meter["voltage_a"] == PointRule(59_500_000_000, 30 * S, 1_500_000_000, 0.0, 0.005)
    assert meter["current_a"] == PointRule(59_500_000_000, 30 * S, 1_500_000_000, 0.05, 0.005)
    assert meter["freq"] == PointRule(59_500_000_000, 30 * S, 1_500_000_000, 0.0, 0.0)
    # Counters keep only the heartbeat of the defaults, unless the point says more.
    assert meter["energy_import"] == PointRule(59_500_000_000, 30 * S, 0, 0.0, 0.0)
    assert meter["energy_export"] == PointRule(59_500_000_000, 30 * S, 0, 0.1, 0.0)
    # ... and so do points in an energy unit that the profile did not mark `energy:`.
    assert meter["energy_total_a"] == meter["energy_import"]
    assert meter["reactive_energy_a"] == meter["energy_import"]
    plc = rules["plc"]
    assert plc["run"] is None  # no options: every poll
    assert plc["speed"] == PointRule(299_500_000_000, 150 * S, 0, 5.0, 0.0)


def test_the_agent_filter_thins_a_loaded_site(tmp_path: Path) -> None:
    f = build_report_filter(load_config(_site(tmp_path)))
    assert f is not None
    points = tuple(PointSpec(n) for n in ("voltage_a", "current_a", "freq", "energy_import"))
    # (the real driver lists energy_export too; a point the config does not know is sent)
    points += (PointSpec("unknown"),)
    first = Poll("meter", T0, points, [230.0, 10.0, 50.0, 1000.0, 1.0])
    assert f.select(first) is first
    later = Poll("meter", T0 + 5 * S, points, [230.5, 10.01, 50.0, 1000.01, 1.0])
    sent = f.select(later)
    assert sent is not None
    # voltage within 0.5 % (1.15 V), current within 0.05 A, freq unchanged; the counter's
    # smallest step goes up; the unknown point has no options, so it goes every poll.
    assert [p.name for p in sent.points] == ["energy_import", "unknown"]


def test_no_options_anywhere_means_no_filter(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: s\ngateway: g\ndevices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:5020', profile: chint-dtsu666}\n"
    )
    assert build_report_filter(load_config(tmp_path / "site.yaml")) is None


def test_a_bad_option_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    from edge_agent.config.errors import ConfigError

    path = _site(tmp_path)
    path.write_text(path.read_text().replace("{max_interval_s: 60}", "{max_interval_s: -1}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "site.yaml:9 devices[0].report.max_interval_s" in text


OTHER_DRIVERS = """\
site: plant-a
gateway: gw-01
devices:
  - name: plc
    driver: opcua
    url: opc.tcp://127.0.0.1:4840
    security: {mode: None}
    interval_s: 2.0
    report: {deadband: 0.5, max_interval_s: 60}
    points:
      - {name: tank_temp, node: "nsu=urn:plant:plc;s=Tank1.Temperature", mode: subscribe,
         deadband: {abs: 0.1}, unit: degC}
      - {name: flow_total, node: "nsu=urn:plant:plc;s=Flow.Total", unit: m3,
         energy: {kind: water}}
      - {name: setpoint, node: "nsu=urn:plant:plc;s=Tank1.Setpoint", report: {deadband: 2}}
  - name: meter-645
    driver: dlt645
    url: rtu+tcp://127.0.0.1:5030
    address: "000000123456"
    interval_s: 5.0
    report: {deadband_pct: 1, max_interval_s: 600}
    points:
      - {name: import_kwh, di: "00010000"}
      - {name: voltage_a, di: "02010100", unit: V}
"""


def test_opc_ua_and_dlt645_points_take_the_same_rules(tmp_path: Path) -> None:
    """One stage for every driver: the options of OPC UA and DL/T 645 points compile alike
    (an OPC UA server-side deadband only decides what the server sends; ours still applies)."""
    (tmp_path / "site.yaml").write_text(OTHER_DRIVERS)
    rules = report_rules(load_config(tmp_path / "site.yaml"))
    plc, meter = rules["plc"], rules["meter-645"]
    assert plc["tank_temp"] == PointRule(59 * S, 30 * S, 0, 0.5, 0.0)
    assert plc["flow_total"] == PointRule(59 * S, 30 * S, 0, 0.0, 0.0)  # a counter
    assert plc["setpoint"] == PointRule(59 * S, 30 * S, 0, 2.0, 0.0)
    # import_kwh takes the table's unit (kWh): guarded as a counter without saying so.
    assert meter["import_kwh"] == PointRule(597_500_000_000, 300 * S, 0, 0.0, 0.0)
    assert meter["voltage_a"] == PointRule(597_500_000_000, 300 * S, 0, 0.0, 0.01)


def test_a_reload_keeps_what_unchanged_devices_last_published(tmp_path: Path) -> None:
    path = _site(tmp_path)
    f = build_report_filter(load_config(path))
    assert f is not None
    meter = tuple(PointSpec(n) for n in ("voltage_a", "current_a"))
    plc = (PointSpec("speed"),)
    assert f.select(Poll("meter", T0, meter, [230.0, 10.0])) is not None
    assert f.select(Poll("plc", T0, plc, [100])) is not None
    # Same config: nothing to send again for either device.
    same = rebuild_report_filter(f, load_config(path))
    assert same is not None and same is not f
    assert same.select(Poll("meter", T0 + S, meter, [230.0, 10.0])) is None
    assert same.select(Poll("plc", T0 + S, plc, [100])) is None
    # The plc's deadband changed: it starts afresh; the meter keeps its state.
    path.write_text(path.read_text().replace("{deadband: 5}", "{deadband: 1}"))
    changed = rebuild_report_filter(same, load_config(path))
    assert changed is not None
    assert changed.select(Poll("meter", T0 + 2 * S, meter, [230.0, 10.0])) is None
    assert changed.select(Poll("plc", T0 + 2 * S, plc, [100])) is not None
    assert changed.counts["meter"].polls == 3 and changed.counts["plc"].polls == 1
    # No options left: no filter.
    path.write_text(
        "site: s\ngateway: g\ndevices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:5020', profile: chint-dtsu666}\n"
    )
    assert rebuild_report_filter(changed, load_config(path)) is None


# -- the real scheduler on a virtual clock ----------------------------------------------------


class _SteadyDriver:
    """Answers a constant value, stamped with the (virtual) loop time."""

    protocol = "scripted"

    def __init__(self) -> None:
        self.name = "d"
        self.points = X
        self.reads = 0

    async def read(self) -> Poll:
        self.reads += 1
        await asyncio.sleep(0.013)  # the answer takes 13 ms
        ts = T0 + round(asyncio.get_running_loop().time() * S)
        return Poll("d", ts, X, [230.0 if self.reads < 100 else 231.0])

    async def close(self) -> None:
        pass


@pytest.mark.looptime
async def test_heartbeat_through_the_real_poller_on_a_virtual_clock() -> None:
    f = _filter(deadband=0.5, max_interval_s=30.0)
    driver = _SteadyDriver()
    sent_at: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    start = loop.time()

    def emit(poll: Poll) -> None:
        if f.select(poll) is not None:
            sent_at.append(round(loop.time() - start, 3))
        if driver.reads >= 125:
            done.set()

    task = asyncio.create_task(
        run_line([Unit(driver, 1.0)], emit=emit, rng=random.Random(1)), name="line"
    )
    try:
        await asyncio.wait_for(done.wait(), timeout=500)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # First poll, heartbeats every 30 s, the change at poll 100 (t = 99), then its
    # heartbeat 30 s later; 125 polls, nothing else.
    assert sent_at == [0.013, 30.013, 60.013, 90.013, 99.013]
    assert f.counts["d"].polls == 125 and f.counts["d"].messages == 5

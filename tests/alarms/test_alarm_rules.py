"""Alarm rule checks, delays, config models and presets, as pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.options.alarms import AlarmRule, DeviceAlarmRule, expand_rules
from edge_agent.alarms.rules import Delay, DeviationCheck, LimitCheck, RateCheck, StateCheck
from edge_agent.config.site import ConfigError, load_config
from tests.alarm_support import site_yaml


def _run(check: LimitCheck, values: list[float]) -> list[bool | None]:
    return [check.evaluate(v, 0.0, None) for v in values]


def test_high_and_low_hysteresis() -> None:
    high = LimitCheck(80.0, 2.0, upper=True)
    assert _run(high, [79.9, 80.0, 78.0, 77.99, 79.99]) == [False, True, True, False, False]
    low = LimitCheck(10.0, 1.0, upper=False)
    assert _run(low, [10.1, 10.0, 11.0, 11.01, 10.5]) == [False, True, True, False, False]


def test_checks_do_not_judge_what_is_not_theirs() -> None:
    assert LimitCheck(1.0, 0.0, upper=True).evaluate(True, 0.0, None) is None
    assert LimitCheck(1.0, 0.0, upper=True).evaluate("x", 0.0, None) is None
    assert DeviationCheck(1.0, 0.0, "both").evaluate(5.0, 0.0, None) is None
    assert StateCheck((True,)).evaluate(None, 0.0, None) is None
    enum = StateCheck((3, 4))
    assert [enum.evaluate(v, 0.0, None) for v in (1, 3, 4.0, 5)] == [False, True, True, False]


def test_rate_of_change_looks_back_at_most_one_period() -> None:
    rate = RateCheck(10.0, 5.0, 0.0, "both")
    samples = [(0.0, 0.0), (3.0, 5.0), (5.0, 10.0), (5.5, 10.0), (9.0, 0.0), (10.5, 0.0)]
    got = [rate.evaluate(x, t, None) for t, x in samples]
    # 5.0: 10 - 0 within 5 s; 5.5: the 0 at t=0 left the window (10 - 5 = 5 < 10);
    # 9.0: fell 10 since t=5 (both directions); 10.5: the 10 at 5.5 is still in the window.
    assert got == [False, False, True, False, True, True]
    down = RateCheck(10.0, 5.0, 0.0, "down")
    assert [down.evaluate(x, t, None) for t, x in [(0, 0.0), (1, 20.0), (2, 9.0)]] == [
        False,
        False,
        True,
    ]


def test_rate_restored_active_holds_until_it_has_seen_a_whole_period() -> None:
    rate = RateCheck(10.0, 5.0, 0.0, "up")
    rate.on = True  # restored after a restart: the rise happened before
    assert [rate.evaluate(1.0, t, None) for t in (0.0, 2.0, 4.999)] == [True, True, True]
    assert rate.evaluate(1.0, 5.0, None) is False


def test_delay_edges_and_interruption() -> None:
    d = Delay(2.0, 1.0)
    assert [d.update(True, t) for t in (0.0, 1.0, 1.999)] == [False, False, False]
    assert d.update(True, 2.0) is True
    assert d.update(False, 3.0) is True and d.pending
    d.interrupt()
    assert d.update(False, 3.5) is True  # the off-delay starts again at 3.5
    assert d.update(False, 4.499) is True
    assert d.update(False, 4.5) is False and not d.pending
    zero = Delay(0.0, 0.0)
    assert [zero.update(r, 0.0) for r in (True, False, True)] == [True, False, True]


def test_presets_follow_gb_t_50493_and_refuse_higher_levels() -> None:
    lel = expand_rules([AlarmRule(preset="gas_lel", level1=20)])
    assert [(r.name, r.kind, r.limit, r.priority, r.latch) for r in lel] == [
        ("lel_1", "high", 20.0, 2, True),
        ("lel_2", "high_high", 50.0, 1, True),
    ]
    toxic = expand_rules([DeviceAlarmRule(point="h2s", preset="gas_toxic", oel=10)])
    assert [(r.name, r.limit) for r in toxic] == [("toxic_1", 10.0), ("toxic_2", 20.0)]
    with pytest.raises(ValidationError, match="GB/T 50493-2019 allows level 1 <= 25"):
        AlarmRule(preset="gas_lel", level1=30)
    with pytest.raises(ValidationError, match=r"level1 \(10\) must be below level2 \(9\)"):
        AlarmRule(preset="gas_toxic", oel=10, level1=10, level2=9)
    with pytest.raises(ValidationError, match="gas_toxic needs oel"):
        AlarmRule(preset="gas_toxic")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "high"}, "high needs limit"),
        ({"kind": "high", "limit": 1, "period_s": 3}, "period_s does not apply to high"),
        ({"kind": "rate_of_change", "limit": 5}, "rate_of_change needs period_s"),
        ({"kind": "deviation", "limit": 5, "setpoint": "sp", "deadband": 5}, "deadband must be"),
        ({"kind": "state", "value": []}, "value needs at least one entry"),
        ({"kind": "comm_loss"}, "comm_loss is a device alarm"),
        ({"kind": "high", "preset": "gas_lel"}, "exactly one of kind or preset"),
        ({"preset": "gas_lel", "priority": 1}, "a preset names its own alarms"),
        ({"kind": "high", "limit": 1, "message": "{x}"}, "unknown placeholder {x}"),
        ({"kind": "high", "limit": 1, "priority": 5}, "less than or equal to 4"),
    ],
)
def test_rule_models_refuse_what_would_not_work(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlarmRule.model_validate(rule)


def test_config_errors_name_file_line_and_path(tmp_path: Path) -> None:
    devices = """\
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:1
    alarms:
      - {kind: comm_loss, point: pressure}
      - {point: nope, kind: high, limit: 1}
    points:
      - name: pressure
        address: 0
        alarms:
          - {kind: high, limit: 80}
          - {kind: high, limit: 90}
          - {kind: deviation, setpoint: missing, limit: 3}
      - {name: t, address: 1, alarms: [{kind: hihg, limit: 1}]}
"""
    (tmp_path / "site.yaml").write_text(site_yaml(devices, extra="alarms: {flood_count: 0}\n"))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "site.yaml")
    text = str(err.value)
    assert "alarms.flood_count" in text
    assert "devices[0].alarms[0]" in text and "point does not apply" in text
    assert "two alarms named 'high'" in text
    assert "devices[0].points[1].alarms[0].kind" in text
    # Each issue carries its line in the file.
    lines = {i.path: i.line for i in err.value.issues}
    assert lines["devices[0].alarms[0]"] == 11
    assert lines["devices[0].points[1].alarms[0].kind"] == 20


def test_references_to_points_are_checked_by_the_loader(tmp_path: Path) -> None:
    devices = """\
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:1
    alarms:
      - {point: nope, kind: high, limit: 1}
    points:
      - name: pressure
        address: 0
        alarms: [{kind: deviation, setpoint: missing, limit: 3}]
"""
    (tmp_path / "site.yaml").write_text(site_yaml(devices))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "site.yaml")
    assert [str(i).split(" ", 1)[1] for i in err.value.issues] == [
        "devices[0].alarms[0]: no point 'nope' in this device",
        "devices[0].points[0].alarms[0].setpoint: set-point 'missing' of 'pressure' is not a point",
    ]

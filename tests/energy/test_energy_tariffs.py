"""TOU calendars: validation, periods across midnight, dated versions, splits in an interval."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.modbus.codec import PointType
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.tariffs import (
    PERIODS,
    DayTable,
    TariffCalendar,
    find_calendar,
    load_calendar,
)
from tests.energy_harness import MIN, first_boundary, meter, ref_split, run, value
from tests.energy_reference import SHANGHAI, local_ms, simulate

# Half-hour boundaries, a valley across midnight, and a new version from 2027-01-01 on.
CALENDAR = """
name: test-tou
source: test
versions:
  - valid_from: 2026-01-01
    seasons:
      - name: all
        months: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        periods:
          - {period: 谷, from: "22:30", to: "06:30"}
          - {period: 平, from: "06:30", to: "18:00"}
          - {period: 尖峰, from: "18:00", to: "19:30"}
          - {period: 峰, from: "19:30", to: "22:30"}
  - valid_from: 2027-01-01
    seasons:
      - name: all
        months: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        periods:
          - {period: valley, from: "23:30", to: "07:30"}
          - {period: peak, from: "07:30", to: "23:30"}
"""


def make_calendar(tmp_path: Path) -> TariffCalendar:
    path = tmp_path / "tou.yaml"
    path.write_text(CALENDAR, encoding="utf-8")
    return load_calendar(path)


def period_2026(t_ms: int) -> str:
    local = dt.datetime.fromtimestamp(t_ms / 1000, SHANGHAI)
    m = local.hour * 60 + local.minute
    if local.year >= 2027:
        return "valley" if m >= 23 * 60 + 30 or m < 7 * 60 + 30 else "peak"
    if m >= 22 * 60 + 30 or m < 6 * 60 + 30:
        return "valley"
    if m < 18 * 60:
        return "flat"
    if m < 19 * 60 + 30:
        return "sharp"
    return "peak"


def test_lookup_crosses_midnight_and_versions_switch_by_date(tmp_path: Path) -> None:
    cal = make_calendar(tmp_path)
    table = DayTable(cal)
    day_2026, label = table.of(dt.date(2026, 12, 31))
    assert label == "test-tou@2026-01-01"
    assert day_2026 is not None
    assert PERIODS[day_2026[0]] == "valley"  # 00:00
    assert PERIODS[day_2026[6 * 60 + 29]] == "valley"
    assert PERIODS[day_2026[6 * 60 + 30]] == "flat"
    assert PERIODS[day_2026[22 * 60 + 29]] == "peak"
    assert PERIODS[day_2026[22 * 60 + 30]] == "valley"
    assert PERIODS[day_2026[1439]] == "valley"
    day_2027, label = table.of(dt.date(2027, 1, 1))
    assert label == "test-tou@2027-01-01"
    assert day_2027 is not None and PERIODS[day_2027[23 * 60]] == "peak"
    assert table.of(dt.date(2025, 6, 1)) == (None, "")  # before the first version


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        (
            [{"period": "valley", "from": "22:00", "to": "08:00"}],
            "no period covers 08:00",
        ),
        (
            [
                {"period": "valley", "from": "22:00", "to": "08:00"},
                {"period": "flat", "from": "07:00", "to": "22:00"},
            ],
            "07:00 is in valley and in flat",
        ),
        (
            [{"period": "noon", "from": "00:00", "to": "24:00"}],
            "period",
        ),
        (
            [{"period": "flat", "from": "00:00", "to": "25:00"}],
            "not HH:MM",
        ),
    ],
)
def test_a_calendar_must_cover_each_day_once(
    tmp_path: Path, periods: list[dict[str, str]], message: str
) -> None:
    doc: dict[str, Any] = {
        "name": "bad",
        "versions": [
            {
                "valid_from": "2026-01-01",
                "seasons": [{"name": "all", "months": list(range(1, 13)), "periods": periods}],
            }
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_calendar(path)
    assert str(path) in str(info.value)


def test_months_must_be_in_one_season_and_versions_in_order(tmp_path: Path) -> None:
    whole = [{"period": "flat", "from": "00:00", "to": "24:00"}]
    doc: dict[str, Any] = {
        "name": "bad",
        "versions": [
            {
                "valid_from": "2026-01-01",
                "seasons": [{"name": "a", "months": [1, 2], "periods": whole}],
            }
        ],
    }
    with pytest.raises(ValueError, match=r"no season has months \[3, 4"):
        TariffCalendar.model_validate(doc)
    doc["versions"] = [
        {
            "valid_from": d,
            "seasons": [{"name": "a", "months": list(range(1, 13)), "periods": whole}],
        }
        for d in ("2026-01-01", "2025-01-01")
    ]
    with pytest.raises(ValueError, match="rising order"):
        TariffCalendar.model_validate(doc)


def test_shipped_example_is_found_by_name() -> None:
    cal = load_calendar(find_calendar("example-tou", base=Path("/nonexistent")))
    assert cal.name == "example-tou"
    with pytest.raises(ValueError, match="the shipped set; known: example-tou"):
        find_calendar("no-such-calendar", base=Path("/nonexistent"))


def test_hourly_intervals_split_at_half_hours_across_midnight_and_a_new_version(
    tmp_path: Path,
) -> None:
    cal = make_calendar(tmp_path)
    h = simulate(
        start_ms=local_ms(2026, 12, 31, 17, 0),
        end_ms=local_ms(2027, 1, 1, 9, 5),
        poll_s=30.0,
        seed=5,
        power_kw=lambda t: 100.0 + 40.0 * ((t // 30_000) % 5),
        resolution=0.01,
        drop_share=0.03,
    )
    out = run(
        {"m1": h},
        [meter("m1", point_type=PointType.UINT32)],
        config=EnergyConfig(interval_min=60),
        calendar=cal,
    )
    intervals = out.of("interval", "m1")
    assert [d["start"][11:16] for d in intervals][:3] == ["17:00", "18:00", "19:00"]
    assert len(intervals) == 16  # 17:00 .. 08:00
    split_seen = 0
    for doc in intervals:
        start = doc["ts_ms"]
        ref = ref_split(h, start, start + 60 * MIN, period_2026)
        split_seen += sum(1 for v in ref.values() if v > 0) > 1
        for period, amount in ref.items():
            assert value(doc, f"interval.energy_import.{period}") == pytest.approx(amount, abs=1e-6)
        expected_label = (
            "test-tou@2027-01-01" if start >= local_ms(2027, 1, 1) else "test-tou@2026-01-01"
        )
        assert doc["tariff"] == expected_label
        total = sum(value(doc, f"interval.energy_import.{p}") for p in PERIODS)
        assert total == pytest.approx(value(doc, "interval.energy_import"), abs=1e-5)
    assert split_seen == 3  # 19:00 and 22:00 (2026 rules), 07:00 on Jan 1 (2027 rules)
    (day,) = out.of("day", "m1")
    assert day["tariffs"] == ["test-tou@2026-01-01"]
    ref = ref_split(h, first_boundary(h), local_ms(2027, 1, 1), period_2026)
    for period, amount in ref.items():
        assert value(day, f"day.energy_import.{period}") == pytest.approx(amount, abs=1e-6)

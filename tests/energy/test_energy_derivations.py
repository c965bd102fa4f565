"""Every number the energy stage derives, against a plain reference over simulated histories.

Histories (tests/energy_reference.py) include a 16-bit counter that wraps, a meter
replaced mid-run, dropped polls, a 40-minute outage across interval boundaries, and the
month (Nov -> Dec) and year (Dec -> Jan) boundaries in Asia/Shanghai. The stage runs on
polls built from them; its messages are compared with the reference field by field.
"""

from __future__ import annotations

import pytest

from drivers.modbus.codec import PointType
from drivers.modbus.plugin import WRAP_COUNTS
from drivers.options.energy import EnergyOptions
from drivers.reading import PointSpec, Poll, Quality
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.stage import CounterPoint, EnergyStage, counter_spec
from tests.energy_harness import (
    MIN,
    Collect,
    example_period,
    first_boundary,
    meter,
    ref_interval,
    ref_split,
    run,
    value,
)
from tests.energy_reference import History, local_ms, simulate

# -- a wrapping 16-bit counter, dropped polls, an outage across boundaries, Nov -> Dec ----


def _month_history() -> History:
    def power(t: int) -> float:  # varies poll to poll, so interpolation matters
        return 80.0 + 70.0 * ((t // 30_000) % 7) / 6

    return simulate(
        start_ms=local_ms(2026, 11, 30, 20, 0),
        end_ms=local_ms(2026, 12, 1, 2, 0),
        poll_s=30.0,
        seed=1,
        start_register=600.0,  # a uint16 x 0.01 kWh register wraps at 655.36 kWh
        power_kw=power,
        modulus=655.36,
        resolution=0.01,
        drop_share=0.05,
        outages=((local_ms(2026, 11, 30, 22, 10), local_ms(2026, 11, 30, 22, 50)),),
    )


def test_intervals_across_wrap_missed_polls_outage_and_month_boundary() -> None:
    h = _month_history()
    assert any(b < a for a, b in zip(h.register, h.register[1:], strict=False))  # it wraps
    out = run({"m1": h}, [meter("m1")])
    intervals = out.of("interval", "m1")
    starts = [d["ts_ms"] for d in intervals]
    first = local_ms(2026, 11, 30, 20, 0)
    # Every 15-minute interval from 20:00 to 01:30 local, in order, aligned to the wall clock.
    assert starts == [first + k * 15 * MIN for k in range(23)]
    assert intervals[0]["start"] == "2026-11-30T20:00:00+08:00"
    assert intervals[16]["start"] == "2026-12-01T00:00:00+08:00"
    wraps = 0
    for doc in intervals:
        start = doc["ts_ms"]
        energy, completeness = ref_interval(h, start, start + 15 * MIN, 30.0)
        assert value(doc, "interval.energy_import") == pytest.approx(energy, abs=1e-6)
        assert value(doc, "interval.energy_import.completeness") == pytest.approx(
            completeness, abs=1e-4
        )
        split = ref_split(h, start, start + 15 * MIN, example_period)
        for period, amount in split.items():
            assert value(doc, f"interval.energy_import.{period}") == pytest.approx(amount, abs=1e-6)
        assert doc["tariff"] == "example-tou@2024-01-01"
        assert doc["readings"] == h.readings(max(start, first_boundary(h)), start + 15 * MIN)
        quality = doc["points"]["interval.energy_import"]["quality"]
        assert quality == ("good" if completeness >= 0.9 and start != first else "uncertain")
        wraps += "wrap" in doc["flags"]
        assert "reset" not in doc["flags"]
    assert wraps >= 1
    # The outage 22:10-22:50 leaves the intervals it touches interpolated and incomplete.
    outage = [d for d in intervals if d["start"][11:16] in ("22:00", "22:15", "22:30", "22:45")]
    assert all("gap" in d["flags"] for d in outage)
    assert [value(d, "interval.energy_import.completeness") for d in outage[1:3]] == [0.0, 0.0]
    # Intervals add up to the counter's (unwrapped) rise: nothing lost at any boundary
    # (each published value is rounded to 1e-6).
    total = sum(value(d, "interval.energy_import") for d in intervals)
    assert total == pytest.approx(
        h.energy(first_boundary(h), local_ms(2026, 12, 1, 1, 45)), abs=1e-6 * len(intervals)
    )


def test_day_and_month_totals_close_at_local_midnight() -> None:
    h = _month_history()
    out = run({"m1": h}, [meter("m1")], config=EnergyConfig(contract_demand_kw=120))
    days = out.of("day", "m1")
    months = out.of("month", "m1")
    assert [d["period"] for d in days] == ["2026-11-30"]  # Dec 1 is still open at 02:00
    assert [m["period"] for m in months] == ["2026-11"]
    day = days[0]
    midnight = local_ms(2026, 12, 1)
    assert day["ts_ms"] == local_ms(2026, 11, 30)
    assert day["start"] == "2026-11-30T00:00:00+08:00"
    assert day["end"] == "2026-12-01T00:00:00+08:00"
    energy = h.energy(first_boundary(h), midnight)
    assert value(day, "day.energy_import") == pytest.approx(energy, abs=1e-6)
    assert value(months[0], "month.energy_import") == pytest.approx(energy, abs=1e-6)
    split = ref_split(h, local_ms(2026, 11, 30), midnight, example_period)
    for period, amount in split.items():
        assert value(day, f"day.energy_import.{period}") == pytest.approx(amount, abs=1e-6)
    # Completeness counts the whole day: 2880 polls expected, only 4 hours observed.
    readings = h.readings(first_boundary(h), midnight)
    assert value(day, "day.energy_import.completeness") == pytest.approx(readings / 2880, abs=1e-4)
    assert day["points"]["day.energy_import"]["quality"] == "uncertain"
    assert day["expected_intervals"] == 96 and day["intervals"] == 16
    # Standard coal and CO2 with the versions used.
    assert value(day, "day.energy_import.tce") == pytest.approx(energy * 0.1229 / 1000, abs=1e-6)
    assert value(day, "day.energy_import.co2") == pytest.approx(energy * 0.5306 / 1000, abs=1e-6)
    assert day["coefficients"] == {
        "standard_coal": "gbt2589-2020-equivalent",
        "grid_emission": "mee-nbs-2023-national",
    }
    # Maximum demand of the day and month, and the load factor.
    peak, peak_end = _ref_peak(h, local_ms(2026, 11, 30), midnight)
    assert value(day, "day.energy_import.demand_max") == pytest.approx(peak, abs=1e-6)
    assert day["demand_max_ts_ms"] == peak_end
    assert value(day, "day.energy_import.load_factor") == pytest.approx(
        energy / 24 / peak, abs=1e-4
    )
    assert value(months[0], "month.energy_import.demand_max") == pytest.approx(peak, abs=1e-6)
    hours_nov = 30 * 24
    assert value(months[0], "month.energy_import.load_factor") == pytest.approx(
        energy / hours_nov / peak, abs=1e-4
    )


def _ref_demand(h: History) -> dict[int, float]:
    """D(T) = (E(T) - E(T - 15 min)) / 0.25 h for every minute T with a full window."""
    out = {}
    t = first_boundary(h) + 15 * MIN
    while t <= h.ts[-1]:
        out[t] = h.energy(t - 15 * MIN, t) * 4
        t += MIN
    return out


def _ref_peak(h: History, a: int, b: int) -> tuple[float, int]:
    """Largest D(T) over windows ending in (a, b] (a window belongs to where it ends)."""
    candidates = [(kw, t) for t, kw in _ref_demand(h).items() if a < t <= b]
    kw, t = max(candidates, key=lambda c: (c[0], -c[1]))
    return kw, t


def test_demand_slides_every_minute_with_the_monthly_maximum() -> None:
    h = _month_history()
    out = run({"m1": h}, [meter("m1")])
    demand = out.of("demand", "m1")
    ref = _ref_demand(h)
    got = {d["ts_ms"]: value(d, "demand.energy_import") for d in demand}
    # One value per minute, from 15 minutes after the first whole minute to the last poll.
    assert list(got) == [t for t in ref if t <= max(got)]
    assert len(got) >= len(ref) - 1
    for t, kw in got.items():
        assert kw == pytest.approx(ref[t], abs=1e-6)
    # Running monthly maximum resets with December (local time).
    dec = local_ms(2026, 12, 1)
    for d in demand:
        t = d["ts_ms"]
        lo = local_ms(2026, 11, 1) if t <= dec else dec
        kw, at = _ref_peak(h, lo, t)
        assert value(d, "demand.energy_import.month_max") == pytest.approx(kw, abs=1e-6)
        assert d["month_max_ts_ms"] == at
    # Windows touching the outage are flagged.
    outage = [
        d
        for d in demand
        if local_ms(2026, 11, 30, 22, 10) < d["ts_ms"] <= local_ms(2026, 11, 30, 23, 5)
    ]
    assert outage and all(
        d["points"]["demand.energy_import"]["quality"] == "uncertain" for d in outage
    )


# -- meter replacement and the year boundary -----------------------------------------------


def test_meter_replacement_is_flagged_not_counted_across_the_year_boundary() -> None:
    replace_at = local_ms(2026, 12, 31, 23, 20) + 7_000
    h = simulate(
        start_ms=local_ms(2026, 12, 31, 22, 0),
        end_ms=local_ms(2027, 1, 1, 0, 50),
        poll_s=30.0,
        seed=2,
        start_register=98_765.43,
        power_kw=lambda t: 200.0 + 20.0 * ((t // 30_000) % 3),
        resolution=0.01,
        replace_at=replace_at,
        new_meter_start=0.0,
    )
    # uint32 x 0.01: wraps at 42 949 672.96, so the drop to a new meter is no wrap.
    out = run({"m1": h}, [meter("m1", point_type=PointType.UINT32)])
    intervals = out.of("interval", "m1")
    for doc in intervals:
        start = doc["ts_ms"]
        energy, _ = ref_interval(h, start, start + 15 * MIN, 30.0)
        assert value(doc, "interval.energy_import") == pytest.approx(energy, abs=1e-6)
        assert value(doc, "interval.energy_import") >= 0
    flagged = [d["start"][11:16] for d in intervals if "reset" in d["flags"]]
    assert flagged == ["23:15"]
    reset = next(d for d in intervals if "reset" in d["flags"])
    assert reset["points"]["interval.energy_import"]["quality"] == "uncertain"
    assert "replacement" in reset["points"]["interval.energy_import"]["reason"]
    days = out.of("day", "m1")
    months = out.of("month", "m1")
    assert [d["period"] for d in days] == ["2026-12-31"]
    assert [m["period"] for m in months] == ["2026-12"]
    assert months[0]["end"] == "2027-01-01T00:00:00+08:00"
    energy = h.energy(first_boundary(h), local_ms(2027, 1, 1))
    assert value(days[0], "day.energy_import") == pytest.approx(energy, abs=1e-6)
    assert value(months[0], "month.energy_import") == pytest.approx(energy, abs=1e-6)
    assert "reset" in days[0]["flags"]
    assert [d["start"][:16] for d in intervals][-4:] == [
        "2026-12-31T23:45",
        "2027-01-01T00:00",
        "2027-01-01T00:15",
        "2027-01-01T00:30",
    ]


def test_rise_beyond_max_rate_is_a_reset_and_huge_wrap_is_not_believed() -> None:
    opts = EnergyOptions(kind="electricity", direction="import", max_rate=500.0)
    spec = counter_spec(
        opts, wrap_counts=WRAP_COUNTS[PointType.UINT32], scale=0.01, unit="kWh", poll_interval_s=1.0
    )
    assert spec.modulus == pytest.approx(42_949_672.96)
    out = Collect()
    stage = EnergyStage(
        [CounterPoint("m", "e", opts, spec, 1.0, "kWh")],
        config=EnergyConfig(interval_min=5),
        outlet=out,
        site="s",
    )
    t0 = local_ms(2026, 3, 1, 10, 0)
    values = [100.0 + 0.1 * k for k in range(600)]
    values[300:] = [v + 5000.0 for v in values[300:]]  # a jump no 500 kW load can make
    for k, v in enumerate(values):
        stage.observe(Poll("m", (t0 + k * 1000) * 1_000_000, (PointSpec("e", "kWh"),), [v]))
    (first,) = out.of("interval")
    assert value(first, "interval.e") == pytest.approx(0.1 * 299, abs=1e-6)  # minute 0..5
    assert "reset" in first["flags"]
    assert first["points"]["interval.e"]["quality"] == "uncertain"


def test_bad_and_uncertain_readings_are_not_counted() -> None:
    out = Collect()
    cp = meter("m", poll_s=1.0)
    stage = EnergyStage([cp], config=EnergyConfig(interval_min=5), outlet=out, site="s")
    specs = (PointSpec("energy_import", "kWh"),)
    t0 = local_ms(2026, 3, 1, 10, 0)
    for k in range(601):
        t = (t0 + k * 1000) * 1_000_000
        if 100 <= k < 400:  # the meter answers, but the counter point is bad
            stage.observe(Poll("m", t, specs, [None], {0: (Quality.BAD, "exception 02")}))
        else:
            stage.observe(Poll("m", t, specs, [10.0 + 0.01 * k]))
    (first, second) = out.of("interval")
    # The rise is steady, so interpolating across the bad stretch is exact.
    assert value(first, "interval.energy_import") == pytest.approx(3.0, abs=1e-6)
    assert value(second, "interval.energy_import") == pytest.approx(3.0, abs=1e-6)
    assert value(first, "interval.energy_import.completeness") == pytest.approx(100 / 300, abs=1e-4)
    assert value(second, "interval.energy_import.completeness") == pytest.approx(
        200 / 300, abs=1e-4
    )
    assert "gap" in first["flags"] and "gap" in second["flags"]


@pytest.mark.parametrize("max_rate", [None, 300.0])
def test_an_outage_across_a_wrap_counts_only_with_a_rate_limit(max_rate: float | None) -> None:
    outage = (local_ms(2026, 5, 1, 10, 5), local_ms(2026, 5, 1, 12, 0))
    h = simulate(
        start_ms=local_ms(2026, 5, 1, 9, 0),
        end_ms=local_ms(2026, 5, 1, 13, 0),
        poll_s=30.0,
        seed=9,
        start_register=300.0,
        power_kw=lambda t: 150.0,  # ~290 kWh in the outage: the 655.36 register wraps in it
        modulus=655.36,
        resolution=0.01,
        outages=(outage,),
    )
    options = EnergyOptions(kind="electricity", direction="import", max_rate=max_rate)
    out = run({"m1": h}, [meter("m1", options=options)])
    hours = [d for d in out.of("interval") if outage[0] - 15 * MIN < d["ts_ms"] < outage[1]]
    total = sum(value(d, "interval.energy_import") for d in hours)
    truth = h.energy(hours[0]["ts_ms"], hours[-1]["ts_ms"] + 15 * MIN)
    if max_rate is None:  # ambiguous: flagged and not counted, never a huge number
        assert all("reset" in d["flags"] for d in hours)
        assert total < truth - 250
    else:
        assert not any("reset" in d["flags"] for d in hours)
        assert total == pytest.approx(truth, abs=1e-5)

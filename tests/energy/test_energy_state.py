"""The energy stage's state across restarts (edge_agent/energy/state.py).

The check is an identity: a stage that is stopped mid-interval, saved, and restored from
its file must publish exactly what one stage that never stopped publishes from the same
polls (the polls of the down time missing from both). Histories cross local midnight and
the month, so the day and month totals and the demand peaks are part of what must match.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from drivers.reading import PointSpec, Poll, Quality
from edge_agent.config.site import load_config
from edge_agent.energy.config import EnergyConfig, HierarchyNode
from edge_agent.energy.stage import CounterPoint, EnergyStage, build_energy_stages
from edge_agent.energy.state import EnergyStateFile
from tests.damaged_database import damage
from tests.energy_harness import EXAMPLE, Collect, meter
from tests.energy_reference import History, local_ms, simulate

CONFIG = EnergyConfig(
    contract_demand_kw=150,
    hierarchy=(HierarchyNode(name="hall", level="area", meters=("m1", "m2")),),
)
RESTART = local_ms(2026, 11, 30, 23, 52) + 40_000  # mid-interval, 8 minutes before midnight
BACK = RESTART + 95_000  # the agent was down for 95 s


def _histories() -> dict[str, History]:
    common = {
        "start_ms": local_ms(2026, 11, 30, 22, 0),
        "end_ms": local_ms(2026, 12, 1, 1, 0),
        "poll_s": 30.0,
        "resolution": 0.01,
    }
    return {
        "m1": simulate(seed=5, power_kw=lambda t: 90.0 + (t // 60_000) % 13, **common),  # type: ignore[arg-type]
        "m2": simulate(seed=6, power_kw=lambda t: 40.0, drop_share=0.1, **common),  # type: ignore[arg-type]
    }


def _polls(histories: dict[str, History], a: int, b: int) -> list[Poll]:
    specs = (PointSpec("energy_import", "kWh"),)
    events = sorted(
        (t, name, v)
        for name, h in histories.items()
        for t, v in zip(h.ts, h.register, strict=True)
        if a <= t < b
    )
    return [Poll(name, t * 1_000_000, specs, [v]) for t, name, v in events]


def _stage(points: Sequence[CounterPoint], out: Collect, state: Path | None) -> EnergyStage:
    return EnergyStage(
        points,
        config=CONFIG,
        outlet=out,
        site="plant",
        calendar=EXAMPLE,
        state=None if state is None else EnergyStateFile(state),
    )


def _feed(stage: EnergyStage, polls: Sequence[Poll]) -> None:
    for p in polls:
        stage.observe(p)


def test_a_restored_stage_publishes_what_one_that_never_stopped_publishes(
    tmp_path: Path,
) -> None:
    h = _histories()
    points = [meter("m1"), meter("m2")]
    end = local_ms(2026, 12, 1, 1, 0)
    reference = Collect()
    _feed(_stage(points, reference, None), _polls(h, 0, RESTART) + _polls(h, BACK, end))

    path = tmp_path / "outbox.energy.sqlite"
    out = Collect()
    before = _stage(points, out, path)
    _feed(before, _polls(h, 0, RESTART))
    before.save_state()
    assert before.state is not None
    before.state.close()
    cut = len(out.docs)
    after = _stage(points, out, path)
    assert after.restore_state() == 2 + 2 + 1  # two counters, hall and site totals, the tree
    _feed(after, _polls(h, BACK, end))

    assert len(out.docs) > cut  # both halves published
    assert out.docs == reference.docs
    interval = next(
        d
        for d in out.docs[cut:]
        if d["type"] == "interval" and d["device"] == "m1" and d["ts_ms"] < RESTART
    )
    assert interval["start"] == "2026-11-30T23:45:00+08:00"  # the one the restart cut
    assert "partial" not in interval["flags"]
    assert "gap" in interval["flags"]  # the 95 s down time is interpolated, and says so
    days = [d for d in out.docs[cut:] if d["type"] == "day" and d["device"] == "m1"]
    assert [d["intervals"] for d in days] == [8]  # 22:00-24:00 of Nov 30, all of them


def test_without_state_the_cut_interval_is_partial(tmp_path: Path) -> None:
    """What the state file prevents: the control case of the test above."""
    h = _histories()
    points = [meter("m1"), meter("m2")]
    out = Collect()
    _feed(_stage(points, out, None), _polls(h, 0, RESTART))
    cut = len(out.docs)
    _feed(_stage(points, out, None), _polls(h, BACK, local_ms(2026, 12, 1, 1, 0)))
    first = next(d for d in out.docs[cut:] if d["type"] == "interval" and d["device"] == "m1")
    assert first["start"] == "2026-11-30T23:45:00+08:00"
    assert "partial" in first["flags"]
    days = [d for d in out.docs[cut:] if d["type"] == "day" and d["device"] == "m1"]
    assert [d["intervals"] for d in days] == [1]


def test_a_changed_counter_starts_afresh_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = _histories()
    path = tmp_path / "state.sqlite"
    stage = _stage([meter("m1"), meter("m2")], Collect(), path)
    _feed(stage, _polls(h, 0, RESTART))
    stage.save_state()
    assert stage.state is not None
    stage.state.close()
    # m1 is now polled every 10 s: its saved completeness would be counted wrongly.
    changed = [meter("m1", poll_s=10.0), meter("m2")]
    caplog.set_level(logging.INFO, "edge_agent.energy.stage")
    restored = _stage(changed, Collect(), path)
    # m2, and the hall's and site's totals and pending intervals: the tree itself is the
    # same, and what m1 delivered before still counts in it.
    assert restored.restore_state() == 4
    assert "counter:m1/energy_import (its configuration changed)" in caplog.text
    assert "counter:m2" not in caplog.text
    out = restored.outlet
    assert isinstance(out, Collect)
    _feed(restored, _polls(h, BACK, local_ms(2026, 12, 1, 1, 0)))
    firsts = {
        d["device"]: d for d in reversed(out.docs) if d["type"] == "interval" and "node" not in d
    }
    assert "partial" in firsts["m1"]["flags"] and "partial" not in firsts["m2"]["flags"]


def test_a_corrupt_state_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    EnergyStateFile(path).close()
    damage(path)  # ours, and corrupt
    stage = _stage([meter("m1"), meter("m2")], Collect(), path)
    assert stage.restore_state() == 0
    assert [p.name.startswith("state.sqlite.corrupt-") for p in tmp_path.iterdir()].count(True) == 1
    assert stage.state is not None
    stage.state.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM energy_state").fetchone() == (0,)


SITE = """\
site: plant
gateway: gw-01
outbox: {path: var/outbox.sqlite}
energy: {state_save_s: 5}
devices:
  - name: m1
    driver: modbus
    url: tcp://127.0.0.1:1502
    interval_s: 30
    points:
      - {name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
"""


async def test_the_agent_stage_saves_when_it_stops_and_continues_at_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "site.yaml").write_text(SITE)
    loaded = load_config(tmp_path / "site.yaml")
    h = _histories()
    path = tmp_path / "var" / "outbox.energy.sqlite"
    out = Collect()
    [stage] = build_energy_stages(loaded, out, state_path=path)
    assert stage.restore_state() == 0  # first start: nothing saved yet
    task = asyncio.create_task(stage.run())
    _feed(stage, [p for p in _polls(h, 0, RESTART) if p.device == "m1"])
    await asyncio.sleep(0)  # let run() start before it is stopped
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    cut = len(out.docs)

    [again] = build_energy_stages(loaded, out, state_path=path)  # restores on build
    _feed(again, [p for p in _polls(h, BACK, local_ms(2026, 12, 1, 1, 0)) if p.device == "m1"])
    first = next(d for d in out.docs[cut:] if d["type"] == "interval")
    assert (first["start"], "partial" in first["flags"]) == ("2026-11-30T23:45:00+08:00", False)


@pytest.mark.parametrize("shift_h", [-27.0, +1.0])
def test_a_state_from_long_ago_or_from_the_future_is_not_used(
    tmp_path: Path, shift_h: float, caplog: pytest.LogCaptureFixture
) -> None:
    """27 h ago: the down time's energy is not spread over it. 1 h ahead (the clock went
    back): every reading would be older than the saved one and ignored."""
    h = _histories()
    path = tmp_path / "state.sqlite"
    stage = _stage([meter("m1"), meter("m2")], Collect(), path)
    _feed(stage, _polls(h, 0, RESTART))
    stage.save_state()
    assert stage.state is not None
    stage.state.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE energy_state SET saved_ms = saved_ms + ?", (int(shift_h * 3.6e6),))
    again = _stage([meter("m1"), meter("m2")], Collect(), path)
    assert again.restore_state() == 0
    assert f"starting afresh for all (saved {-shift_h:.1f} h ago)" in caplog.text
    assert again.state is not None
    again.state.close()


@pytest.mark.looptime
async def test_the_state_is_saved_only_after_a_change_at_multiples_of_the_period(
    tmp_path: Path,
) -> None:
    """state_save_s is 5: a save at the first multiple of 5 s (loop clock) after a counter
    reading, none while nothing is read (a device down, or nothing polled yet)."""
    (tmp_path / "site.yaml").write_text(SITE)
    [stage] = build_energy_stages(
        load_config(tmp_path / "site.yaml"), Collect(), state_path=tmp_path / "state.sqlite"
    )
    state = stage.state
    assert state is not None
    loop = asyncio.get_running_loop()
    saves: list[float] = []
    dump = state.dump

    def dump_counted(rows: Any) -> bytes:
        saves.append(loop.time())
        return dump(rows)

    state.dump = dump_counted  # type: ignore[method-assign]
    polls = [p for p in _polls(_histories(), 0, RESTART) if p.device == "m1"]
    task = asyncio.create_task(stage.run())
    await asyncio.sleep(60)
    assert saves == []
    await asyncio.sleep(0.3)
    stage.observe(polls[0])  # t=60.3
    await asyncio.sleep(30)
    assert saves == [65.0]
    stage.observe(Poll("m1", polls[1].ts_ns, polls[1].points, [None], {0: (Quality.BAD, "x")}))
    await asyncio.sleep(30)
    assert saves == [65.0]  # a bad reading changes nothing worth saving
    stage.observe(polls[1])  # t=120.3
    await asyncio.sleep(30)
    assert saves == [65.0, 125.0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(saves) == 3  # and once at the stop

"""Where a write's read-back comes from (edge_agent/commands/readback.py), as pure logic.

Units with a hand-set schedule stand for a line; the device's polls are real `Poll`s.
"""

from __future__ import annotations

import asyncio

from drivers.contract import WriteFailed
from drivers.reading import PointSpec, Poll, Quality, Value
from edge_agent.commands.readback import READ_BACK_MARGIN, PolledReadBack, read_back_now
from edge_agent.commands.slots import WriteSlots
from edge_agent.runtime.poller import Unit

POINTS = (PointSpec("flow_setpoint"), PointSpec("level"))


class NoDriver:
    """A unit's driver is never called here."""

    name = "plc-2"
    points = POINTS


def _units(now: float, *dues: float) -> list[Unit]:
    units = []
    for due in dues:
        unit = Unit(NoDriver(), 1.0)  # type: ignore[arg-type]
        unit.next_due = now + due
        units.append(unit)
    return units


async def test_the_read_back_runs_at_once_only_where_it_moves_no_poll() -> None:
    now = asyncio.get_running_loop().time()
    write_s = 0.01
    # Alone on its line: nobody to move.
    alone = _units(now, -1.0)
    assert read_back_now(WriteSlots(limit=1, units=alone), alone[0], write_s=write_s, wait_max_s=5)
    # Shared, with idle time for one more transaction like the write.
    idle = _units(now, 0.5, 0.8)
    slots = WriteSlots(limit=1, frame_gap_s=0.005, units=idle)
    assert read_back_now(slots, idle[0], write_s=write_s, wait_max_s=5)
    # Shared and busy: the device's next poll (due within the expiry) reads it back.
    tight = READ_BACK_MARGIN * write_s  # plus the frame gap would be needed
    busy = _units(now, tight, 0.3)
    slots = WriteSlots(limit=1, frame_gap_s=0.005, units=busy)
    assert not read_back_now(slots, busy[1], write_s=write_s, wait_max_s=5)
    # ... unless that poll is further away than the request's expiry.
    assert read_back_now(slots, busy[1], write_s=write_s, wait_max_s=0.2)


def _answers() -> tuple[list[tuple[str, Value]], PolledReadBack, Unit]:
    unit = _units(0.0, 0.0)[0]
    answers: list[tuple[str, Value]] = []
    work = PolledReadBack(
        unit,
        "flow_setpoint",
        done=lambda value: answers.append(("done", value)),
        failed=lambda reason: answers.append(("failed", reason)),
    ).waiting()
    return answers, work, unit


def test_the_next_poll_of_the_device_answers_with_its_value() -> None:
    answers, work, unit = _answers()
    assert not work.polled()  # another unit's poll: still waiting
    unit.stats.polls += 1
    unit.stats.last_poll = Poll("plc-2", 1, POINTS, [42.5, 7])
    assert work.polled()
    assert answers == [("done", 42.5)]


def test_a_bad_point_or_a_device_gone_down_is_written_but_not_read_back() -> None:
    answers, work, unit = _answers()
    unit.stats.polls += 1
    unit.stats.last_poll = Poll(
        "plc-2", 1, POINTS, [None, 7], {0: (Quality.BAD, "exception 02 (illegal data address)")}
    )
    assert work.polled()
    answers2, work2, unit2 = _answers()
    unit2.stats.polls += 1
    unit2.stats.up, unit2.stats.reason = False, "timeout"
    assert work2.polled()
    answers3, work3, _ = _answers()
    work3.abandon("the device's line was restarted")
    assert answers + answers2 + answers3 == [
        ("failed", "written, but the read-back failed: exception 02 (illegal data address)"),
        ("failed", "written, but the read-back failed: timeout"),
        ("failed", "written, but not read back: the device's line was restarted"),
    ]


async def test_a_stopped_line_answers_the_read_backs_still_waiting() -> None:
    answers, work, unit = _answers()
    slots = WriteSlots(limit=1, units=[unit])
    slots.after_poll(work)
    await slots.run_waiting()  # no poll of the device yet
    assert answers == []
    slots.close("stopped")
    assert answers == [("failed", "written, but not read back: stopped")]
    await slots.run_waiting()
    assert len(answers) == 1


async def test_a_second_write_to_the_point_reads_the_first_back_at_once() -> None:
    answers, work, unit = _answers()

    async def read() -> Value:
        return 20.0

    await work.read_now(read)
    unit.stats.polls += 1
    unit.stats.last_poll = Poll("plc-2", 1, POINTS, [30.0, 7])
    assert work.polled()  # already answered: the poll after the second write is not its
    work.abandon("stopped")
    answers2, work2, _ = _answers()

    async def silent() -> Value:
        raise WriteFailed("timeout")

    await work2.read_now(silent)
    assert answers + answers2 == [
        ("done", 20.0),
        ("failed", "written, but the read-back failed: timeout"),
    ]

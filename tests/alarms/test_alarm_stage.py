"""The alarm stage driven by scripted polls on a virtual clock: every rule kind, every state.

Each test builds a real Agent from a site file (nothing runs: no broker, no device) and
feeds polls to its alarm stage; transitions are read back from the outbox rows, which is
where the stage must have put them, with their seq.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from edge_agent.alarms.store import AlarmStore, PendingMessage
from tests.alarm_support import StageBench, settle
from tests.damaged_database import damage

pytestmark = pytest.mark.looptime

BOILER = """\
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:1
    interval_s: 1.0
    points:
      - name: pressure
        address: 0
        type: float32
        unit: bar
        alarms:
          - {kind: high, limit: 80, deadband: 2}
          - {kind: high_high, limit: 90, priority: 1, message: "{point} {value} {unit} >= {limit}"}
          - {kind: low, limit: 10, deadband: 1, on_delay_s: 2, off_delay_s: 3}
          - {kind: low_low, limit: 5}
"""
HIGH = "boiler/pressure/high"
HIGH_HIGH = "boiler/pressure/high_high"
LOW = "boiler/pressure/low"


async def test_high_limit_with_deadband_through_every_state(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    for value in (50.0, 79.99):
        bench.poll("boiler", {"pressure": value})
    assert bench.events() == []
    bench.poll("boiler", {"pressure": 80.0})  # x >= limit sets
    assert bench.events(HIGH) == [("raise", "active_unack")]
    for value in (79.0, 78.0, 85.0):  # in the deadband (limit - 2 <= x): still active
        bench.poll("boiler", {"pressure": value})
    assert bench.events(HIGH) == [("raise", "active_unack")]
    bench.poll("boiler", {"pressure": 77.99})  # x < limit - deadband clears
    assert bench.events(HIGH) == [("raise", "active_unack"), ("clear", "rtn_unack")]
    reply = bench.command(cmd="ack", id=HIGH, comment="seen")
    assert reply["ok"] is True and reply["alarm"]["state"] == "normal"
    bench.poll("boiler", {"pressure": 81.0})
    reply = bench.command(cmd="ack", id=HIGH, request_id="r-7")
    assert reply["request_id"] == "r-7" and reply["alarm"]["state"] == "active_ack"
    bench.poll("boiler", {"pressure": 60.0})
    assert bench.events(HIGH) == [
        ("raise", "active_unack"),
        ("clear", "rtn_unack"),
        ("ack", "normal"),
        ("raise", "active_unack"),
        ("ack", "active_ack"),
        ("clear", "normal"),
    ]
    messages = [m for m in bench.messages() if m["id"] == HIGH]
    assert [m["transition"] for m in messages] == [1, 2, 3, 4, 5, 6]
    seqs = [m["seq"] for m in bench.messages()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    first = messages[0]
    assert first["value"] == 80.0 and first["limit"] == 80.0 and first["unit"] == "bar"
    assert first["priority"] == 3 and first["device"] == "boiler" and first["point"] == "pressure"
    assert first["message"] == "pressure high: 80 bar (limit 80 bar)"
    assert first["previous"] == "normal" and first["quality"] == "good"
    ack = messages[2]
    assert ack["operator"] == "li.wei" and ack["comment"] == "seen"
    bench.close()


async def test_high_high_is_its_own_alarm_with_its_own_message(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {"pressure": 95.5})
    assert bench.events() == [("raise", "active_unack"), ("raise", "active_unack")]
    hh = next(m for m in bench.messages() if m["id"] == HIGH_HIGH)
    assert hh["priority"] == 1 and hh["message"] == "pressure 95.5 bar >= 90"
    bench.poll("boiler", {"pressure": 89.99})  # no deadband on high_high
    assert bench.events(HIGH_HIGH) == [("raise", "active_unack"), ("clear", "rtn_unack")]
    assert bench.events(HIGH) == [("raise", "active_unack")]
    bench.close()


async def test_on_and_off_delay_edges(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {"pressure": 9.0})  # t=0: low condition, on-delay 2 s starts
    await settle(1.999)
    bench.poll("boiler", {"pressure": 9.0})
    assert bench.events(LOW) == []
    await settle(0.001)  # t=2.0 exactly: held for on_delay_s
    bench.poll("boiler", {"pressure": 9.0})
    assert bench.events(LOW) == [("raise", "active_unack")]
    # Off-delay 3 s, and the deadband: 10.5 is inside it (clears only above 11).
    await settle(1)
    bench.poll("boiler", {"pressure": 10.5})
    await settle(5)
    bench.poll("boiler", {"pressure": 10.5})
    assert bench.events(LOW) == [("raise", "active_unack")]
    bench.poll("boiler", {"pressure": 11.5})  # t=9: clear condition, off-delay starts
    await settle(2.999)
    bench.poll("boiler", {"pressure": 12.0})
    assert bench.events(LOW) == [("raise", "active_unack")]
    await settle(0.001)
    bench.poll("boiler", {"pressure": 12.0})
    assert bench.events(LOW) == [("raise", "active_unack"), ("clear", "rtn_unack")]
    bench.close()


async def test_a_blip_shorter_than_the_on_delay_never_raises(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    for _ in range(5):
        bench.poll("boiler", {"pressure": 9.0})
        await settle(1.5)
        bench.poll("boiler", {"pressure": 20.0})  # back before the 2 s on-delay ran out
        await settle(1)
    # A bad reading breaks a run too: 9 at t, bad at t+1, 9 at t+2 does not count as 2 s.
    bench.poll("boiler", {"pressure": 9.0})
    await settle(1)
    bench.poll("boiler", {}, bad={"pressure": "timeout"})
    await settle(1)
    bench.poll("boiler", {"pressure": 9.0})
    assert bench.events(LOW) == []
    await settle(2)
    bench.poll("boiler", {"pressure": 9.0})
    assert bench.events(LOW) == [("raise", "active_unack")]
    bench.close()


async def test_bad_quality_never_raises_or_clears_a_process_alarm(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {}, bad={"pressure": "exception 02 (illegal data address)"})
    bench.all_bad("boiler")
    assert bench.events() == []
    bench.poll("boiler", {"pressure": 85.0})
    bench.all_bad("boiler")  # an active alarm holds while the data is bad
    assert bench.events() == [("raise", "active_unack")]
    assert bench.stage.alarms[HIGH].status.active is True
    # Uncertain data is judged, and says so.
    bench.poll("boiler", {"pressure": 50.0}, uncertain={"pressure": "sensor drift"})
    clear = bench.messages()[-1]
    assert (clear["event"], clear["quality"]) == ("clear", "uncertain")
    bench.close()


PLANT = """\
  - name: plant
    driver: modbus
    url: tcp://127.0.0.1:1
    interval_s: 1.0
    alarms:
      - {kind: comm_loss, on_delay_s: 2, priority: 2}
      - {point: level, kind: high, limit: 90}
    points:
      - name: flow
        address: 0
        type: float32
        unit: m3/h
        alarms: [{kind: rate_of_change, limit: 10, period_s: 5, direction: up, deadband: 2}]
      - {name: fault, table: coil, address: 0, alarms: [{kind: state, value: true, latch: true}]}
      - {name: mode, address: 10, alarms: [{kind: state, value: [3, 4], message: "mode {value}"}]}
      - name: temp
        address: 2
        type: float32
        unit: degC
        alarms: [{kind: deviation, setpoint: temp_sp, limit: 5, deadband: 1}]
      - {name: temp_sp, address: 4, type: float32, unit: degC}
      - {name: level, address: 6, type: float32, unit: "%", alarms: [{kind: stale, intervals: 3}]}
"""
BASE = {"temp": 50.0, "temp_sp": 50.0, "fault": False, "mode": 1, "level": 40.0}


async def test_rate_of_change_within_the_period(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    bench.start()
    roc = "plant/flow/rate_of_change"
    for flow in (0.0, 2.0, 4.0, 6.0, 8.0):  # t = 0..4: +8 within 5 s
        bench.poll("plant", {**BASE, "flow": flow})
        await settle(1)
    assert bench.events(roc) == []
    bench.poll("plant", {**BASE, "flow": 10.0})  # t=5: 10 - (t=0: 0) = 10
    assert bench.events(roc) == [("raise", "active_unack")]
    await settle(1)
    bench.poll("plant", {**BASE, "flow": 10.0})  # t=6: 10 - 2 = 8, in the deadband
    assert bench.events(roc) == [("raise", "active_unack")]
    await settle(1)
    bench.poll("plant", {**BASE, "flow": 10.0})  # t=7: 10 - 4 = 6 < 8: clears
    assert bench.events(roc) == [("raise", "active_unack"), ("clear", "rtn_unack")]
    for flow in (0.0, -30.0, -60.0):  # falling fast: direction up ignores it
        await settle(1)
        bench.poll("plant", {**BASE, "flow": flow})
    assert len(bench.events(roc)) == 2
    message = bench.messages()[0]
    assert message["message"] == "flow rate of change: 10 m3/h (limit 10 per 5 s)"
    bench.close()


async def test_state_alarms_on_a_bit_latched_and_on_enum_values(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    bench.start()
    fault, mode = "plant/fault/state", "plant/mode/state"
    bench.poll("plant", {**BASE, "fault": True, "mode": 3})
    bench.poll("plant", {**BASE, "fault": True, "mode": 4})  # still an alarm value
    assert bench.command(cmd="reset", id=fault)["error"] == (
        "the condition is still active: reset refused"
    )
    bench.poll("plant", {**BASE, "fault": False, "mode": 2})
    assert bench.events(mode) == [("raise", "active_unack"), ("clear", "rtn_unack")]
    assert [m["message"] for m in bench.messages() if m["id"] == mode] == ["mode 3", "mode 2"]
    # Latched: back to normal it stays annunciated; ack keeps it latched; reset ends it.
    assert bench.events(fault) == [("raise", "active_unack"), ("clear", "latched")]
    assert bench.command(cmd="ack", id=fault)["alarm"]["state"] == "latched"
    reply = bench.command(cmd="reset", id=fault, comment="relay replaced")
    assert reply["ok"] and reply["alarm"]["state"] == "normal"
    assert bench.command(cmd="reset", id=fault)["error"] == "not latched: nothing to reset"
    assert bench.events(fault)[-2:] == [("ack", "latched"), ("reset", "normal")]
    bench.close()


async def test_deviation_from_a_set_point_point(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    bench.start()
    dev = "plant/temp/deviation"
    bench.poll("plant", {**BASE, "temp": 54.9})
    assert bench.events(dev) == []
    bench.poll("plant", {**BASE, "temp": 55.0})
    bench.poll("plant", {**BASE, "temp": 54.5})  # deviation 4.5: in the deadband
    assert bench.events(dev) == [("raise", "active_unack")]
    bench.poll("plant", {**BASE, "temp": 53.9})
    assert bench.events(dev)[-1] == ("clear", "rtn_unack")
    bench.poll("plant", {**BASE, "temp": 54.0, "temp_sp": 60.0})  # the set-point moved: below
    assert bench.events(dev)[-1] == ("raise", "active_unack")
    bench.poll("plant", {**BASE, "temp": 20.0}, bad={"temp_sp": "timeout"})  # unjudgeable
    assert len(bench.events(dev)) == 3
    bench.close()


async def test_stale_data_by_polls_and_by_the_timer(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    stage = bench.start()
    stale = "plant/level/stale"
    bench.poll("plant", BASE)  # t=0: good
    for _ in range(2):
        await settle(1)
        bench.poll("plant", BASE, bad={"level": "exception 02 (illegal data address)"})
    await settle(0.999)
    bench.poll("plant", BASE, uncertain={"level": "sensor drift"})  # not good data either
    assert bench.events(stale) == []
    await settle(0.001)  # t=3: 3 intervals without a good reading
    stage.tick()
    assert bench.events(stale) == [("raise", "active_unack")]
    raised = bench.messages()[-1]
    assert raised["reason"] == "sensor drift"
    assert raised["message"] == "level: stale data, no good reading for 3 s (sensor drift)"
    bench.poll("plant", BASE)
    assert bench.events(stale)[-1] == ("clear", "rtn_unack")
    # A device that stops answering produces no polls at all: the timer notices.
    await settle(2.9)
    stage.tick()
    assert len(bench.events(stale)) == 2
    await settle(0.1)
    stage.tick()
    assert bench.events(stale)[-1] == ("raise", "active_unack")
    bench.close()


async def test_comm_loss_with_an_on_delay_decided_by_the_timer(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    stage = bench.start()
    comm = "plant/comm_loss"
    bench.poll("plant", BASE, bad={"flow": "exception 04", "fault": "exception 04"})
    assert bench.events(comm) == []  # some points read: the device talks
    bench.all_bad("plant", "timeout")  # t=0: no answer; the poller emits nothing more
    await settle(1.999)
    stage.tick()
    assert bench.events(comm) == []
    await settle(0.001)
    stage.tick()
    assert bench.events(comm) == [("raise", "active_unack")]
    raised = bench.messages()[-1]
    assert raised["priority"] == 2 and raised["point"] is None
    assert (
        raised["reason"] == "timeout" and raised["message"] == "plant: communication lost (timeout)"
    )
    # The process alarms held meanwhile: bad data raised nothing else.
    assert {m["id"] for m in bench.messages()} == {comm}
    bench.poll("plant", BASE)
    assert bench.events(comm)[-1] == ("clear", "rtn_unack")
    bench.close()


async def test_device_level_rule_for_a_named_point(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, PLANT)
    bench.start()
    bench.poll("plant", {**BASE, "level": 95.0})
    assert bench.events("plant/level/high") == [("raise", "active_unack")]
    bench.close()


async def test_shelving_hides_changes_and_expires(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    stage = bench.start()
    bench.poll("boiler", {"pressure": 85.0})
    reply = bench.command(cmd="shelve", id=HIGH, duration_s=60, comment="sensor swap")
    assert reply["alarm"]["state"] == "shelved"
    assert reply["alarm"]["shelved_until_ms"] == bench.wall.ms + 60_000
    assert bench.command(cmd="ack", id=HIGH)["error"] == "shelved: cannot acknowledge"
    bench.poll("boiler", {"pressure": 50.0})  # clears and raises while shelved: not annunciated
    bench.poll("boiler", {"pressure": 86.0})
    assert bench.events(HIGH) == [("raise", "active_unack"), ("shelve", "shelved")]
    assert stage.alarms[HIGH].status.active is True
    bench.wall.ms += 59_999
    stage.tick()
    assert len(bench.events(HIGH)) == 2
    bench.wall.ms += 1
    stage.tick()  # expired: back, and unacknowledged because the condition is active
    assert bench.events(HIGH)[-1] == ("unshelve", "active_unack")
    expired = bench.messages()[-1]
    assert (expired["operator"], expired["comment"]) == ("system", "shelving expired")
    assert stage.counters.raised == 1  # hidden raises are not annunciated
    bench.close()


async def test_out_of_service_and_back(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {"pressure": 85.0})
    assert bench.command(cmd="out_of_service", id=HIGH, operator="wang")["error"] == (
        "out_of_service needs a comment (the reason)"
    )
    reply = bench.command(cmd="out_of_service", id=HIGH, operator="wang", comment="calibration")
    assert reply["alarm"]["state"] == "out_of_service"
    assert bench.command(cmd="shelve", id=HIGH, duration_s=5, comment="x")["error"] == (
        "out of service: cannot shelve"
    )
    bench.poll("boiler", {"pressure": 50.0})
    reply = bench.command(cmd="in_service", id=HIGH, operator="wang")
    assert reply["alarm"]["state"] == "normal"
    assert bench.events(HIGH) == [
        ("raise", "active_unack"),
        ("out_of_service", "out_of_service"),
        ("in_service", "normal"),
    ]
    bench.close()


async def test_commands_that_cannot_apply_are_answered_with_the_reason(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    stage = bench.start()
    cases = [
        (b"{not json", "not JSON"),
        (b"[1]", "a command is a JSON object"),
        (b'{"cmd": "ack", "id": "x"}', "operator: Field required"),
        (b'{"cmd": "wipe", "id": "x", "operator": "o"}', "cmd: Input should be"),
        (b'{"cmd": "ack", "id": "nope", "operator": "o"}', "unknown alarm 'nope'"),
        (b'{"cmd": "ack", "id": "%s", "operator": "o"}' % HIGH.encode(), "nothing to acknowledge"),
        (b'{"cmd": "shelve", "id": "%s", "operator": "o"}' % HIGH.encode(), "needs duration_s"),
        (
            b'{"cmd": "shelve", "id": "%s", "operator": "o", "comment": "c", "duration_s": 1e6}'
            % HIGH.encode(),
            "duration_s over alarms.shelve_max_s (28800)",
        ),
        (b'{"cmd": "unshelve", "id": "%s", "operator": "o"}' % HIGH.encode(), "not shelved"),
    ]
    for payload, error in cases:
        reply = stage.on_command("t/cmd", payload)
        assert reply["ok"] is False and error in reply["error"], (payload, reply)
    assert stage.counters.commands == len(cases) == stage.counters.refused
    assert bench.events() == []
    bench.close()


async def test_flood_and_chatter_counters(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    stage = bench.start()
    c = stage.counters
    for _ in range(2):
        bench.poll("boiler", {"pressure": 85.0})
        await settle(1)
        bench.poll("boiler", {"pressure": 50.0})
        await settle(1)
    assert c.chattering == set()
    bench.poll("boiler", {"pressure": 85.0})  # the third activation within 60 s
    assert c.chattering == {HIGH} and c.chatter_episodes == 1
    assert bench.messages()[-1]["chattering"] is True
    for _ in range(8):  # 11 raises within 10 minutes: a flood
        await settle(1)
        bench.poll("boiler", {"pressure": 50.0})
        await settle(1)
        bench.poll("boiler", {"pressure": 85.0})
    assert (c.raised, c.in_window, c.flood, c.floods) == (11, 11, True, 1)
    assert stage.active_doc()["counters"]["flood"] is True
    await settle(60)
    stage.tick()
    assert c.chattering == set() and c.flood is True
    await settle(600)
    stage.tick()
    assert (c.flood, c.floods, c.in_window, c.chatter_episodes) == (False, 1, 0, 1)
    bench.close()


async def test_gas_presets_are_latched_levels(tmp_path: Path) -> None:
    devices = """\
  - name: gas-1
    driver: modbus
    url: tcp://127.0.0.1:1
    points:
      - {name: ch4, address: 0, type: float32, unit: "%LEL", alarms: [{preset: gas_lel}]}
      - name: h2s
        address: 2
        type: float32
        unit: ppm
        alarms: [{preset: gas_toxic, oel: 10, level1: 8, latch: false}]
"""
    bench = StageBench(tmp_path, devices)
    stage = bench.start()
    ids = sorted(stage.alarms)
    assert ids == ["gas-1/ch4/lel_1", "gas-1/ch4/lel_2", "gas-1/h2s/toxic_1", "gas-1/h2s/toxic_2"]
    bench.poll("gas-1", {"ch4": 24.9, "h2s": 7.9})
    assert bench.events() == []
    bench.poll("gas-1", {"ch4": 25.0, "h2s": 8.0})
    bench.poll("gas-1", {"ch4": 50.0, "h2s": 20.0})
    bench.poll("gas-1", {"ch4": 1.0, "h2s": 1.0})
    assert bench.events("gas-1/ch4/lel_2") == [("raise", "active_unack"), ("clear", "latched")]
    assert bench.events("gas-1/h2s/toxic_2") == [("raise", "active_unack"), ("clear", "rtn_unack")]
    lel2 = next(m for m in bench.messages() if m["id"] == "gas-1/ch4/lel_2")
    assert (lel2["priority"], lel2["limit"]) == (1, 50.0)
    assert lel2["message"] == "combustible gas level 2: 50 %LEL"
    active = stage.active_doc()["alarms"]
    assert [a["id"] for a in active][:2] == ["gas-1/ch4/lel_2", "gas-1/h2s/toxic_2"]  # priority 1
    bench.close()


async def test_restart_keeps_state_raises_nothing_twice_and_keeps_the_ack(tmp_path: Path) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {"pressure": 95.0})
    bench.command(cmd="ack", id=HIGH)
    bench.close()

    again = StageBench(tmp_path, BOILER)
    stage = again.start()
    assert stage.alarms[HIGH].status.state.value == "active_ack"
    assert stage.alarms[HIGH_HIGH].status.state.value == "active_unack"
    before = again.messages()
    again.poll("boiler", {"pressure": 95.0})
    assert again.messages() == before  # no second raise
    again.poll("boiler", {"pressure": 79.0})  # in the high deadband: the restored check holds
    again.poll("boiler", {"pressure": 50.0})
    new = again.messages()[len(before) :]
    assert [(m["id"], m["event"], m["state"], m["transition"]) for m in new] == [
        (HIGH_HIGH, "clear", "rtn_unack", 2),
        (HIGH, "clear", "normal", 3),
    ]
    assert [a["id"] for a in stage.active_doc()["alarms"]] == [HIGH_HIGH]
    again.close()


async def test_a_transition_the_crash_kept_from_the_outbox_is_sent_after_restart(
    tmp_path: Path,
) -> None:
    bench = StageBench(tmp_path, BOILER)
    bench.start()
    bench.poll("boiler", {"pressure": 95.0})
    stored = bench.messages()
    # What a SIGKILL between the store's commit and the outbox flush leaves: the pending row
    # of a transition (here a clear) whose seq the outbox never stored, and one it did.
    status = bench.stage.alarms[HIGH].status
    status.set_active(False, latch=False, now_ms=bench.wall.ms)
    lost_seq = bench.agent.forwarder.next_seq()
    clear = {"id": HIGH, "event": "clear", "state": "rtn_unack", "ts_ms": 123}
    bench.stage.store.save(
        [(HIGH, status, PendingMessage(lost_seq, "alarms", "boiler", orjson.dumps(clear)))]
    )
    bench.stage.store.save(
        [(HIGH, status, PendingMessage(stored[0]["seq"], "alarms", "boiler", b"{}"))]
    )
    bench.close()

    again = StageBench(tmp_path, BOILER)
    again.start()
    after = again.messages()
    assert len(after) == len(stored) + 1
    resent = after[-1]
    assert (resent["event"], resent["ts_ms"], resent["historical"]) == ("clear", 123, True)
    assert again.stage.store.pending() == []
    again.close()


async def test_a_corrupt_alarm_store_is_moved_aside_and_the_stage_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bench = StageBench(tmp_path, BOILER)
    path = bench.stage.store.path
    assert path == tmp_path / "var" / "outbox.alarms.sqlite"  # beside the outbox
    store = AlarmStore(path)
    store.open()
    store.close()
    damage(path)  # ours, and corrupt
    bench.start()
    assert [p.name.split("-")[0] for p in path.parent.glob("outbox.alarms.sqlite.corrupt-*")] == [
        "outbox.alarms.sqlite.corrupt"
    ]
    assert "is corrupt" in caplog.text
    bench.poll("boiler", {"pressure": 85.0})
    assert bench.events(HIGH) == [("raise", "active_unack")]
    bench.close()

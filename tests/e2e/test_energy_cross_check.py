"""One recorded history, every place that shows its energy: the same numbers, to the kWh.

Three meters polled every 60 s (at hh:mm:20) from 2026-10-31 21:30 to 2026-11-01 01:35
local (Asia/Shanghai; the example TOU calendar: peak until 23:00, valley after):

- `wrap`: a uint16 x 0.1 kWh register that starts at 6500.0 and wraps at 6553.6;
- `reset`: a uint32 x 0.01 kWh meter replaced at 23:40: it reads 0.50 after 1234-odd;
- `gap`: a float kWh meter that does not answer from 23:50 to 00:10, across midnight.

The reference is computed here from the rules (energy.md: counters, not deltas, so gaps
are filled; calendar days in the site's zone; README "Energy monitoring", Rules): between
two good readings a rise counts, a drop is a wrap if rise + modulus is within a tenth of
the modulus, anything else is a reset whose segment counts nothing; the counter is
interpolated linearly between readings; an interval is [start, start + 15 min) counted
from the first whole minute a meter was seen; its TOU period is that of its minutes; a
day is the local calendar day. Areas: `hall` = wrap + reset, `yard` = gap; the site both.

The history is replayed through the real agent (scripted drivers, tests/recorded_site.py)
into a real Mosquitto, and from there into both stores at once (the embedded SQLite store
and a real VictoriaMetrics, one ingest worker each). Compared with the reference: the
interval, day and TOU numbers on the energy topic, in the embedded store, in
VictoriaMetrics, in the report's daily_energy.csv read from either store, and what the
PromQL panels show (interval energy per meter, today by TOU period, daily bars).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.cli import main as cli
from edge_agent.config.site import load_config
from edge_agent.grafana.dashboards import dashboards
from edge_agent.ingest.embedded_store import read_points
from edge_agent.ingest.service import Ingest, store_path
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.victoria import Victoria
from tests.grafana_emulation import Grafana, View, ask, series
from tests.ingest_support import unique_site
from tests.recorded_site import Sample, replay

pytestmark = pytest.mark.timeout(120)

ZONE = dt.timezone(dt.timedelta(hours=8))  # Asia/Shanghai has no daylight saving
MIN = 60_000
INTERVAL = 15 * MIN
KWH = 1e-3  # "to the kWh", and a thousand times closer


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    month = 10 if day == 31 else 11
    return int(dt.datetime(2026, month, day, hour, minute, second, tzinfo=ZONE).timestamp() * 1000)


START = local(31, 21, 30, 20)
END = local(1, 1, 35, 21)
MIDNIGHT = local(1, 0)
REPLACED = local(31, 23, 40, 20)  # the first reading of the new `reset` meter
SILENT = (local(31, 23, 50), local(1, 0, 10))  # `gap` does not answer
WRAP_MODULUS = 6553.6  # uint16 x 0.1 kWh
NOW = local(1, 1, 30)  # where the dashboards are looked at from


# -- the recorded history -------------------------------------------------------------------


def _kw(meter: str, t: int) -> float:
    minutes = (t - START) / MIN
    return {
        "wrap": 40 + 10 * math.sin(minutes / 30),
        "reset": 30 + (8 if minutes % 50 < 20 else 0),
        "gap": 20 + 5 * math.cos(minutes / 17),
    }[meter]


def _history() -> dict[str, list[tuple[int, float | None]]]:
    """meter -> [(ts_ms, register or None for a poll that timed out)]."""
    out: dict[str, list[tuple[int, float | None]]] = {m: [] for m in ("wrap", "reset", "gap")}
    used = dict.fromkeys(out, 0.0)  # kWh since the start
    replaced: float | None = None  # `reset`'s consumption when the new meter went in
    t = START
    while t < END:
        # What each register shows: quantised as the meter counts.
        counts = int(round((6500.0 + used["wrap"]) * 10, 6)) % 65536
        out["wrap"].append((t, round(counts * 0.1, 1)))
        if t >= REPLACED and replaced is None:
            replaced = used["reset"]
        shown = 1234.56 + used["reset"] if replaced is None else 0.5 + used["reset"] - replaced
        out["reset"].append((t, math.floor(shown * 100) / 100))
        silent = SILENT[0] <= t < SILENT[1]
        out["gap"].append((t, None if silent else round(300.0 + used["gap"], 4)))
        for m in out:
            used[m] += _kw(m, t) / 60
        t += MIN
    return out


# -- the reference, from the rules -----------------------------------------------------------


class Reference:
    """Energy of one meter's history, as the rules define it."""

    def __init__(self, readings: Sequence[tuple[int, float | None]], modulus: float | None):
        good = [(t, r) for t, r in readings if r is not None]
        self.ts = [t for t, _ in good]
        self.counted = [0.0]
        self.wraps = self.resets = 0
        for (_, before), (_, after) in itertools.pairwise(good):
            rise = after - before
            if rise >= 0:
                counted = rise
            elif modulus is not None and 0 <= rise + modulus <= modulus / 10:
                counted, self.wraps = rise + modulus, self.wraps + 1  # a wrap
            else:
                counted, self.resets = 0.0, self.resets + 1  # a reset: the segment counts nothing
            self.counted.append(self.counted[-1] + counted)
        self.first = -(-self.ts[0] // MIN) * MIN  # counted from the first whole minute

    def at(self, t: int) -> float:
        """Counted energy at time t, interpolated between the readings around it."""
        i = bisect.bisect_right(self.ts, t)
        if self.ts[i - 1] == t:
            return self.counted[i - 1]
        t0, t1 = self.ts[i - 1], self.ts[i]
        return self.counted[i - 1] + (self.counted[i] - self.counted[i - 1]) * (t - t0) / (t1 - t0)

    def energy(self, a: int, b: int) -> float:
        return self.at(b) - self.at(max(a, self.first))

    def by_period(self, a: int, b: int) -> dict[str, float]:
        """Energy of [a, b) split by the example calendar's period of each minute."""
        out = dict.fromkeys(("sharp", "peak", "flat", "valley"), 0.0)
        for m in range(max(a, self.first), b, MIN):
            out[_period(m)] += self.energy(m, m + MIN)
        return out


def _period(t: int) -> str:
    """example-tou for October and November, by hand: valley 23-08, flat 08-09 and 12-17."""
    h = dt.datetime.fromtimestamp(t / 1000, ZONE).hour
    return "valley" if h >= 23 or h < 8 else "flat" if h < 9 or 12 <= h < 17 else "peak"


def _intervals(refs: Mapping[str, Reference], last_reading: int) -> list[int]:
    """Starts of the intervals every meter closed (a reading after their end)."""
    first = min(r.first for r in refs.values()) // INTERVAL * INTERVAL
    return list(range(first, last_reading - INTERVAL + 1, INTERVAL))


def _site(
    path: Path, site: str, *, broker: str, prefix: str, influx: str | None, group: str
) -> None:
    store = f'influx: {{url: "{influx}", token: "${{INFLUX_TOKEN}}", org: plant, bucket: edge}}'
    types = {"wrap": "uint16, scale: 0.1", "reset": "uint32, scale: 0.01", "gap": "float32"}
    devices = "\n".join(
        f"  - {{name: {name}, driver: modbus, url: 'tcp://127.0.0.1:{i}', interval_s: 60,"
        f" points: [{{name: energy_import, address: 0, type: {kind}, unit: kWh,"
        f" energy: {{kind: electricity, direction: import}}}}]}}"
        for i, (name, kind) in enumerate(types.items(), 1)
    )
    path.write_text(
        f"""site: {site}
gateway: gw-01
mqtt: {{url: "{broker}", prefix: "{prefix}"}}
outbox: {{path: outbox.sqlite}}
{store if influx else ""}
ingest: {{group: {group}, flush_interval_s: 0.05, store: embedded.sqlite}}
energy:
  timezone: Asia/Shanghai
  tariff: {shipped(Kind.TARIFFS, "example-tou")}
  hierarchy:
    - {{name: hall, level: area, meters: [wrap, reset]}}
    - {{name: yard, level: area, meters: [gap]}}
devices:
{devices}
"""
    )


# -- the test ------------------------------------------------------------------------------


async def test_every_place_shows_the_references_interval_day_and_tou_energy(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria: Victoria,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = _history()
    refs = {
        "wrap": Reference(history["wrap"], WRAP_MODULUS),
        "reset": Reference(history["reset"], 42_949_672.96),
        "gap": Reference(history["gap"], None),
    }
    # The history has what it is meant to have.
    assert (refs["wrap"].wraps, refs["wrap"].resets) == (1, 0)
    assert (refs["reset"].wraps, refs["reset"].resets) == (0, 1)
    assert sum(1 for _, r in history["gap"] if r is None) == 20
    nodes = {"hall": ("wrap", "reset"), "yard": ("gap",)}
    last = max(t for t, _ in history["wrap"])
    starts = _intervals(refs, last)
    assert starts[0] == local(31, 21, 30) and starts[-1] == local(1, 1, 15)

    def node_energy(meters: Sequence[str], a: int, b: int) -> float:
        return sum(refs[m].energy(a, b) for m in meters)

    def node_periods(meters: Sequence[str], a: int, b: int) -> dict[str, float]:
        out = dict.fromkeys(("sharp", "peak", "flat", "valley"), 0.0)
        for m in meters:
            for period, value in refs[m].by_period(a, b).items():
                out[period] += value
        return out

    monkeypatch.setenv("INFLUX_TOKEN", "t")
    site = unique_site()
    vm_file, sqlite_file = tmp_path / "site.yaml", tmp_path / "embedded" / "site.yaml"
    sqlite_file.parent.mkdir()
    common = {"broker": mosquitto.url, "prefix": unique_prefix}
    _site(vm_file, site, influx=victoria.url, group="vm", **common)
    _site(sqlite_file, site, influx=None, group="sqlite", **common)
    loaded, embedded = load_config(vm_file), load_config(sqlite_file)
    energy_topic = f"{unique_prefix}/{site}/gw-01/energy"
    topic = subscribe(mosquitto.host, mosquitto.port, energy_topic)
    samples: dict[str, list[tuple[int, Sample]]] = {
        meter: [(t, None if r is None else {"energy_import": r}) for t, r in rows]
        for meter, rows in history.items()
    }
    vm_ingest, sqlite_ingest = Ingest(loaded, worker="vm"), Ingest(embedded, worker="sqlite")
    await replay(loaded, samples, [vm_ingest, sqlite_ingest])
    assert vm_ingest.stats.deadlettered == sqlite_ingest.stats.deadlettered == 0

    # -- what each place says --------------------------------------------------------------
    docs = [orjson.loads(m.payload) for m in topic.messages]
    intervals: dict[str, dict[tuple[str, int], dict[str, float]]] = {
        "energy topic": {
            (d["device"], d["ts_ms"]): {
                k.split(".", 2)[-1] if k.count(".") > 1 else "energy": v["value"]
                for k, v in d["points"].items()
                if not k.endswith("completeness")
            }
            for d in docs
            if d["type"] == "interval" and d["kind"] == "electricity"
        }
    }
    days = {
        (d["device"], d["period"]): {
            k.split(".")[-1] if k.count(".") > 1 else "energy": v["value"]
            for k, v in d["points"].items()
            if k.startswith(f"day.{d['counter']}")
        }
        for d in docs
        if d["type"] == "day" and d["kind"] == "electricity"
    }
    stored: dict[tuple[str, int], dict[str, float]] = {}
    for p in read_points(store_path(embedded), site=site):
        wanted = p.point.startswith(("interval.energy_import", "interval.electricity"))
        if wanted and not p.point.endswith("completeness"):
            name = p.point.split(".")[2] if p.point.count(".") > 1 else "energy"
            stored.setdefault((p.device, p.ts_ms), {})[name] = p.value or 0.0
    intervals["embedded store"] = stored
    vm: dict[tuple[str, int], dict[str, float]] = {}
    for s in victoria.wait_for_samples(
        f'{{__name__="edge_value",site="{site}",point=~"interval\\\\.(energy_import|electricity).*"}}',
        len(stored) and sum(len(v) for v in stored.values()),
    ):
        labels = s["metric"]
        if labels["point"].endswith("completeness"):
            continue
        name = labels["point"].split(".")[2] if labels["point"].count(".") > 1 else "energy"
        for t, v in zip(s["timestamps"], s["values"], strict=True):
            vm.setdefault((labels["device"], t), {})[name] = v
    intervals["VictoriaMetrics"] = vm

    # -- intervals: every place, every meter and node, energy and TOU ---------------------
    expected: dict[tuple[str, int], dict[str, float]] = {}
    for a in starts:
        for series_name, meters in (
            *((m, (m,)) for m in refs),
            *nodes.items(),
            (site, ("wrap", "reset", "gap")),
        ):
            periods = {k: v for k, v in node_periods(meters, a, a + INTERVAL).items() if v}
            expected[(series_name, a)] = {"energy": node_energy(meters, a, a + INTERVAL), **periods}
    for place, found in intervals.items():
        assert set(found) == set(expected), place
        for key, numbers in expected.items():
            for name, value in numbers.items():
                assert found[key][name] == pytest.approx(value, abs=KWH), (place, key, name)
    wrapped = [d for d in docs if "wrap" in d.get("flags", ()) and d["device"] == "wrap"]
    reset = [d for d in docs if "reset" in d.get("flags", ()) and d["type"] == "interval"]
    gap = [d for d in docs if "gap" in d.get("flags", ()) and d["device"] == "gap"]
    assert wrapped and reset and gap

    # -- days: the closed day on the energy topic, both reports' days ----------------------
    oct31 = (local(31, 0), MIDNIGHT)
    nov1 = (MIDNIGHT, starts[-1] + INTERVAL)  # the day so far: up to the last interval
    day_expected = {
        (series_name, date): {"energy": node_energy(meters, *span), **node_periods(meters, *span)}
        for series_name, meters in (
            *((m, (m,)) for m in refs),
            *nodes.items(),
            (site, ("wrap", "reset", "gap")),
        )
        for date, span in (("2026-10-31", oct31), ("2026-11-01", nov1))
    }
    for (series_name, date), numbers in day_expected.items():
        if date == "2026-10-31":  # closed at midnight on the topic
            counter = "energy_import" if series_name in refs else "electricity"
            assert days[(series_name, date)]["energy"] == pytest.approx(numbers["energy"], abs=KWH)
            for period in ("peak", "valley"):
                assert days[(series_name, date)][period] == pytest.approx(
                    numbers[period], abs=KWH
                ), (series_name, period, counter)
    for source, extra in (
        ("VictoriaMetrics", []),
        ("embedded store", ["--store", str(store_path(embedded))]),
    ):
        out = tmp_path / f"report-{source.split()[0]}"
        args = ["report", str(vm_file), "--from", "2026-10-31", "--to", "2026-11-01T01:30"]
        assert cli.main([*args, *extra, "--out", str(out)]) == 0
        with (out / "daily_energy.csv").open(encoding="utf-8-sig", newline="") as f:
            rows = [
                r for r in csv.DictReader(f) if r["counter"] in ("energy_import", "electricity")
            ]
        assert {(r["series"], r["date"]) for r in rows} == set(day_expected), source
        for r in rows:
            numbers = day_expected[(r["series"], r["date"])]
            assert float(r["energy"]) == pytest.approx(numbers["energy"], abs=KWH), (source, r)
            for period in ("sharp", "peak", "flat", "valley"):
                value = float(r[period]) if r[period] else 0.0
                assert value == pytest.approx(numbers[period], abs=KWH), (source, r, period)

    # -- the PromQL panels, as Grafana would run them on VictoriaMetrics ------------------
    boards = dashboards(loaded, kind="prometheus")
    overview = boards["energy-overview.json"]
    grafana = Grafana(overview)
    view = View(NOW, site, site, time_from="now-6h", max_data_points=24)  # 15-minute steps
    view.all_devices = ask(victoria.url, grafana.variable_request("device", view))

    def panel(title: str, v: View) -> dict[Any, list[tuple[int, float]]]:
        p = next(x for x in overview["panels"] if x["title"] == title)
        (target,) = p["targets"]
        return series(ask(victoria.url, grafana.request(p, target, v)))

    shown = panel("Interval energy (per meter) (kWh)", view)
    per_meter = {dict(k)["device"]: dict(points) for k, points in shown.items()}
    assert set(per_meter) == set(refs)
    for meter in refs:
        for a in starts:  # a point at t shows the interval [t - 15 min, t)
            value = per_meter[meter][a + INTERVAL]
            assert value == pytest.approx(refs[meter].energy(a, a + INTERVAL), abs=KWH), meter
    today = panel("Today: electricity by TOU period", View(NOW, site, site))
    shown_today = {dict(k)["point"].rsplit(".", 1)[1]: v for k, ((_, v),) in today.items()}
    expected_today = node_periods(("wrap", "reset", "gap"), *nov1)
    for period, value in expected_today.items():
        assert shown_today.get(period, 0.0) == pytest.approx(value, abs=KWH), period
    bars = panel("Daily electricity by TOU period", View(NOW, site, site, time_from="now-2d"))
    by_day: dict[int, dict[str, float]] = {}
    for key, points in bars.items():
        for t, v in points:
            by_day.setdefault(t, {})[dict(key)["point"].rsplit(".", 1)[1]] = v
    assert sorted(by_day) == [local(31, 0), MIDNIGHT]
    for t, span in ((local(31, 0), oct31), (MIDNIGHT, nov1)):
        for period, value in node_periods(("wrap", "reset", "gap"), *span).items():
            assert by_day[t].get(period, 0.0) == pytest.approx(value, abs=KWH), (t, period)

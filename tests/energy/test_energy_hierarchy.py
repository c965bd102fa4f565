"""Site -> area -> line -> meter, with a virtual meter (workshop minus its lines = losses)."""

from __future__ import annotations

import pytest

from drivers.modbus.codec import PointType
from edge_agent.energy.config import EnergyConfig, HierarchyNode, VirtualMeter, formula_terms
from edge_agent.energy.hierarchy import CounterInfo, Hierarchy
from tests.energy_harness import MIN, first_boundary, meter, run, value
from tests.energy_reference import local_ms, simulate

CONFIG = EnergyConfig(
    hierarchy=(
        HierarchyNode(name="workshop-1", level="area", meters=("incomer",)),
        HierarchyNode(name="line-1", level="line", parent="workshop-1", meters=("feeder-1",)),
        HierarchyNode(name="line-2", level="line", parent="workshop-1", meters=("feeder-2",)),
        HierarchyNode(name="lines", level="area"),  # no meters: the sum of its children
        HierarchyNode(
            name="line-3", level="line", parent="lines", meters=("feeder-2.energy_import",)
        ),
    ),
    virtual_meters=(VirtualMeter(name="losses", formula="incomer - feeder-1 - feeder-2"),),
)


def test_nodes_and_virtual_meter_against_reference() -> None:
    start, end = local_ms(2026, 11, 30, 22, 0), local_ms(2026, 12, 1, 1, 0)
    feeders = {
        name: simulate(
            start_ms=start,
            end_ms=end,
            poll_s=30.0,
            seed=seed,
            power_kw=lambda t, p=p: p + 10.0 * ((t // 30_000) % 4),
            resolution=0.01,
            drop_share=0.02,
        )
        for name, seed, p in (("feeder-1", 11, 60.0), ("feeder-2", 12, 35.0))
    }
    incomer = simulate(
        start_ms=start,
        end_ms=end,
        poll_s=30.0,
        seed=13,
        power_kw=lambda t: 110.0 + 5.0 * ((t // 30_000) % 3),
        resolution=0.01,
        outages=((local_ms(2026, 11, 30, 23, 20), local_ms(2026, 11, 30, 23, 40)),),
    )
    histories = {"incomer": incomer, **feeders}
    points = [meter(name, point_type=PointType.UINT32) for name in histories]
    out = run(histories, points, config=CONFIG)

    def ref(name: str, a: int) -> float:
        h = histories[name]
        return h.energy(max(a, first_boundary(h)), a + 15 * MIN)

    losses = out.of("interval", "losses")
    assert len(losses) == 11  # 22:00 (partial) .. 00:30; 00:45 has not closed at 01:00
    for doc in losses:
        a = doc["ts_ms"]
        assert doc["node"] == {
            "level": "virtual",
            "parent": None,
            "of": "incomer - feeder-1 - feeder-2",
        }
        expected = ref("incomer", a) - ref("feeder-1", a) - ref("feeder-2", a)
        assert value(doc, "interval.electricity") == pytest.approx(expected, abs=1e-5)
        completeness = min(
            min(1.0, h.readings(max(a, first_boundary(h)), a + 15 * MIN) / 30)
            for h in histories.values()
        )
        assert value(doc, "interval.electricity.completeness") == pytest.approx(
            completeness, abs=1e-4
        )
    for node, parts in (
        ("workshop-1", ["incomer"]),
        ("line-1", ["feeder-1"]),
        ("line-3", ["feeder-2"]),
        ("lines", ["feeder-2"]),
        ("plant", ["incomer", "feeder-2"]),  # the site: workshop-1 + lines
    ):
        docs = out.of("interval", node)
        assert len(docs) == 11, node
        for doc in docs:
            a = doc["ts_ms"]
            expected = sum(ref(n, a) for n in parts)
            assert value(doc, "interval.electricity") == pytest.approx(expected, abs=1e-5), node
    assert out.of("interval", "plant")[0]["node"]["level"] == "site"
    # Children come before parents, and all of one interval before the next.
    order = [d["device"] for d in out.docs if d["type"] == "interval" and "node" in d]
    assert order[:7] == ["losses", "line-1", "line-2", "line-3", "workshop-1", "lines", "plant"]
    # Node day totals at local midnight, with tce and CO2.
    (day,) = out.of("day", "losses")
    midnight = local_ms(2026, 12, 1)
    expected = sum(
        sign * h.energy(first_boundary(h), midnight)
        for sign, h in zip((1, -1, -1), histories.values(), strict=True)
    )
    assert value(day, "day.electricity") == pytest.approx(expected, abs=1e-4)
    assert value(day, "day.electricity.tce") == pytest.approx(expected * 0.1229 / 1000, abs=1e-6)
    assert day["node"]["level"] == "virtual"


def test_formula_parsing_and_reference_errors() -> None:
    assert formula_terms("a - b + c.d") == [(1, "a"), (-1, "b"), (1, "c.d")]
    assert formula_terms("-a") == [(-1, "a")]
    for bad in ("a b", "a - ", "", "a * b"):
        with pytest.raises(ValueError):
            formula_terms(bad)
    counters = [CounterInfo(("m", "e"), "electricity", "import")]
    with pytest.raises(ValueError, match="'nope' is not a device with energy counters"):
        Hierarchy(
            EnergyConfig(virtual_meters=(VirtualMeter(name="v", formula="m - nope"),)),
            "s",
            counters,
        )
    two = [*counters, CounterInfo(("m", "e2"), "electricity", None)]
    with pytest.raises(ValueError, match=r"name one as device\.point"):
        Hierarchy(
            EnergyConfig(hierarchy=(HierarchyNode(name="a", level="area", meters=("m",)),)),
            "s",
            two,
        )
    with pytest.raises(ValueError, match="parents form a loop"):
        EnergyConfig(
            hierarchy=(
                HierarchyNode(name="a", level="area", parent="b"),
                HierarchyNode(name="b", level="line", parent="a"),
            )
        )

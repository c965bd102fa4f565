"""`energy:` on points as the issue writes it, the site's `energy:` block, and its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.modbus.config import ModbusPoint
from drivers.options.energy import EnergyOptions
from edge_agent.catalog import shipped_demo
from edge_agent.config.site import ConfigError, load_config
from edge_agent.energy.points import energy_points

SITE = """\
site: plant-c
gateway: gw-01
{energy}devices:
  - name: m1
    driver: modbus
    url: tcp://127.0.0.1:1502
    interval_s: 2
    points:
{points}
"""

POINTS = """\
      - {name: e_u32, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
      - {name: e_u16, address: 2, type: uint16, unit: kWh,
         energy: {kind: electricity, direction: export, width_bits: 16, resolution: 10}}
      - {name: e_f32, address: 4, type: float32, unit: Wh,
         energy: {kind: electricity, direction: import}}
      - {name: e_bcd, address: 6, type: bcd32, scale: 0.1, unit: m3, energy: {kind: water}}
      - {name: e_roll, address: 8, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, rollover: 99999999.99}}
      - {name: steam, address: 10, type: float32, unit: kg, energy: {kind: steam}}
      - {name: dmd, address: 12, type: float32, unit: W, energy: {kind: electricity, role: demand}}
      - {name: volts, address: 14, type: float32, unit: V}
"""


def _load(tmp_path: Path, points: str = POINTS, energy: str = "") -> list[object]:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(points=points, energy=energy))
    return list(energy_points(load_config(path).devices))


def test_the_issue_spelling_works_on_a_point() -> None:
    point = ModbusPoint.model_validate(
        {"name": "e", "address": 0, "energy": {"kind": "electricity", "direction": "import"}}
    )
    assert point.energy == EnergyOptions(kind="electricity", direction="import")


def test_widths_resolutions_and_units_come_from_the_point(tmp_path: Path) -> None:
    found = {p.point: p for p in _load(tmp_path)}  # type: ignore[attr-defined]
    assert set(found) == {"e_u32", "e_u16", "e_f32", "e_bcd", "e_roll", "steam", "dmd"}
    assert found["e_u32"].spec.modulus == pytest.approx(2**32 * 0.01)
    assert found["e_u16"].spec.modulus == pytest.approx(2**16 * 10)
    assert found["e_f32"].spec.modulus is None  # floats never wrap
    assert found["e_f32"].spec.factor == pytest.approx(0.001)  # Wh -> kWh
    assert found["e_bcd"].spec.modulus == pytest.approx(10**8 * 0.1)
    assert found["e_roll"].spec.modulus == pytest.approx(99999999.99)
    assert found["steam"].spec.factor == pytest.approx(0.001) and found["steam"].unit == "t"
    assert found["dmd"].spec.factor == pytest.approx(0.001) and found["dmd"].unit == "kW"
    assert found["e_u32"].spec.gap_ms == 5000  # 2.5 polls of 2 s


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "water", "direction": "import"}, "direction applies to electricity"),
        ({"kind": "gas"}, "kind"),
        ({"kind": "water", "role": "demand"}, "role demand applies to electricity"),
        ({"kind": "electricity", "role": "demand", "width_bits": 32}, "counters only"),
        ({"kind": "electricity", "width_bits": 24}, "width_bits"),
        ({"kind": "electricity", "directoin": "import"}, "directoin"),
    ],
)
def test_options_refuse_what_makes_no_sense(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EnergyOptions.model_validate(options)


def test_check_names_the_energy_problems_with_their_lines(tmp_path: Path) -> None:
    points = "      - {name: e, address: 0, type: uint32, unit: kWh, energy: {kind: water}}\n"
    energy = (
        "energy:\n"
        "  timezone: Asia/Shanghai\n"
        "  tariff: missing-calendar\n"
        "  standard_coal: gbt-1900\n"
        "  hierarchy:\n"
        "    - {name: hall, level: area, meters: [m2]}\n"
    )
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, points=points, energy=energy)
    messages = [f"{i.line} {i.path}: {i.message}" for i in info.value.issues]
    assert messages == [
        "10 devices[0]: device m1 point e: unit 'kWh' is not a unit of water (use m3, m³, t, L)"
    ]
    points = "      - {name: e, address: 0, type: uint32, unit: kWh, energy: {kind: electricity}}\n"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, points=points, energy=energy)
    messages = [f"{i.line} {i.path}: {i.message}" for i in info.value.issues]
    assert messages == [
        "5 energy.tariff: tariff calendar 'missing-calendar' not found (looked in: "
        f"{tmp_path}/, {tmp_path}/tariffs/, /etc/edge-agent/tariffs/, the shipped set; "
        "known: example-tou)",
        "6 energy.standard_coal: standard_coal 'gbt-1900' is not in standard-coal.yaml "
        "(known: gbt2589-2020-equivalent, gbt2589-2020-equal-value-0404)",
        "7 energy.hierarchy: hierarchy hall: 'm2' is not a device with energy counters",
    ]
    with pytest.raises(ConfigError, match="unknown time zone 'Asia/Shanghia'"):
        _load(tmp_path, points=points, energy="energy: {timezone: Asia/Shanghia}\n")


def test_shipped_configs_declare_energy(tmp_path: Path) -> None:
    loaded = load_config(shipped_demo())
    found = {(p.device, p.point) for p in energy_points(loaded.devices)}
    for device in ("main-incomer", "compressor", "line-1-feeder", "line-2-feeder"):
        assert (device, "energy_import") in found
        assert (device, "energy_export") in found
    assert ("compressor", "demand_total") in found
    assert loaded.site.energy.tariff == "example-tou"

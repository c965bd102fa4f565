"""DL/T 645 config models: the issue's YAML as written, URLs, addresses, DIs, formats."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from drivers.dlt645.config import Dlt645Device, Dlt645Point, Dlt645Profile, parse_endpoint
from drivers.dlt645.driver import Dlt645Driver

# Issue 10, item 5, verbatim: "this much must work exactly as written".
ISSUE_YAML = """\
- name: meter-645
  driver: dlt645
  url: rtu:///dev/ttyUSB1?baudrate=2400&parity=E
  address: "000000123456"
  interval_s: 5.0
  points:
    - {name: import_kwh, di: "00010000", unit: kWh}
    - {name: voltage_a, di: "02010100", unit: V}
"""


def _device(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = yaml.safe_load(ISSUE_YAML)[0]
    base.update(changes)
    return base


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Dlt645Device.model_validate(data)
    return "; ".join(e["msg"] for e in info.value.errors())


def test_the_issue_yaml_validates_as_written() -> None:
    (raw,) = yaml.safe_load(ISSUE_YAML)
    device = Dlt645Device.model_validate(raw)
    assert device.name == "meter-645" and device.driver == "dlt645"
    assert device.address == "000000123456"
    assert device.wire_address == bytes.fromhex("563412000000")
    assert device.interval_s == 5.0
    ep = device.endpoint
    assert (ep.transport, ep.path, ep.baudrate, ep.parity, ep.bytesize, ep.stopbits) == (
        "rtu",
        "/dev/ttyUSB1",
        2400,
        "E",
        8,
        1,
    )
    assert ep.bus_key == "rtu:/dev/ttyUSB1"
    assert ep.char_bits == 11  # 8E1: start, 8 data, parity, stop
    assert device.points is not None
    assert [(p.name, p.di, p.effective_unit, p.data_format.text) for p in device.points] == [
        ("import_kwh", "00010000", "kWh", "XXXXXX.XX"),
        ("voltage_a", "02010100", "V", "XXX.X"),
    ]
    # The plan compiles offline: no port is opened for /dev/ttyUSB1.
    driver = Dlt645Driver(device)
    assert [r.di_text for r in driver.plan.requests] == ["00010000", "02010100"]
    assert [(p.name, p.unit) for p in driver.points] == [("import_kwh", "kWh"), ("voltage_a", "V")]
    assert not driver.line.connected


def test_defaults_are_the_meters_usual_line_and_units_come_from_the_table() -> None:
    device = Dlt645Device.model_validate(
        _device(
            url="rtu:///dev/ttyS0",
            points=[
                {"name": "demand_max", "di": "01010000"},
                {"name": "demand_max_at", "di": "01010000", "field": 1},
                {"name": "status", "di": "04000501", "format": "HHHH"},
                {"name": "import_wh", "di": "00010000", "unit": "Wh", "scale": 1000},
            ],
        )
    )
    ep = device.endpoint
    assert (ep.baudrate, ep.parity, ep.stopbits, ep.bytesize) == (2400, "E", 1, 8)
    assert device.preamble == 4 and device.timeout_s == 1.0
    driver = Dlt645Driver(device)
    assert [(p.name, p.unit) for p in driver.points] == [
        ("demand_max", "kW"),
        ("demand_max_at", None),
        ("status", None),
        ("import_wh", "Wh"),
    ]
    # Two points of one DI: one request.
    assert driver.plan.describe() == [
        "DI 01010000 XX.XXXX,YYMMDDhhmm   import active maximum demand and its time, total "
        "-> demand_max, demand_max_at[1]",
        "DI 04000501 HHHH                 (format from the config) -> status",
        "DI 00010000 XXXXXX.XX            import active energy, total -> import_wh",
    ]


def test_serial_over_tcp_and_url_errors() -> None:
    ep = parse_endpoint("rtu+tcp://10.0.0.5:8899")
    assert (ep.transport, ep.host, ep.port, ep.bus_key) == (
        "rtu+tcp",
        "10.0.0.5",
        8899,
        "rtu+tcp:10.0.0.5:8899",
    )
    assert ep.airtime_s(100) == 0.0  # the converter's baud rate is unknown here
    assert parse_endpoint("rtu:///dev/x?baudrate=9600&parity=n").parity == "N"
    serial = parse_endpoint("rtu:///dev/x?baudrate=2400")
    assert serial.airtime_s(24) == pytest.approx(24 * 11 / 2400)
    cases = {
        "tcp://10.0.0.5:502": "no TCP framing of its own: use rtu+tcp://",
        "rtu://dev/ttyUSB0": "three slashes",
        "rtu:///dev/x?speed=2400": "unknown serial setting 'speed'",
        "rtu:///dev/x?parity=X": "parity must be one of",
        "rtu+tcp://host": "needs the converter's port",
        "rtu+tcp://host:0": "port 0",
        "serial:///dev/x": "unknown scheme",
    }
    for url, message in cases.items():
        assert message in _error(_device(url=url)), url


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (123456, "write the address in quotes"),
        ("12345", "12 characters"),
        ("00000012345A", "neither two digits nor AA"),
        ("999999999999", "broadcast address"),
        ("123456AAAAAA", "only fill the high (leading) bytes"),
    ],
)
def test_bad_addresses(address: object, message: str) -> None:
    assert message in _error(_device(address=address))


def test_wildcard_addresses_are_accepted() -> None:
    assert Dlt645Device.model_validate(_device(address="aaaaaa123456")).address == "AAAAAA123456"
    device = Dlt645Device.model_validate(_device(address="AAAAAAAAAAAA"))
    assert device.wire_address == b"\xaa" * 6


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"name": "x", "di": 10000}, "write the DI in quotes"),
        ({"name": "x", "di": "0001000"}, "8 hex digits"),
        ({"name": "x", "di": "04000501"}, "not in the built-in table: give its format"),
        ({"name": "x", "di": "04000501", "format": "XXX"}, "even number"),
        ({"name": "x", "di": "04000501", "format": "QQQQ"}, "unknown format field 'QQQQ'"),
        ({"name": "x", "di": "01010000", "field": 2}, "field 2 does not exist"),
        ({"name": "x", "di": "00010000", "unit": "Wh"}, "reads kWh, not 'Wh'"),
        ({"name": "x", "di": "04000102", "scale": 2}, "scale applies only to numbers"),
        ({"name": "x", "di": "00010000", "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_points(point: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Dlt645Point.model_validate(point)
    assert message in str(info.value)


def test_points_of_a_device_must_agree() -> None:
    points = [
        {"name": "a", "di": "00010000"},
        {"name": "a", "di": "02010100"},
        {"name": "b", "di": "00010000", "format": "XXXXXXXX"},
    ]
    text = _error(_device(points=points))
    assert "duplicate point name 'a'" in text
    assert "DI 00010000 of 'b' is read as XXXXXXXX, but 'a' reads it as XXXXXX.XX" in text
    assert "exactly one of profile" in _error(_device(profile="three-phase"))
    assert "exactly one of profile" in _error({**_device(), "points": None})


def test_profile_model() -> None:
    profile = Dlt645Profile.model_validate(
        {
            "manufacturer": "any",
            "points": [
                {"name": "import_kwh", "di": "00010000"},
                {"name": "run_status_1", "di": "04000501", "format": "HHHH"},
            ],
        }
    )
    device = Dlt645Device.model_validate({**_device(profile="three-phase"), "points": None})
    driver = Dlt645Driver(device, profile)
    assert [p.name for p in driver.points] == ["import_kwh", "run_status_1"]

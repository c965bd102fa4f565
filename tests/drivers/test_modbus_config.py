"""Modbus config models: URLs, device ids, points that may or may not share a register."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from drivers.modbus.config import (
    ModbusDevice,
    ModbusPoint,
    ModbusProfile,
    parse_endpoint,
    point_issues,
)


def test_urls() -> None:
    ep = parse_endpoint("rtu:///dev/ttyUSB0?baudrate=2400&parity=e&stopbits=1")
    assert (ep.transport, ep.path, ep.baudrate, ep.parity, ep.bus_key) == (
        "rtu",
        "/dev/ttyUSB0",
        2400,
        "E",
        "rtu:/dev/ttyUSB0",
    )
    ep = parse_endpoint("rtu+tcp://10.0.0.7:4001")
    assert (ep.transport, ep.host, ep.port, ep.is_serial_line) == (
        "rtu+tcp",
        "10.0.0.7",
        4001,
        True,
    )
    assert parse_endpoint("tcp://meter-1").port == 502
    for bad, text in [
        ("udp://h:502", "unknown scheme"),
        ("rtu://dev/ttyUSB0", "three slashes"),
        ("rtu:///dev/ttyUSB0?speed=9600", "unknown serial setting 'speed'"),
        ("rtu:///dev/ttyUSB0?parity=X", "parity must be one of"),
        ("tcp://h:70000", "use 1-65535"),
    ]:
        with pytest.raises(ValueError, match=text):
            parse_endpoint(bad)


def _device(url: str, device_id: int) -> ModbusDevice:
    return ModbusDevice(name="m", driver="modbus", url=url, device_id=device_id, profile="p")


def test_device_ids_on_serial_lines_and_port_zero() -> None:
    assert _device("tcp://h:502", 0).device_id == 0  # TCP units may be 0 or 255
    for url in ("rtu:///dev/ttyS0", "rtu+tcp://h:4001"):
        with pytest.raises(ValidationError, match=r"outside 1\.\.247 for a serial line"):
            _device(url, 0)
    with pytest.raises(ValidationError, match="port 0"):
        _device("tcp://h:0", 1)


def test_pipelining_is_for_modbus_tcp_devices_only() -> None:
    def device(url: str, n: int) -> ModbusDevice:
        return ModbusDevice(name="m", driver="modbus", url=url, profile="p", max_in_flight=n)

    assert device("tcp://h:502", 4).max_in_flight == 4
    assert _device("tcp://h:502", 1).max_in_flight == 1  # off unless asked for
    for url in ("rtu:///dev/ttyS0", "rtu+tcp://h:4001"):
        assert device(url, 1).max_in_flight == 1
        with pytest.raises(ValidationError, match="max_in_flight 2 needs a tcp:// device"):
            device(url, 2)
    for n in (0, 17):
        with pytest.raises(ValidationError, match="max_in_flight"):
            device("tcp://h:502", n)


def _bit(name: str, bit: int, address: int = 10) -> ModbusPoint:
    return ModbusPoint(name=name, address=address, type="bit", bit=bit)  # type: ignore[arg-type]


def test_bits_may_share_a_register_but_not_a_bit() -> None:
    word = ModbusPoint(name="status", address=10)
    assert point_issues([word, _bit("run", 0), _bit("fault", 1)]) == []
    issues = point_issues([_bit("run", 0), _bit("run_again", 0)])
    assert [(i.index, i.other) for i in issues] == [(1, 0)]
    assert "overlaps 'run'" in issues[0].message
    with pytest.raises(ValidationError, match="overlaps 'run'"):
        ModbusProfile(points=(_bit("run", 0), _bit("run_again", 0)))

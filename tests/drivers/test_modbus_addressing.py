"""Addresses as manuals print them (drivers/modbus/addressing.py): every notation to the
protocol's table and 0-based address, the numbers that mean nothing, and the warning."""

from __future__ import annotations

import pytest

from drivers.modbus.addressing import (
    Addressing,
    looks_modicon,
    modicon_number,
    parse_number,
    to_protocol,
)
from drivers.modbus.codec import Table
from drivers.modbus.config import ModbusDevice, ModbusProfile

MODICON = Addressing.MODICON


@pytest.mark.parametrize(
    ("addressing", "text", "table", "expected"),
    [
        (Addressing.ZERO_BASED, "0x2006", None, (Table.HOLDING, 8198)),
        (Addressing.ZERO_BASED, "40001", Table.INPUT, (Table.INPUT, 40001)),
        (Addressing.ONE_BASED, "1", None, (Table.HOLDING, 0)),
        (Addressing.ONE_BASED, "65536", Table.INPUT, (Table.INPUT, 65535)),
        (MODICON, "1", None, (Table.COIL, 0)),
        (MODICON, "00001", None, (Table.COIL, 0)),
        (MODICON, "9999", None, (Table.COIL, 9998)),
        (MODICON, "010001", None, (Table.COIL, 10000)),
        (MODICON, "10001", None, (Table.DISCRETE, 0)),
        (MODICON, "165536", None, (Table.DISCRETE, 65535)),
        (MODICON, "30001", Table.INPUT, (Table.INPUT, 0)),
        (MODICON, "39999", None, (Table.INPUT, 9998)),
        (MODICON, "300001", None, (Table.INPUT, 0)),
        (MODICON, "40001", None, (Table.HOLDING, 0)),
        (MODICON, "48199", None, (Table.HOLDING, 8198)),
        (MODICON, "408199", None, (Table.HOLDING, 8198)),
        (MODICON, "465536", None, (Table.HOLDING, 65535)),
    ],
)
def test_every_notation_names_one_register(
    addressing: Addressing, text: str, table: Table | None, expected: tuple[Table, int]
) -> None:
    number, digits = parse_number(text)
    assert to_protocol(addressing, number, table, digits=digits) == expected


@pytest.mark.parametrize(
    ("addressing", "number", "table", "message"),
    [
        (Addressing.ONE_BASED, 0, None, "address 0 is outside 1..65536"),
        (MODICON, 25000, None, "address 25000 is not a Modicon number: Modicon numbers are"),
        (MODICON, 40000, None, "they count from 1 (40001 is holding register 0)"),
        (MODICON, 10000, None, "they count from 1 (10001 is discrete input 0)"),
        (MODICON, 465537, None, "address 465537 is not a Modicon number"),
        (MODICON, 40001, Table.INPUT, "a holding register in Modicon notation, but table is"),
        (Addressing.ZERO_BASED, 400001, None, "Modicon notation for holding register 0"),
    ],
)
def test_numbers_that_mean_nothing_say_why(
    addressing: Addressing, number: int, table: Table | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_protocol(addressing, number, table)


def test_what_looks_modicon_and_the_numbers_back() -> None:
    assert looks_modicon(Table.HOLDING, 40001) == (Table.HOLDING, 0)
    assert looks_modicon(Table.INPUT, 30010) == (Table.INPUT, 9)
    assert looks_modicon(Table.HOLDING, 40000) is None  # SunSpec's "SunS" marker
    assert looks_modicon(Table.COIL, 10001) is None
    assert [modicon_number(Table.HOLDING, 0), modicon_number(Table.INPUT, 9998)] == [
        "40001",
        "39999",
    ]
    assert modicon_number(Table.COIL, 10000) == "010001"


def test_a_map_hands_its_addressing_down_and_validates_again_unchanged() -> None:
    profile = ModbusProfile.model_validate(
        {
            "addressing": "modicon",
            "unreadable": [{"start": 40101, "end": 40110}],
            "points": [
                {"name": "u", "address": 30001, "type": "float32"},
                {"name": "raw", "address": 16, "addressing": "zero_based"},
            ],
        }
    )
    assert [(p.table, p.address) for p in profile.points] == [(Table.INPUT, 0), (Table.HOLDING, 16)]
    assert (profile.unreadable[0].table, profile.unreadable[0].start) == (Table.HOLDING, 100)
    again = ModbusProfile.model_validate(profile.model_dump())
    assert again.points == profile.points and again.unreadable == profile.unreadable
    assert profile.notation_warnings() == []
    device = ModbusDevice.model_validate(
        {
            "name": "m",
            "driver": "modbus",
            "url": "tcp://10.0.0.1",
            "points": [{"name": "p", "address": 100}, {"name": "q", "address": 40003}],
        }
    )
    ((index, message),) = device.notation_warnings()
    assert index == 1 and message.startswith("address 40003 looks like Modicon notation")

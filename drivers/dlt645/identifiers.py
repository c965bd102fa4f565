"""The built-in table of DL/T 645-2007 data identifiers (DI) with their formats and units.

A DI is written as the standard prints it, DI3 DI2 DI1 DI0 ("00010000"); DI3 is the class:

    00 DI2 DI1 00   energy, XXXXXX.XX (combined kinds signed); DI1 = 00 total,
                    01..3F tariff 1..63 (1 sharp 尖, 2 peak 峰, 3 flat 平, 4 valley 谷 in
                    Chinese TOU use), FF block "total, tariff 1..4" (a 4-tariff meter)
        DI2: 00 combined active  01 import active  02 export active
             03 combined reactive 1  04 combined reactive 2  05..08 reactive quadrant I..IV
             09 import apparent  0A export apparent
             15..1E phase A of 01..0A (per phase, no tariffs), 29..32 phase B, 3D..46 phase C
    01 DI2 DI1 00   maximum demand and when it happened, XX.XXXX,YYMMDDhhmm, DI2/DI1 as above
    02 ...          instantaneous values: voltage, current, power, PF, angle, frequency...
    04 ...          parameters: date, time, demand period, address, meter number

A profile or an inline point adds any other identifier by giving its format; a format
given for a DI in this table replaces the table's (meters that deviate exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from drivers.dlt645.formats import DataFormat, parse_format


@dataclass(frozen=True, slots=True)
class Identifier:
    """One data identifier: what it is, how its bytes read, in which unit."""

    di: int
    description: str
    format: DataFormat
    unit: str | None

    @property
    def text(self) -> str:
        """The DI as printed in the standard: DI3 DI2 DI1 DI0."""
        return f"{self.di:08X}"


def parse_di(text: str) -> int:
    """A DI from its 8 hex digits ("00010000"); ValueError otherwise."""
    if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"a DI is 8 hex digits (DI3 DI2 DI1 DI0) such as 00010000, got {text!r}")
    return int(text, 16)


ENERGY_KINDS: Mapping[int, tuple[str, str, bool]] = {
    0x00: ("combined active energy", "kWh", True),
    0x01: ("import active energy", "kWh", False),
    0x02: ("export active energy", "kWh", False),
    0x03: ("combined reactive energy 1", "kvarh", True),
    0x04: ("combined reactive energy 2", "kvarh", True),
    0x05: ("reactive energy quadrant I", "kvarh", False),
    0x06: ("reactive energy quadrant II", "kvarh", False),
    0x07: ("reactive energy quadrant III", "kvarh", False),
    0x08: ("reactive energy quadrant IV", "kvarh", False),
    0x09: ("import apparent energy", "kVAh", False),
    0x0A: ("export apparent energy", "kVAh", False),
}
"""DI2 of energy (DI3 00) and demand (DI3 01): name, energy unit, signed."""

MAX_TARIFF = 0x3F
BLOCK = 0xFF
BLOCK_TARIFFS = 4  # a FF block is read as "total, tariff 1..4"
PHASE_OFFSETS = {"A": 0x14, "B": 0x28, "C": 0x3C}  # DI2 of phase x = kind + offset
_DEMAND_UNITS = {"kWh": "kW", "kvarh": "kvar", "kVAh": "kVA"}


def _tariff_name(di1: int) -> str:
    return "total" if di1 == 0 else f"tariff {di1}"


def _variables() -> list[tuple[int, str, str, str | None]]:
    rows: list[tuple[int, str, str, str | None]] = []
    phases = ((1, "A"), (2, "B"), (3, "C"))
    totals = ((0, "total"), *((n, f"phase {x}") for n, x in phases))
    groups: tuple[tuple[int, str, str, str | None, tuple[tuple[int, str], ...]], ...] = (
        (0x01, "voltage", "XXX.X", "V", tuple((n, f"phase {x}") for n, x in phases)),
        (0x02, "current", "-XXX.XXX", "A", tuple((n, f"phase {x}") for n, x in phases)),
        (0x03, "active power", "-XX.XXXX", "kW", totals),
        (0x04, "reactive power", "-XX.XXXX", "kvar", totals),
        (0x05, "apparent power", "-XX.XXXX", "kVA", totals),
        (0x06, "power factor", "-X.XXX", None, totals),
        (0x07, "phase angle", "XXX.X", "°", tuple((n, f"phase {x}") for n, x in phases)),
    )
    for di2, name, fmt, unit, members in groups:
        for di1, which in members:
            rows.append((0x02000000 | di2 << 16 | di1 << 8, f"{name}, {which}", fmt, unit))
        block = ",".join([fmt] * len(members))
        names = ", ".join(which for _, which in members)
        rows.append((0x02000000 | di2 << 16 | BLOCK << 8, f"{name} block: {names}", block, unit))
    rows += [
        (0x02800001, "neutral current", "-XXX.XXX", "A"),
        (0x02800002, "frequency", "XX.XX", "Hz"),
        (0x02800003, "one-minute average active power", "-XX.XXXX", "kW"),
        (0x02800004, "present active demand", "-XX.XXXX", "kW"),
        (0x02800005, "present reactive demand", "-XX.XXXX", "kvar"),
        (0x02800006, "present apparent demand", "-XX.XXXX", "kVA"),
        (0x02800007, "meter temperature", "-XXX.X", "°C"),
        (0x02800008, "clock battery voltage", "XX.XX", "V"),
    ]
    return rows


def _build() -> dict[int, Identifier]:
    rows: list[tuple[int, str, str, str | None]] = []
    for di2, (name, unit, signed) in ENERGY_KINDS.items():
        energy = ("-" if signed else "") + "XXXXXX.XX"
        for di1 in range(MAX_TARIFF + 1):
            rows.append((di2 << 16 | di1 << 8, f"{name}, {_tariff_name(di1)}", energy, unit))
        block = ",".join([energy] * (BLOCK_TARIFFS + 1))
        rows.append((di2 << 16 | BLOCK << 8, f"{name} block: total, tariff 1-4", block, unit))
        for phase, offset in PHASE_OFFSETS.items():
            if di2:
                rows.append(((di2 + offset) << 16, f"{name}, phase {phase}", energy, unit))
        if di2:
            demand = ("-" if signed else "") + "XX.XXXX,YYMMDDhhmm"
            demand_name = name.replace("energy", "maximum demand and its time")
            for di1 in range(MAX_TARIFF + 1):
                rows.append(
                    (
                        0x01000000 | di2 << 16 | di1 << 8,
                        f"{demand_name}, {_tariff_name(di1)}",
                        demand,
                        _DEMAND_UNITS[unit],
                    )
                )
    rows += _variables()
    rows += [
        (0x04000101, "date and weekday (0 = Sunday)", "YYMMDDWW", None),
        (0x04000102, "time", "hhmmss", None),
        (0x04000103, "demand period", "XX", "min"),
        (0x04000104, "demand slip time", "XX", "min"),
        (0x04000401, "communication address", "NNNNNNNNNNNN", None),
        (0x04000402, "meter number", "NNNNNNNNNNNN", None),
    ]
    formats: dict[str, DataFormat] = {}
    table: dict[int, Identifier] = {}
    for di, description, fmt, row_unit in rows:
        parsed = formats.get(fmt)
        if parsed is None:
            parsed = formats[fmt] = parse_format(fmt)
        table[di] = Identifier(di, description, parsed, row_unit)
    return table


IDENTIFIERS: Mapping[int, Identifier] = _build()
"""Every built-in identifier by DI."""


def lookup(di: int) -> Identifier | None:
    """The built-in identifier, or None for one the table does not know."""
    return IDENTIFIERS.get(di)

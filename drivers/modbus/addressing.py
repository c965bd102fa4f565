"""Register addresses as manuals print them: 0-based, 1-based, or Modicon 4xxxx numbers.

The protocol's address is 0-based. Manuals, mbpoll and modpoll often count from 1, and
many print Modicon numbers whose first digit names the table: 0xxxx coils, 1xxxx discrete
inputs, 3xxxx input registers, 4xxxx holding registers, counting from 1 (40001 is holding
register 0). Six digits (400001..465536) reach every register. A map says which it uses
(`addressing:`); nothing is guessed: on a 0-based map, a number that looks like Modicon
is read as written and flagged with the reading it probably meant.
"""

from __future__ import annotations

import enum

from drivers.modbus.codec import Table


class Addressing(enum.StrEnum):
    """How a map's addresses are written."""

    ZERO_BASED = "zero_based"  # the protocol's address (default)
    ONE_BASED = "one_based"  # manual / mbpoll / modpoll register number: address + 1
    MODICON = "modicon"  # 0xxxx/1xxxx/3xxxx/4xxxx (or 6 digits): table digit + address + 1


_WORDS = {
    Table.COIL: "coil",
    Table.DISCRETE: "discrete input",
    Table.INPUT: "input register",
    Table.HOLDING: "holding register",
}
_PREFIXES = {0: Table.COIL, 1: Table.DISCRETE, 3: Table.INPUT, 4: Table.HOLDING}
_DIGIT = {table: digit for digit, table in _PREFIXES.items()}
NOT_MODICON = (
    "Modicon numbers are 0xxxx coils, 1xxxx discrete inputs, 3xxxx input registers, "
    "4xxxx holding registers (counting from 1; 6 digits for addresses past 9999)"
)


def modicon_number(table: Table, address: int) -> str:
    """The Modicon number of a 0-based address: 5 digits when it fits, else 6."""
    digits = 5 if address < 9999 else 6
    return f"{_DIGIT[table]}{address + 1:0{digits - 1}d}"


def parse_number(text: str) -> tuple[int, int | None]:
    """An address as typed: decimal (with its digit count, for 6-digit Modicon numbers
    written with a leading 0) or 0x-hex; ValueError otherwise."""
    text = text.strip()
    if text.isdigit():
        return int(text, 10), len(text)
    try:
        return int(text, 0), None
    except ValueError:
        raise ValueError(f"address {text!r} is not a number (decimal or 0x-hex)") from None


def to_protocol(
    addressing: Addressing, number: int, table: Table | None, *, digits: int | None = None
) -> tuple[Table, int]:
    """The table and 0-based address a number means; ValueError with the reason if none.

    `table` is the one given beside the number (None: not given); in Modicon notation the
    number names the table, and a different one given beside it is an error. `digits`: how
    many digits the number was written with, when known (a 6-digit coil number 010001).
    """
    if addressing is Addressing.ZERO_BASED:
        if not 0 <= number <= 65535:
            raise ValueError(f"address {number} is outside 0..65535{_hint(table, number)}")
        return table or Table.HOLDING, number
    if addressing is Addressing.ONE_BASED:
        if not 1 <= number <= 65536:
            raise ValueError(
                f"address {number} is outside 1..65536 (addressing one_based counts from 1)"
            )
        return table or Table.HOLDING, number - 1
    six = (digits is not None and digits >= 6) or number > 99999
    prefix, offset = divmod(number, 100000 if six else 10000)
    named = _PREFIXES.get(prefix)
    if named is None or number > 465536:
        raise ValueError(f"address {number} is not a Modicon number: {NOT_MODICON}")
    if not 1 <= offset <= (65536 if six else 9999):
        raise ValueError(
            f"address {number} is not a Modicon number: they count from 1 "
            f"({modicon_number(named, 0)} is {_WORDS[named]} 0)"
        )
    if table is not None and table is not named:
        word = _WORDS[named]
        article = "an" if word[0] == "i" else "a"
        raise ValueError(
            f"address {number} is {article} {word} in Modicon notation, but table is {table}"
        )
    return named, offset - 1


def looks_modicon(table: Table, number: int) -> tuple[Table, int] | None:
    """The Modicon reading of a 0-based register number that looks like one (3xxxx, 4xxxx,
    3xxxxx, 4xxxxx), or None. Bit tables are left alone: 0xxxx and 1xxxx are ordinary
    coil and input numbers."""
    if table.is_bits:
        return None
    for low, high, named in (
        (30001, 39999, Table.INPUT),
        (40001, 49999, Table.HOLDING),
        (300001, 365536, Table.INPUT),
        (400001, 465536, Table.HOLDING),
    ):
        if low <= number <= high:
            return named, number - low
    return None


def _hint(table: Table | None, number: int) -> str:
    meant = looks_modicon(table or Table.HOLDING, number)
    if meant is None:
        return ""
    return (
        f"; {number} looks like Modicon notation for {meant[0]} register {meant[1]}: "
        "set addressing: modicon"
    )


def modicon_warning(table: Table, number: int) -> str | None:
    """What to tell about a 0-based register number that looks like Modicon notation."""
    meant = looks_modicon(table, number)
    if meant is None:
        return None
    return (
        f"address {number} looks like Modicon notation ({meant[0]} register {meant[1]}) "
        f"but this map counts from 0, so it reads {table} register {number} "
        f"(0x{number:04X}); say which with addressing: modicon, or addressing: zero_based "
        "if the manual really means it (SunSpec maps start at 40000)"
    )

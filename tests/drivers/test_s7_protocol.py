"""S7 frames: byte layouts checked against the protocol's documented captures, and answers
that do not fit their request refused as FrameError (the driver reconnects on them)."""

from __future__ import annotations

import pytest

from drivers.s7.protocol import (
    Answer,
    FrameError,
    Item,
    connection_request,
    cpu_state_answer,
    data_frame,
    item_reason,
    parse_cpu_state,
    parse_pdu,
    parse_read,
    parse_setup,
    read_answer,
    read_request,
    setup_answer,
    setup_request,
    szl_request,
)


def test_request_layouts() -> None:
    # COTP CR of rack 0 slot 2 (S7-300, PG), as Wireshark shows snap7's.
    assert connection_request(0x0100, 0x0102).hex() == (
        "0300001611e00000000100c1020100c2020102c0010a"
    )
    assert data_frame(setup_request(1, 480)).hex() == (
        "0300001902f08032010000000100080000f0000001000101e0"
    )
    # Read DB1, 11 bytes from byte 0 (address in bits), and MW20: one job, two items.
    pdu = read_request(5, [Item(0x84, 1, 0, 11), Item(0x83, 0, 20, 2)])
    assert pdu.hex() == (
        "32010000" "0005" "001a" "0000"  # job, reference 5, 26 bytes of parameters
        "0402"  # read-var, 2 items
        "120a1002" "000b" "0001" "84" "000000"  # 11 bytes of DB1 from bit 0
        "120a1002" "0002" "0000" "83" "0000a0"  # 2 bytes of M from bit 160 (byte 20)
    )  # fmt: skip


def test_read_answer_with_fill_bytes_and_item_codes() -> None:
    sizes = [3, 2, 4]
    raw = read_answer(9, [(0xFF, b"\x01\x02\x03"), (0x0A, b""), (0xFF, b"\x00\x00\x00\x07")])
    answer = parse_pdu(raw)
    assert answer.ref == 9
    # Transport 04: the length is in bits. 3 data bytes are followed by a fill byte; a
    # refused item carries no data.
    assert answer.data.hex() == "ff040018010203" + "00" + "0a000000" + "ff04002000000007"
    assert parse_read(answer, sizes) == [
        (0xFF, b"\x01\x02\x03"),
        (0x0A, b""),
        (0xFF, b"\0\0\0\x07"),
    ]
    assert item_reason(0x0A) == "PLC item code 0x0A (object does not exist)"
    assert item_reason(0x42) == "PLC item code 0x42"


def test_answers_that_do_not_fit_are_refused() -> None:
    answer = parse_pdu(read_answer(1, [(0xFF, b"\x01\x02")]))
    with pytest.raises(FrameError, match="read-var answer has 1 items, asked 2"):
        parse_read(answer, [2, 2])
    with pytest.raises(FrameError, match="item 1: 2 bytes in the answer, asked 4"):
        parse_read(answer, [4])
    truncated = Answer(answer.rosctr, 1, 0, answer.params, answer.data[:3])
    with pytest.raises(FrameError, match="truncated at item 1"):
        parse_read(truncated, [2])
    refused = Answer(3, 1, 0x8104, b"\x04\x01", b"")
    with pytest.raises(FrameError, match=r"S7 error 0x8104 \(application relationship error\)"):
        parse_read(refused, [2])
    with pytest.raises(FrameError, match="not an S7 PDU"):
        parse_pdu(b"\x33" + bytes(11))
    with pytest.raises(FrameError, match="S7 PDU truncated"):
        parse_pdu(setup_answer(1, 240)[:-2])


def test_setup_and_cpu_state() -> None:
    assert parse_setup(parse_pdu(setup_answer(1, 240))) == 240
    assert parse_pdu(szl_request(3, 0x0424, 0)).data.hex() == "ff09000404240000"
    assert parse_cpu_state(parse_pdu(cpu_state_answer(3, 0x04))) == 0x04
    assert parse_cpu_state(parse_pdu(cpu_state_answer(3, 0x08))) == 0x08
    with pytest.raises(FrameError, match="not answered"):
        parse_cpu_state(Answer(7, 3, 0, b"", b"\x0a\x00\x00\x00"))

"""Write requests from the network: strictly typed, bounded, refused with a named field."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from edge_agent.commands.request import MAX_REQUEST_BYTES, WriteRequest, parse_request
from edge_agent.commands.slots import WriteSlots


def _parse(doc: object) -> tuple[WriteRequest | None, str | None, str | None]:
    request, rejection, request_id = parse_request(orjson.dumps(doc))
    return request, None if rejection is None else rejection.reason, request_id


def test_the_issue_request_parses_with_its_types() -> None:
    request, reason, request_id = _parse(
        {"id": "c-1", "point": "flow_setpoint", "value": 42.5, "expires_s": 10}
    )
    assert reason is None and request_id == "c-1"
    assert request == WriteRequest(id="c-1", point="flow_setpoint", value=42.5, expires_s=10.0)
    for value in (True, 3, "auto"):
        parsed, _, _ = _parse({"id": "c", "point": "p", "value": value})
        assert parsed is not None and parsed.value == value and type(parsed.value) is type(value)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"point": "p", "value": 1}, "id: Field required"),
        ({"id": "c", "value": 1}, "point: Field required"),
        ({"id": "c", "point": "p"}, "value: true/false, a number or text"),
        ({"id": "c", "point": "p", "value": [1]}, "value: true/false, a number or text"),
        ({"id": "c", "point": "p", "value": None}, "value: true/false, a number or text"),
        ({"id": "c", "point": "p", "value": 1, "expires_s": "10"}, "expires_s: a number of sec"),
        ({"id": "c", "point": "p", "value": 1, "expires_s": True}, "expires_s: a number of sec"),
        ({"id": "c", "point": "p", "value": 1, "expires_s": 0}, "expires_s: Input should be gr"),
        ({"id": "c", "point": "p", "value": 1, "extra": 1}, "extra: unknown field"),
        ({"id": "c\n", "point": "p", "value": 1}, "id: must be printable text"),
        ({"id": 7, "point": "p", "value": 1}, "id: Input should be a valid string"),
        ([1, 2], "a request is a JSON object"),
    ],
)
def test_malformed_requests_name_the_field(doc: object, reason: str) -> None:
    request, got, _ = _parse(doc)
    assert request is None and got is not None and got.startswith(reason), got


def test_refusals_echo_a_bounded_id_and_never_the_payload() -> None:
    request, rejection, request_id = parse_request(
        orjson.dumps({"id": "x" * 500, "point": "p", "value": 1})
    )
    assert request is None and rejection is not None
    assert request_id == "x" * 100
    assert "xxx" not in rejection.reason
    big = b'{"id": "c", "value": "' + b"a" * MAX_REQUEST_BYTES + b'"}'
    _, rejection, request_id = parse_request(big)
    assert rejection is not None and request_id is None
    assert rejection.reason == f"a request of {len(big):,} bytes is over the limit of 4096"
    _, rejection, _ = parse_request(b"{not json")
    assert rejection is not None and rejection.reason == "not JSON"


async def test_slots_run_in_arrival_order_and_wake_a_waiting_line() -> None:
    slots = WriteSlots(limit=2)
    ran: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            ran.append(name)

        return run

    abandoned: list[str] = []
    assert await slots.pause(0.0) is False  # nothing waits: the full pause
    waiter = asyncio.create_task(slots.pause(30.0))
    await asyncio.sleep(0)  # let the waiter start waiting
    assert slots.put(job("a"), abandoned.append)
    assert await asyncio.wait_for(waiter, 5) is True  # woken by the write, not the timeout
    assert slots.put(job("b"), abandoned.append)
    assert not slots.put(job("c"), abandoned.append)  # the limit: 2 waiting
    await slots.run_waiting()
    assert ran == ["a", "b"] and len(slots) == 0
    assert slots.put(job("d"), abandoned.append)
    slots.close("line restarted")
    assert abandoned == ["line restarted"] and ran == ["a", "b"]
    assert not slots.put(job("e"), abandoned.append)


async def test_a_write_that_raises_costs_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    slots = WriteSlots(limit=4)
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("bug")

    async def fine() -> None:
        ran.append("fine")

    assert slots.put(broken, lambda _r: None)
    assert slots.put(fine, lambda _r: None)
    await slots.run_waiting()
    assert ran == ["fine"]
    assert [r.getMessage() for r in caplog.records] == [
        "a write failed outside the driver; the line goes on"
    ]

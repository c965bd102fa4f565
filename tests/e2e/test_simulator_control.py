"""The HTTP control API over every simulated device type, each fault seen by a real client.

Real simulators on loopback free ports, switched over HTTP with urllib (as curl would),
observed through an independent client: asyncua's `Client` for the OPC UA PLC, the
project's DL/T 645 driver for the meter (over its serial-over-TCP line), pymodbus for the
Modbus device. The simulators run on fake clocks, so every served value is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from pymodbus.client import AsyncModbusTcpClient

from drivers.dlt645.config import Dlt645Device
from drivers.dlt645.driver import Dlt645Driver
from drivers.reading import DeviceUnreachable, Quality
from edge_agent.catalog import Kind, shipped
from simulators.common.control import LINE_FAULTS, OPCUA_FAULTS, LineControl, OpcUaControl, merged
from simulators.dlt645.site import Dlt645MeterSpec, Dlt645SimSite
from simulators.dlt645.site import serve as serve_meters
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, serve
from simulators.opcua.plc import PLC_NAMESPACE, plc_signals
from simulators.opcua.server import OpcUaSimSpec, OpcUaSite, serve_opcua

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"
PROFILES = shipped(Kind.PROFILES)
ADDRESS = "000000001234"
COUNTER = f"nsu={PLC_NAMESPACE};i=1001"  # int(t * 10)
PUMP_RUN = f"nsu={PLC_NAMESPACE};i=1002"
TANK_TEMP = f"nsu={PLC_NAMESPACE};s=Tank1.Temperature"
UPDATE_S = 0.05  # the PLC's update interval
SIGNALS = {s.name if not s.folder else f"{s.folder}/{s.name}": s for s in plc_signals(0)}
MODBUS_KEYS = ["name", "url", "device_id", "profile", "frozen", "fault", "delay_s", "code"]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def get(base: str, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(_http, "GET", base + path)


async def fetch(base: str, path: str) -> Any:
    """GET that must answer 200; the body."""
    status, answer = await get(base, path)
    assert status == 200, answer
    return answer


async def put(base: str, name: str, body: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(_http, "PUT", f"{base}/devices/{name}/fault", body)


async def ok(base: str, name: str, body: Any) -> dict[str, Any]:
    """PUT a fault that must be taken; the device object answered."""
    status, answer = await put(base, name, body)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


@contextlib.asynccontextmanager
async def control(
    *,
    modbus: Sequence[SimDeviceSpec] = (),
    opcua: OpcUaSite | None = None,
    meters: Dlt645SimSite | None = None,
) -> AsyncIterator[tuple[SimSite, str]]:
    """The Modbus site with its control API, also switching the PLCs and meters given."""
    plcs = {n: OpcUaControl(s) for n, s in (opcua.devices if opcua else {}).items()}
    lines = {n: LineControl(m, "dlt645") for n, m in (meters.meters if meters else {}).items()}
    async with serve(modbus, control=(LOOPBACK, 0), extra=merged(plcs, lines)) as site:
        assert site.control is not None
        assert site.control.host == LOOPBACK
        yield site, site.control.url


@contextlib.asynccontextmanager
async def opc_client(url: str) -> AsyncIterator[Client]:
    """An asyncua client session; leaving is quiet when the server dropped it."""
    client = Client(url, timeout=2)
    await client.connect()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def node_of(client: Client, identifier: str | int) -> Node:
    idx = await client.get_namespace_index(PLC_NAMESPACE)
    args: Any = (identifier, idx)  # asyncua types these as NewTypes
    return client.get_node(ua.NodeId(*args))


async def read_until(node: Node, expected: object, *, timeout_s: float = 10.0) -> None:
    """Read (round trip after round trip) until the node serves `expected`."""
    seen: object = None
    try:
        async with asyncio.timeout(timeout_s):
            while (seen := await node.read_value()) != expected:
                pass
    except TimeoutError:
        raise AssertionError(f"{node} still serves {seen!r}, not {expected!r}") from None


async def dv(node: Node) -> ua.DataValue:
    return await node.read_data_value(raise_on_bad_status=False)


# -- the list, the shape of a device, the error answers -------------------------------------


async def test_every_device_type_is_listed_with_its_faults_and_errors_name_the_allowed() -> None:
    modbus = [
        SimDeviceSpec(
            name="meter-1",
            url=f"tcp://{LOOPBACK}:0",
            profile=load_profile(PROFILES / "chint-dtsu666.yaml"),
        )
    ]
    meter_spec = Dlt645MeterSpec(name="meter-645", url=f"rtu+tcp://{LOOPBACK}:0", address=ADDRESS)
    async with (
        serve_opcua([OpcUaSimSpec(name="plc-1", url=f"opc.tcp://{LOOPBACK}:0")]) as plcs,
        serve_meters([meter_spec]) as meters,
        control(modbus=modbus, opcua=plcs, meters=meters) as (site, base),
    ):
        status, devices = await get(base, "/devices")
        assert status == 200
        assert [(d["name"], d["type"]) for d in devices] == [
            ("meter-1", "modbus"),
            ("plc-1", "opcua"),
            ("meter-645", "dlt645"),
        ]
        m, plc, meter = devices
        # The Modbus object keeps its keys and their order; the new ones come after.
        assert list(m)[: len(MODBUS_KEYS) + 1] == [*MODBUS_KEYS, "counters"]
        assert list(m)[len(MODBUS_KEYS) + 1 :] == ["type", "available_faults", "active_faults"]
        assert m["url"] == site.device("meter-1").url and m["fault"] == "none"
        line_faults = ["none", "no_answer", "slow", "exception", "drop", "corrupt"]
        line_faults += ["intermittent", "freeze"]
        assert m["available_faults"] == meter["available_faults"] == [*line_faults, "unfreeze"]
        assert plc["available_faults"] == [
            "none",
            "stop",
            "start",
            "restart",
            "freeze",
            "unfreeze",
            "bad_status",
            "delete_node",
            "expire_sessions",
            "drop_subscriptions",
        ]
        assert m["active_faults"] == plc["active_faults"] == meter["active_faults"] == []
        assert plc["url"] == plcs.device("plc-1").url and plc["listening"] is True
        assert (plc["sessions"], plc["bad"], plc["deleted"]) == (0, {}, [])
        assert (meter["address"], meter["url"]) == (ADDRESS, meters.meter("meter-645").url)
        assert meter["fault"] == "none" and meter["counters"]["requests"] == 0

        assert await fetch(base, "/devices/plc-1") == plc
        values = await fetch(base, "/devices/plc-1/values")
        assert values[COUNTER] == 0 and len(values) == 23  # 8 set-points and Line2.Flow added
        values = await fetch(base, "/devices/meter-645/values")
        assert values["00010000"] == meters.meter("meter-645").served(0x00010000)
        assert values["04000401"] == ADDRESS

        # Unknown device: 404 naming the ones there are.
        status, answer = await put(base, "nope", {"fault": "none"})
        assert (status, answer) == (
            404,
            {"error": "no such device: nope (devices: meter-1, plc-1, meter-645)"},
        )
        status, answer = await get(base, "/devices/nope/values")
        assert status == 404 and answer["error"].startswith("no such device: nope")

        # Bad fault names: 400 naming the allowed ones of that type.
        status, answer = await put(base, "plc-1", {"fault": "slow"})
        assert (status, answer["error"]) == (
            400,
            f"unknown fault 'slow' for opcua device plc-1; allowed: {', '.join(OPCUA_FAULTS)}",
        )
        status, answer = await put(base, "meter-645", {"fault": "stop"})
        assert (status, answer["error"]) == (
            400,
            f"unknown fault 'stop' for dlt645 device meter-645; allowed: {', '.join(LINE_FAULTS)}",
        )
        status, answer = await put(base, "meter-1", {"fault": "melt"})
        assert status == 400 and answer["error"].endswith(f"allowed: {', '.join(LINE_FAULTS)}")

        # Bad values and keys: 400 saying what is allowed.
        for name, body, message in (
            (
                "plc-1",
                {"fault": "bad_status"},
                'bad_status needs "node", e.g. "s=Tank1.Temperature"',
            ),
            (
                "plc-1",
                {"fault": "delete_node", "node": "s=Nope"},
                "no node 's=Nope' on plc-1; nodes: ",
            ),
            (
                "plc-1",
                {"fault": "delete_node", "node": "ns=3;s=X"},
                "node 'ns=3;s=X' names its namespace by index ns=3",
            ),
            ("plc-1", {"fault": "stop", "node": "i=1001"}, "unknown keys: node (stop takes fault)"),
            (
                "plc-1",
                {"fault": "bad_status", "node": "i=1001", "status": "Good"},
                "unknown status 'Good': use an OPC UA status name that starts with Bad or "
                "Uncertain, e.g. BadSensorFailure",
            ),
            (
                "plc-1",
                {"fault": "bad_status", "node": "i=1001", "status": "BadMelted"},
                "unknown status 'BadMelted'",
            ),
            ("meter-645", {"fault": "slow", "delay_s": -1}, "delay_s must be within 0..3600"),
            ("meter-645", {"fault": "exception", "code": 0}, "exception code must be within"),
            (
                "meter-645",
                {"fault": "freeze", "code": 2},
                "unknown keys: code (freeze takes fault)",
            ),
            ("meter-645", {"fault": "none", "colour": "red"}, "unknown keys: colour"),
            ("meter-645", ["none"], 'body must be an object with "fault"'),
        ):
            status, answer = await put(base, name, body)
            assert status == 400 and answer["error"].startswith(message), (body, answer)
        status, answer = await asyncio.to_thread(
            _http, "PUT", f"{base}/devices/plc-1/values", {"fault": "none"}
        )
        assert (status, answer) == (405, {"error": "use GET"})

        # Nothing was switched by the refused requests.
        after = await fetch(base, "/devices")
        assert [d["active_faults"] for d in after] == [[], [], []]
        assert [d.get("fault") for d in after] == ["none", None, "none"]

        # A deleted node cannot be given a status: 409, and how to restore it.
        await ok(base, "plc-1", {"fault": "delete_node", "node": "i=1001"})
        status, answer = await put(base, "plc-1", {"fault": "bad_status", "node": "i=1001"})
        assert (status, answer["error"]) == (
            409,
            'node i=1001 of plc-1 is deleted; restore it first with {"fault": "none", '
            '"node": "i=1001"}',
        )

        # One name for two devices is refused where the API is made.
        with pytest.raises(ValueError, match="two simulated devices are named 'plc-1'"):
            merged(
                {n: OpcUaControl(s) for n, s in plcs.devices.items()},
                {"plc-1": LineControl(meters.meter("meter-645"), "dlt645")},
            )


# -- OPC UA ---------------------------------------------------------------------------------


async def test_opcua_faults_over_http_seen_by_an_asyncua_client() -> None:
    clock = FakeClock()
    spec = OpcUaSimSpec(name="plc-1", url=f"opc.tcp://{LOOPBACK}:0", update_interval_s=UPDATE_S)
    async with (
        serve_opcua([spec], clock=clock) as plcs,
        control(opcua=plcs) as (_, base),
    ):
        url = plcs.device("plc-1").url
        async with opc_client(url) as client:
            counter = await node_of(client, 1001)
            assert await counter.read_value() == 0
            clock.t += 1.0  # t = 1 s: the counter serves 10
            await read_until(counter, 10)
            plc = await fetch(base, "/devices/plc-1")
            assert plc["sessions"] == 1

            # bad_status: served with that status (a Bad one with a null value, as OPC UA wants;
            # the value is kept for Uncertain and for Good again); none + node: Good again.
            temp = await node_of(client, "Tank1.Temperature")
            expected_temp = SIGNALS["Tank1/Temperature"].pattern(1.0)
            plc = await ok(
                base,
                "plc-1",
                {
                    "fault": "bad_status",
                    "node": "s=Tank1.Temperature",
                    "status": "BadSensorFailure",
                },
            )
            assert (plc["bad"], plc["active_faults"]) == (
                {TANK_TEMP: "BadSensorFailure"},
                ["bad_status"],
            )
            got = await dv(temp)
            assert (
                got.StatusCode is not None and got.StatusCode.value == StatusCodes.BadSensorFailure
            )
            assert got.Value is not None and got.Value.Value is None  # a Bad value is null
            with pytest.raises(UaStatusCodeError) as raised:
                await temp.read_value()
            assert raised.value.code == StatusCodes.BadSensorFailure
            # Uncertain names are taken too; the default status is BadSensorFailure.
            await ok(
                base,
                "plc-1",
                {"fault": "bad_status", "node": TANK_TEMP, "status": "UncertainLastUsableValue"},
            )
            got = await dv(temp)
            assert got.StatusCode is not None
            assert got.StatusCode.value == StatusCodes.UncertainLastUsableValue
            assert got.Value is not None and got.Value.Value == expected_temp  # the value kept
            await ok(base, "plc-1", {"fault": "bad_status", "node": "i=1001"})
            got = await dv(counter)
            assert (
                got.StatusCode is not None and got.StatusCode.value == StatusCodes.BadSensorFailure
            )
            plc = await ok(base, "plc-1", {"fault": "none", "node": "s=Tank1.Temperature"})
            assert (plc["bad"], plc["active_faults"]) == (
                {COUNTER: "BadSensorFailure"},
                ["bad_status"],
            )
            got = await dv(temp)
            assert got.StatusCode is not None and got.StatusCode.value == StatusCodes.Good
            assert got.Value is not None and got.Value.Value == expected_temp
            await ok(base, "plc-1", {"fault": "none", "node": "i=1001"})
            assert await counter.read_value() == 10

            # delete_node: BadNodeIdUnknown, gone from /values; none + node: back, Good.
            pump = await node_of(client, 1002)
            expected_run = SIGNALS["Pump1/Run"].pattern(1.0)
            plc = await ok(base, "plc-1", {"fault": "delete_node", "node": "i=1002"})
            assert (plc["deleted"], plc["bad"], plc["active_faults"]) == (
                [PUMP_RUN],
                {},
                ["delete_node"],
            )
            got = await dv(pump)
            assert (
                got.StatusCode is not None and got.StatusCode.value == StatusCodes.BadNodeIdUnknown
            )
            with pytest.raises(UaStatusCodeError) as raised:
                await pump.read_value()
            assert raised.value.code == StatusCodes.BadNodeIdUnknown
            values = await fetch(base, "/devices/plc-1/values")
            assert PUMP_RUN not in values and values[COUNTER] == 10
            await ok(base, "plc-1", {"fault": "delete_node", "node": "i=1002"})  # again: no-op
            plc = await ok(base, "plc-1", {"fault": "none", "node": "i=1002"})
            assert (plc["deleted"], plc["active_faults"]) == ([], [])
            got = await dv(pump)
            assert got.StatusCode is not None and got.StatusCode.value == StatusCodes.Good
            assert got.Value is not None and got.Value.Value is expected_run

            # freeze: the counter holds 10 while the clock moves 100 s. It is read back to back
            # for eight update intervals (an observation window: unfrozen, the very next update
            # would serve 1010); unfreeze: 1010 arrives.
            plc = await ok(base, "plc-1", {"fault": "freeze"})
            assert (plc["frozen"], plc["active_faults"]) == (True, ["freeze"])
            clock.t += 100.0
            loop = asyncio.get_running_loop()
            window_end = loop.time() + 8 * UPDATE_S
            seen = set()
            while loop.time() < window_end:
                seen.add(await counter.read_value())
            assert seen == {10}
            plc = await ok(base, "plc-1", {"fault": "unfreeze"})
            assert (plc["frozen"], plc["active_faults"]) == (False, [])
            await read_until(counter, 1010)

            # drop_subscriptions: the session stays, its subscription is gone.
            subscription = await client.create_subscription(50, None)
            plc = await ok(base, "plc-1", {"fault": "drop_subscriptions"})
            assert plc["sessions"] == 1
            with pytest.raises(UaStatusCodeError) as raised:
                await subscription.subscribe_data_change(counter)
            assert raised.value.code == StatusCodes.BadSubscriptionIdInvalid
            assert await counter.read_value() == 1010

            # expire_sessions: the connection stays open, the session is forgotten.
            plc = await ok(base, "plc-1", {"fault": "expire_sessions"})
            assert (plc["sessions"], plc["listening"], plc["active_faults"]) == (0, True, [])
            with pytest.raises(UaStatusCodeError) as raised:
                await counter.read_value()
            assert raised.value.code == StatusCodes.BadSessionNotActivated

        # stop: connections dropped and refused; start: a new session reads again.
        async with opc_client(url) as client:
            counter = await node_of(client, 1001)
            assert await counter.read_value() == 1010
            plc = await ok(base, "plc-1", {"fault": "stop"})
            assert (plc["listening"], plc["sessions"], plc["active_faults"]) == (
                False,
                0,
                ["stop"],
            )
            with pytest.raises(ConnectionError):
                await counter.read_value()
        with pytest.raises(ConnectionRefusedError):
            await Client(url, timeout=2).connect()
        plc = await ok(base, "plc-1", {"fault": "start"})
        assert (plc["listening"], plc["active_faults"]) == (True, [])
        async with opc_client(url) as client:
            counter = await node_of(client, 1001)
            assert await counter.read_value() == 1010
            plc = await fetch(base, "/devices/plc-1")
            assert plc["sessions"] == 1

            # restart: the connected client is cut off, a new one gets in at once.
            plc = await ok(base, "plc-1", {"fault": "restart"})
            assert (plc["listening"], plc["sessions"], plc["active_faults"]) == (True, 0, [])
            with pytest.raises(ConnectionError):
                await counter.read_value()
        async with opc_client(url) as client:
            counter = await node_of(client, 1001)
            assert await counter.read_value() == 1010

        # none: every fault at once cleared, the PLC as new.
        await ok(base, "plc-1", {"fault": "freeze"})
        await ok(base, "plc-1", {"fault": "bad_status", "node": "s=Tank1.Temperature"})
        await ok(base, "plc-1", {"fault": "delete_node", "node": "i=1002"})
        plc = await ok(base, "plc-1", {"fault": "stop"})
        assert plc["active_faults"] == ["stop", "freeze", "bad_status", "delete_node"]
        plc = await ok(base, "plc-1", {"fault": "none"})
        assert plc["active_faults"] == []
        assert (plc["listening"], plc["frozen"], plc["bad"], plc["deleted"]) == (
            True,
            False,
            {},
            [],
        )
        async with opc_client(url) as client:
            temp, pump = await node_of(client, "Tank1.Temperature"), await node_of(client, 1002)
            got = await dv(temp)
            assert got.StatusCode is not None and got.StatusCode.value == StatusCodes.Good
            assert got.Value is not None
            assert got.Value.Value == SIGNALS["Tank1/Temperature"].pattern(101.0)
            assert await pump.read_value() is SIGNALS["Pump1/Run"].pattern(101.0)


# -- DL/T 645 -------------------------------------------------------------------------------


def _dlt645_device(url: str, *, timeout_s: float) -> Dlt645Device:
    return Dlt645Device.model_validate(
        {
            "name": "meter-645",
            "driver": "dlt645",
            "url": url,
            "address": ADDRESS,
            "timeout_s": timeout_s,
            "points": [
                {"name": "voltage_a", "di": "02010100"},
                {"name": "import_kwh", "di": "00010000"},
            ],
        }
    )


async def test_dlt645_faults_over_http_seen_by_the_driver() -> None:
    clock = FakeClock()
    start = dt.datetime(2024, 5, 1, 8, 0, 0)

    def wall() -> dt.datetime:
        return start + dt.timedelta(seconds=clock.t - 1000.0)

    spec = Dlt645MeterSpec(name="meter-645", url=f"rtu+tcp://{LOOPBACK}:0", address=ADDRESS)
    async with (
        serve_meters([spec], clock=clock, wall=wall) as meters,
        control(meters=meters) as (_, base),
    ):
        meter = meters.meter("meter-645")
        driver = Dlt645Driver(_dlt645_device(meter.url, timeout_s=0.3))

        def served() -> list[Any]:
            return [meter.served(0x02010100), meter.served(0x00010000)]

        poll = await driver.read()
        assert (poll.values, poll.issues) == (served(), {})

        # exception: every request gets an error answer with ERR = code.
        device = await ok(base, "meter-645", {"fault": "exception", "code": 2})
        assert (device["fault"], device["code"], device["active_faults"]) == (
            "exception",
            2,
            ["exception"],
        )
        poll = await driver.read()
        assert poll.values == [None, None]
        assert poll.issues == {
            0: (Quality.BAD, "error 02 (no requested data)"),
            1: (Quality.BAD, "error 02 (no requested data)"),
        }

        # no_answer: silence, the driver times out (one request, not one per point).
        before = meter.counters.as_dict()
        await ok(base, "meter-645", {"fault": "no_answer"})
        with pytest.raises(DeviceUnreachable) as unreachable:
            await driver.read()
        assert unreachable.value.reason == "timeout"
        device = await fetch(base, "/devices/meter-645")
        assert device["counters"]["requests"] == before["requests"] + 1
        assert device["counters"]["ignored"] == before["ignored"] + 1

        # corrupt: answers with a bad checksum only.
        await ok(base, "meter-645", {"fault": "corrupt"})
        with pytest.raises(DeviceUnreachable) as unreachable:
            await driver.read()
        assert unreachable.value.reason == "bad checksum"

        # drop: the converter closes the connection.
        await ok(base, "meter-645", {"fault": "drop"})
        with pytest.raises(DeviceUnreachable) as unreachable:
            await driver.read()
        assert unreachable.value.reason == "connection lost"

        # slow: the answers come, each delay_s late (a driver that waits long enough).
        device = await ok(base, "meter-645", {"fault": "slow", "delay_s": 0.15})
        assert (device["fault"], device["delay_s"]) == ("slow", 0.15)
        patient = Dlt645Driver(_dlt645_device(meter.url, timeout_s=5.0))
        t0 = time.monotonic()
        poll = await patient.read()
        assert time.monotonic() - t0 >= 2 * 0.15
        assert (poll.values, poll.issues) == (served(), {})
        await patient.close()

        # freeze: ten minutes on the meter's clock change nothing; none lets them count.
        device = await ok(base, "meter-645", {"fault": "freeze"})
        assert (device["frozen"], device["active_faults"]) == (True, ["slow", "freeze"])
        frozen = (await driver.read()).values
        clock.t += 600.0
        assert (await driver.read()).values == frozen
        values = await fetch(base, "/devices/meter-645/values")
        assert values["00010000"] == frozen[1] and values["04000102"] == "08:00:00"
        device = await ok(base, "meter-645", {"fault": "none"})
        assert (device["fault"], device["frozen"], device["active_faults"]) == ("none", False, [])
        poll = await driver.read()
        assert (poll.values, poll.issues) == (served(), {})
        assert float(poll.values[1]) > float(frozen[1])  # type: ignore[arg-type]
        values = await fetch(base, "/devices/meter-645/values")
        assert values["04000102"] == "08:10:00"
        await driver.close()


# -- Modbus: the new freeze switch ----------------------------------------------------------


async def test_modbus_freeze_over_http_and_none_clears_it() -> None:
    clock = FakeClock()
    spec = SimDeviceSpec(
        name="meter-1",
        url=f"tcp://{LOOPBACK}:0",
        profile=load_profile(PROFILES / "chint-dtsu666.yaml"),
    )
    async with serve([spec], control=(LOOPBACK, 0), clock=clock) as site:
        assert site.control is not None
        base = site.control.url
        port = int(site.device("meter-1").url.rsplit(":", 1)[1])
        client = AsyncModbusTcpClient(LOOPBACK, port=port, timeout=2, retries=0)
        assert await client.connect()

        async def energy() -> list[int]:
            rr = await client.read_holding_registers(0x401E, count=2, device_id=1)
            assert not rr.isError()
            return list(rr.registers)

        first = await energy()
        device = await ok(base, "meter-1", {"fault": "freeze"})
        assert (device["frozen"], device["fault"], device["active_faults"]) == (
            True,
            "none",
            ["freeze"],
        )
        clock.t += 3600.0
        assert await energy() == first
        device = await ok(base, "meter-1", {"fault": "none"})
        assert (device["frozen"], device["active_faults"]) == (False, [])
        assert await energy() != first
        client.close()

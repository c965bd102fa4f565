"""Our OPC UA driver against another vendor's server: node-opcua (npm), through the agent.

tests/foreign/opcua/server.js serves a PLC namespace (`urn:foreign:plc`, index 3, not the
2 of our simulator) with one variable per data type, a Bad and an Uncertain one, every
value stamped with one fixed SourceTimestamp. The real agent reads it, once by Read
(`mode: poll`) and once by subscription (`mode: subscribe`), and publishes to a real
Mosquitto; the test asserts every value, type, quality, reason and source time that
arrives, what a node that does not exist does to its point (and only to it), the server
going away and coming back, and a SignAndEncrypt session with a user and password, with
node-opcua's own certificate handling on the other side.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import pytest_asyncio

from drivers.opcua.certificates import CertificatePair, der_of, ensure_certificate, fingerprint
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver, browse
from drivers.reading import Quality
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.runtime.agent import Agent
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.foreign.opcua.node_opcua import PLC_NAMESPACE, NodeOpcUaServer, node_or_skip
from tests.running_agent import running
from tests.waiting import until

pytestmark = pytest.mark.timeout(90)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "edge_agent/schemas/data-v1.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

SOURCE = datetime.datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=datetime.UTC)  # server.js
SOURCE_MS = int(SOURCE.timestamp() * 1000)
USER = "edge"
PASSWORD = "foreign-s3cret"  # a test fixture's password, never a real one

NS = PLC_NAMESPACE
POINTS = f"""\
      - {{name: double, node: "nsu={NS};s=Foreign.Double", unit: degC}}
      - {{name: float, node: "nsu={NS};s=Foreign.Float"}}
      - {{name: int16, node: "nsu={NS};s=Foreign.Int16"}}
      - {{name: uint16, node: "nsu={NS};s=Foreign.UInt16"}}
      - {{name: int32, node: "nsu={NS};i=2001"}}
      - {{name: uint32, node: "nsu={NS};i=2002"}}
      - {{name: byte, node: "nsu={NS};s=Foreign.Byte"}}
      - {{name: sbyte, node: "nsu={NS};s=Foreign.SByte"}}
      - {{name: int64, node: "nsu={NS};s=Foreign.Int64"}}
      - {{name: uint64, node: "nsu={NS};s=Foreign.UInt64"}}
      - {{name: flag, node: "nsu={NS};s=Foreign.Boolean"}}
      - {{name: text, node: "nsu={NS};s=Foreign.String"}}
      - {{name: stamp, node: "nsu={NS};s=Foreign.Stamp"}}
      - {{name: by_path, path: Foreign/Double, namespace: "{NS}", scale: 2.0}}
      - {{name: failed, node: "nsu={NS};s=Foreign.Failed"}}
      - {{name: stale, node: "nsu={NS};s=Foreign.Stale"}}
      - {{name: missing, node: "nsu={NS};s=Foreign.Missing"}}
      - {{name: elsewhere, node: "nsu=urn:not-on-this-server;i=1"}}
      - {{name: server_state, node: "i=2259"}}
"""


def good(value: Any, unit: str | None = None, *, stamped: bool = True) -> dict[str, Any]:
    point: dict[str, Any] = {"value": value, "unit": unit, "quality": "good"}
    return point | {"ts_ms": SOURCE_MS} if stamped else point


def bad(reason: str) -> dict[str, Any]:
    return {"value": None, "unit": None, "quality": "bad", "reason": reason}


# What every point carries in the first message that holds its value; the later ones
# repeat it at the read time (no ts_ms), as for any other value that stays the same.
EXPECTED: dict[str, dict[str, Any]] = {
    "double": good(21.5, "degC"),
    "float": good(1.25),
    "int16": good(-1234),
    "uint16": good(65535),
    "int32": good(-2147483648),
    "uint32": good(4294967295),
    "byte": good(255),
    "sbyte": good(-128),
    "int64": good(-9007199254740993),  # one past what a double holds: exact
    "uint64": good(18446744073709551615),
    "flag": good(True),
    "text": good("Grüße aus Node"),
    "stamp": good("2025-12-31T23:59:58.125000+00:00"),
    "by_path": good(43.0),
    "failed": bad("BadSensorFailure"),
    "stale": {
        "value": 7.5,
        "unit": None,
        "quality": "uncertain",
        "reason": "UncertainLastUsableValue",
        "ts_ms": SOURCE_MS,
    },
    "missing": bad("BadNodeIdUnknown"),
    "elsewhere": bad("namespace not on server: urn:not-on-this-server"),
}


def without_ts(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != "ts_ms"}


def device(name: str, url: str, mode: str, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    driver: opcua\n    url: {url}\n    mode: {mode}\n"
        f"    interval_s: 0.2\n    publishing_interval_s: 0.1\n    backoff_max_s: 0.5\n"
        f"{extra}    points:\n{POINTS}"
    )


def site(
    tmp_path: Path,
    broker: Mosquitto,
    prefix: str,
    devices: str,
    environ: dict[str, str] | None = None,
) -> LoadedConfig:
    text = (
        "site: plant-a\ngateway: gw-01\n"
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}\n'
        f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
        "devices:\n" + devices
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path, environ=environ or {})


def data(sub: Subscriber, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(f"/{name}/data")]


def status(sub: Subscriber, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith(f"/{name}/status")]


def first_values(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each point as it was in the first message where it was no longer waiting for data."""
    first: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for name, point in doc["points"].items():
            if point.get("reason") != "BadWaitingForInitialData":
                first.setdefault(name, point)
    return first


@pytest_asyncio.fixture
async def foreign(tmp_path: Path) -> AsyncIterator[NodeOpcUaServer]:
    server = NodeOpcUaServer(node_or_skip(), tmp_path / "node-opcua", user=USER, password=PASSWORD)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settled(docs: list[dict[str, Any]]) -> bool:
    return bool(docs) and all(
        p.get("reason") != "BadWaitingForInitialData" for p in docs[-1]["points"].values()
    )


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_every_type_quality_and_source_time_arrive_exactly(
    foreign: NodeOpcUaServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    mode: str,
) -> None:
    assert foreign.namespace_index == 3  # our simulator has its PLC at 2: nsu= must resolve
    loaded = site(tmp_path, mosquitto, unique_prefix, device("nplc", foreign.url, mode))
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    async with running(Agent(loaded)):
        await until(
            lambda: len(data(sub, "nplc")) >= 3 and settled(data(sub, "nplc")),
            what="3 messages, the last one with every value",
        )
        for doc in data(sub, "nplc"):
            VALIDATOR.validate(doc)
        first = first_values(data(sub, "nplc"))
        server_state = first.pop("server_state")
        assert first == EXPECTED
        assert server_state == {"value": 0, "unit": None, "quality": "good"} | (
            {"ts_ms": server_state["ts_ms"]} if "ts_ms" in server_state else {}
        )  # ServerState Running (an enumeration: its Int32)
        last = data(sub, "nplc")[-1]["points"]
        last.pop("server_state")
        assert last == {name: without_ts(p) for name, p in EXPECTED.items()}
        assert [d["state"] for d in status(sub, "nplc")] == ["up"]

        # A new value with a new source time, and a status going bad and good again.
        mark = len(data(sub, "nplc"))
        await foreign.set("s=Foreign.Double", 22.75, source="2026-03-04T05:06:09.000Z")
        await foreign.set("i=2001", 0, status="BadDeviceFailure")
        await until(
            lambda: any(
                d["points"]["double"]["value"] == 22.75 and d["points"]["int32"]["quality"] == "bad"
                for d in data(sub, "nplc")[mark:]
            ),
            what="the new value and the bad status",
        )
        changed = first_values(data(sub, "nplc")[mark:])
        new_ms = SOURCE_MS + 1110
        # One poll may hold the old value still: the first message with the new one has
        # the new source time.
        firsts = [d["points"] for d in data(sub, "nplc")[mark:]]
        double = next(p["double"] for p in firsts if p["double"]["value"] == 22.75)
        assert double == {"value": 22.75, "unit": "degC", "quality": "good", "ts_ms": new_ms}
        by_path = next(p["by_path"] for p in firsts if p["by_path"]["value"] == 45.5)
        assert by_path == {"value": 45.5, "unit": None, "quality": "good", "ts_ms": new_ms}
        int32 = next(p["int32"] for p in firsts if p["int32"]["quality"] == "bad")
        assert int32 == bad("BadDeviceFailure")
        assert changed["flag"]["value"] is True

        mark = len(data(sub, "nplc"))
        await foreign.set("i=2001", 17, source="2026-03-04T05:06:10.000Z")
        await until(
            lambda: any(d["points"]["int32"]["value"] == 17 for d in data(sub, "nplc")[mark:]),
            what="int32 good again",
        )
        int32 = next(
            d["points"]["int32"]
            for d in data(sub, "nplc")[mark:]
            if d["points"]["int32"]["value"] == 17
        )
        assert int32 == {"value": 17, "unit": None, "quality": "good", "ts_ms": SOURCE_MS + 2110}
    seqs = [d["seq"] for d in data(sub, "nplc")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


FEW_POINTS = f"""\
      - {{name: double, node: "nsu={NS};s=Foreign.Double"}}
      - {{name: int32, node: "nsu={NS};i=2001"}}
"""


def small_device(name: str, url: str, mode: str, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    driver: opcua\n    url: {url}\n    mode: {mode}\n"
        f"    interval_s: 0.2\n    publishing_interval_s: 0.1\n    backoff_max_s: 0.5\n"
        f"{extra}    points:\n{FEW_POINTS}"
    )


async def test_server_stopping_and_coming_back(
    foreign: NodeOpcUaServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    names = ("by-read", "by-subscription")
    loaded = site(
        tmp_path,
        mosquitto,
        unique_prefix,
        small_device("by-read", foreign.url, "poll")
        + small_device("by-subscription", foreign.url, "subscribe"),
    )
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")

    def states(name: str) -> list[str]:
        return [d["state"] for d in status(sub, name)]

    def went_down_for(name: str, mark: int) -> object:
        # The first down after `mark`: a retry may already say why it still is (refused).
        return next(d for d in status(sub, name)[mark:] if d["state"] == "down").get("reason")

    async def flowing(value: float) -> None:
        marks = {name: len(data(sub, name)) for name in names}
        await foreign.set("s=Foreign.Double", value)
        for name in names:
            await until(
                lambda name=name: any(
                    d["points"]["double"]
                    == {"value": value, "unit": None, "quality": "good"}
                    | (
                        {"ts_ms": d["points"]["double"]["ts_ms"]}
                        if "ts_ms" in d["points"]["double"]
                        else {}
                    )
                    for d in data(sub, name)[marks[name] :]
                ),
                what=f"{value} from {name}",
            )

    async with running(Agent(loaded)):
        await until(lambda: all(states(n) == ["up"] for n in names), what="both up")
        await flowing(30.5)

        # A graceful shutdown: node-opcua closes the sessions and the listener.
        marks = {n: len(status(sub, n)) for n in names}
        await foreign.stop()
        await until(lambda: all(states(n)[-1:] == ["down"] for n in names), what="both down")
        reasons = {n: went_down_for(n, marks[n]) for n in names}
        await until(
            lambda: all(
                any(d["points"]["double"]["quality"] == "bad" for d in data(sub, n)) for n in names
            ),
            what="the bad polls",
        )
        down_points = {
            n: next(d["points"] for d in data(sub, n) if d["points"]["double"]["quality"] == "bad")
            for n in names
        }
        await foreign.start()
        await until(lambda: all(states(n)[-2:] == ["down", "up"] for n in names), what="up again")
        await flowing(31.5)

        # A power cut: the process dies without a word to any client.
        marks = {n: len(status(sub, n)) for n in names}
        await foreign.kill()
        await until(lambda: all(states(n)[-1:] == ["down"] for n in names), what="down on kill")
        killed = {n: went_down_for(n, marks[n]) for n in names}
        await foreign.start()
        await until(lambda: all(states(n)[-1:] == ["up"] for n in names), what="up after kill")
        await flowing(32.5)
    lost = bad("connection lost")
    assert reasons == killed == {n: "connection lost" for n in names}
    assert down_points == {n: {"double": lost, "int32": lost} for n in names}
    for name in names:
        # A down whose cause changes (lost, then refused) says so again: one state per run.
        assert [k for k, _ in itertools.groupby(states(name))] == ["up", "down", "up", "down", "up"]
        seqs = [d["seq"] for d in data(sub, name)]
        assert seqs == sorted(seqs)


REFUSED = "secure channel refused by the server (is this gateway's certificate trusted there?)"
SECURE = "    security: {mode: SignAndEncrypt, policy: Basic256Sha256}\n"
USER_LINES = f"    username: {USER}\n    password: ${{FOREIGN_PASSWORD}}\n"


def trusting(tmp_path: Path, foreign: NodeOpcUaServer) -> None:
    """Trust node-opcua's certificate (PEM, as it keeps it) as an engineer would."""
    assert foreign.certificate is not None
    trusted = tmp_path / "pki" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "node-opcua.pem").write_bytes(foreign.certificate.read_bytes())


async def test_sign_and_encrypt_with_user_once_node_opcua_trusts_us(
    foreign: NodeOpcUaServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Basic256Sha256 SignAndEncrypt with a user: our certificate handling on one side,
    node-opcua's on the other, each trusting the other only once told to. Two devices share
    the site's pki/own/ and connect at once: one certificate is made, not two."""
    trusting(tmp_path, foreign)
    names = ("secure-read", "secure-sub")
    loaded = site(
        tmp_path,
        mosquitto,
        unique_prefix,
        small_device("secure-read", foreign.url, "poll", SECURE + USER_LINES)
        + small_device("secure-sub", foreign.url, "subscribe", SECURE + USER_LINES),
        environ={"FOREIGN_PASSWORD": PASSWORD},
    )
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")

    def last_status(name: str) -> dict[str, Any]:
        docs = status(sub, name)
        return docs[-1] if docs else {}

    async with running(Agent(loaded)):
        # node-opcua does not know our certificate yet: it refuses the secure channel with
        # a ServiceFault (BadSecurityChecksFailed).
        await until(
            lambda: all(last_status(n).get("state") == "down" for n in names), what="refused"
        )
        assert {n: last_status(n)["reason"] for n in names} == {n: REFUSED for n in names}
        await until(lambda: all(data(sub, n) for n in names), what="the bad polls")
        assert {n: data(sub, n)[-1]["points"] for n in names} == {
            n: {"double": bad(REFUSED), "int32": bad(REFUSED)} for n in names
        }
        own = tmp_path / "pki" / "own" / "cert.der"
        await foreign.trust(own)
        await until(
            lambda: all(last_status(n).get("state") == "up" for n in names), what="up once trusted"
        )
        for name in names:
            await until(
                lambda name=name: data(sub, name)[-1]["points"]["double"]["quality"] == "good",
                what=f"{name} values",
            )
            assert without_ts(data(sub, name)[-1]["points"]["double"]) == good(21.5, stamped=False)
            assert without_ts(data(sub, name)[-1]["points"]["int32"]) == good(
                -2147483648, stamped=False
            )
    made = [r for r in caplog.records if "made a client certificate" in r.getMessage()]
    assert len(made) == 1, [r.getMessage() for r in made]


async def test_wrong_password_and_an_untrusted_node_opcua_certificate(
    foreign: NodeOpcUaServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    trusting(tmp_path, foreign)
    own = tmp_path / "pki" / "own"
    # The gateway's certificate, made as its first connection would, and trusted there.
    pair = CertificatePair(own / "cert.der", own / "key.pem")
    ensure_certificate(pair, "urn:edge-agent:client", common_name="gw-01")
    await foreign.trust(pair.cert_file)
    loaded = site(
        tmp_path,
        mosquitto,
        unique_prefix,
        small_device("wrong-password", foreign.url, "poll", SECURE + USER_LINES)
        + small_device(
            "untrusting",
            foreign.url,
            "poll",
            "    security: {mode: SignAndEncrypt, trust_dir: other-trust}\n",
        ),
        environ={"FOREIGN_PASSWORD": "not-" + PASSWORD},
    )
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
    names = ("wrong-password", "untrusting")
    async with running(Agent(loaded)):
        await until(lambda: all(status(sub, n) for n in names), what="both statuses")
    assert [(d["state"], d["reason"]) for d in status(sub, "wrong-password")] == [
        ("down", "BadUserAccessDenied")
    ]
    (untrusting,) = status(sub, "untrusting")
    seen = fingerprint(der_of(foreign.certificate.read_bytes()))  # type: ignore[union-attr]
    kept = tmp_path / "pki" / "rejected" / f"{seen.replace(':', '')[:16]}.der"
    assert untrusting["state"] == "down"
    assert untrusting["reason"] == (
        f"server certificate not trusted (sha256 {seen[:23]}...); saved as {kept}, "
        f"move it to {tmp_path / 'other-trust'}/ to trust it"
    )
    assert der_of(kept.read_bytes()) == der_of(foreign.certificate.read_bytes())  # type: ignore[union-attr]


async def test_deadbands_as_node_opcua_applies_them(
    foreign: NodeOpcUaServer,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    """Our DataChangeFilters as another server reads them: an absolute deadband against the
    last reported value, a percent one of the EURange, and one it cannot apply (no EURange)."""
    points = f"""\
      - {{name: abs_db, node: "nsu={NS};s=Foreign.Double", deadband: {{abs: 0.5}}}}
      - {{name: pct_db, node: "nsu={NS};s=Foreign.Level", deadband: {{percent: 5}}}}
      - {{name: no_range, node: "nsu={NS};s=Foreign.Float", deadband: {{percent: 5}}}}
      - {{name: barrier, node: "nsu={NS};s=Foreign.Int16"}}
"""
    text = (
        f"  - name: dband\n    driver: opcua\n    url: {foreign.url}\n    mode: subscribe\n"
        "    interval_s: 0.2\n    publishing_interval_s: 0.1\n    points:\n" + points
    )
    loaded = site(tmp_path, mosquitto, unique_prefix, text)
    sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")

    def last() -> dict[str, Any]:
        docs = data(sub, "dband")
        return docs[-1]["points"] if docs else {}

    async def barrier(value: int) -> None:
        await foreign.set("s=Foreign.Int16", value)
        await until(lambda: last().get("barrier", {}).get("value") == value, what=f"{value}")

    async with running(Agent(loaded)):
        await until(lambda: settled(data(sub, "dband")), what="first values")
        assert without_ts(last()["abs_db"]) == good(21.5, stamped=False)
        assert without_ts(last()["pct_db"]) == good(100.0, stamped=False)
        # No EURange to take a percent of: node-opcua refuses the item, the point says so.
        assert last()["no_range"] == bad("BadMonitoredItemFilterUnsupported")

        # Inside the deadbands: nothing reported. Two barriers: a sampling interval passed.
        await foreign.set("s=Foreign.Double", 21.8)
        await foreign.set("s=Foreign.Level", 109.0)
        await barrier(1)
        await barrier(2)
        assert (last()["abs_db"]["value"], last()["pct_db"]["value"]) == (21.5, 100.0)
        # 22.1 is 0.6 from the last reported 21.5 (0.3 from the last sample); 111 is 5.5 %
        # of the range from the last reported 100.
        await foreign.set("s=Foreign.Double", 22.1)
        await foreign.set("s=Foreign.Level", 111.0)
        await until(
            lambda: (last()["abs_db"]["value"], last()["pct_db"]["value"]) == (22.1, 111.0),
            what="the changes past the deadbands",
        )


async def test_browse_lists_node_opcua_nodes_in_the_form_points_take(
    foreign: NodeOpcUaServer,
) -> None:
    """`edge-agent browse` on a foreign server: each variable listed with its type, and the
    node text it prints, put in a point as is, reads that variable."""
    entries = await browse(foreign.url, path=[f"nsu={NS};Foreign"], depth=1)
    listed = {e.browse_name: (e.node, e.node_class, e.data_type) for e in entries}
    assert listed == {
        "Double": (f"nsu={NS};s=Foreign.Double", "Variable", "Double"),
        "Float": (f"nsu={NS};s=Foreign.Float", "Variable", "Float"),
        "Int16": (f"nsu={NS};s=Foreign.Int16", "Variable", "Int16"),
        "UInt16": (f"nsu={NS};s=Foreign.UInt16", "Variable", "UInt16"),
        "Int32": (f"nsu={NS};i=2001", "Variable", "Int32"),
        "UInt32": (f"nsu={NS};i=2002", "Variable", "UInt32"),
        "Byte": (f"nsu={NS};s=Foreign.Byte", "Variable", "Byte"),
        "SByte": (f"nsu={NS};s=Foreign.SByte", "Variable", "SByte"),
        "Int64": (f"nsu={NS};s=Foreign.Int64", "Variable", "Int64"),
        "UInt64": (f"nsu={NS};s=Foreign.UInt64", "Variable", "UInt64"),
        "Boolean": (f"nsu={NS};s=Foreign.Boolean", "Variable", "Boolean"),
        "String": (f"nsu={NS};s=Foreign.String", "Variable", "String"),
        "Stamp": (f"nsu={NS};s=Foreign.Stamp", "Variable", "DateTime"),
        "Failed": (f"nsu={NS};s=Foreign.Failed", "Variable", "Double"),
        "Stale": (f"nsu={NS};s=Foreign.Stale", "Variable", "Double"),
        "Level": (f"nsu={NS};s=Foreign.Level", "Variable", "Double"),
    }
    device = OpcUaDevice.model_validate(
        {
            "name": "browsed",
            "driver": "opcua",
            "url": foreign.url,
            "points": [{"name": e.browse_name.lower(), "node": e.node} for e in entries],
        }
    )
    driver = OpcUaDriver(device)
    try:
        poll = await driver.read()
    finally:
        await driver.close()
    values = dict(zip((p.name for p in poll.points), poll.values, strict=True))
    assert values == {
        "double": 21.5,
        "float": 1.25,
        "int16": -1234,
        "uint16": 65535,
        "int32": -2147483648,
        "uint32": 4294967295,
        "byte": 255,
        "sbyte": -128,
        "int64": -9007199254740993,
        "uint64": 18446744073709551615,
        "boolean": True,
        "string": "Grüße aus Node",
        "stamp": "2025-12-31T23:59:58.125000+00:00",
        "failed": None,
        "stale": 7.5,
        "level": 100.0,
    }
    names = [p.name for p in poll.points]
    assert {names[i]: issue for i, issue in poll.issues.items()} == {
        "failed": (Quality.BAD, "BadSensorFailure"),
        "stale": (Quality.UNCERTAIN, "UncertainLastUsableValue"),
    }

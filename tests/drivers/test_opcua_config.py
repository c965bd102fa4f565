"""OPC UA config, node references, quality mapping and certificates: pure logic, plus the CLI.

The golden folders (tests/configs/valid/opcua-plc, invalid/opcua-errors) hold the whole
site-file cases; these tests pin the rules one at a time.
"""

from __future__ import annotations

import datetime
import math
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.opcua.certificates import (
    CertificatePair,
    ensure_certificate,
    fingerprint,
    keep_rejected,
    normalise_fingerprint,
    trusted_fingerprints,
)
from drivers.opcua.config import AcquisitionMode, OpcUaDevice, SecurityPolicy
from drivers.opcua.nodeid import BrowsePath, NodeRef, parse_node, parse_path
from drivers.opcua.plan import build_points, read_requests
from drivers.opcua.quality import plain_value, quality_of, scaled
from drivers.reading import Quality
from edge_agent.cli.main import main
from tests.fixtures.opcua import PlcThread

NS = "urn:plant:plc"

ISSUE_SITE = """\
site: plant-a
gateway: gw-01
devices:
  - name: plc-1
    driver: opcua
    url: opc.tcp://127.0.0.1:4840
    security: {mode: SignAndEncrypt, policy: Basic256Sha256}   # or {mode: None}
    interval_s: 1.0
    points:
      - {name: tank_temp, node: "nsu=urn:plant:plc;s=Tank1.Temperature", mode: subscribe,
         deadband: {abs: 0.5}, unit: degC}
      - {name: pump_run, node: "nsu=urn:plant:plc;i=1002", mode: poll}
"""


def names(code: int) -> str:
    return {0x40920000: "UncertainLastUsableValue", 0x80340000: "BadNodeIdUnknown"}.get(
        code, f"0x{code:08X}"
    )


# --- node references ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        (f"nsu={NS};s=Tank1.Temperature", NodeRef(NS, "s", "Tank1.Temperature")),
        (f"nsu={NS};i=1002", NodeRef(NS, "i", 1002)),
        (f"nsu={NS};s=a;b=c", NodeRef(NS, "s", "a;b=c")),  # the id keeps everything after s=
        ("i=2258", NodeRef(None, "i", 2258)),
        ("ns=0;i=2258", NodeRef(None, "i", 2258)),
        ("nsu=http://opcfoundation.org/UA/;i=85", NodeRef(None, "i", 85)),
        (
            "nsu=http://x.org/UA/DI/;g=09087E75-8E5E-499B-954F-F2A9603DB28A",
            NodeRef("http://x.org/UA/DI/", "g", "09087e75-8e5e-499b-954f-f2a9603db28a"),
        ),
        (f"nsu={NS};b=M/RbKBsRVkePCePcx24oRA==", NodeRef(NS, "b", "M/RbKBsRVkePCePcx24oRA==")),
    ],
)
def test_node_ids_parse(text: str, ref: NodeRef) -> None:
    assert parse_node(text) == ref
    assert parse_node(str(ref)) == ref  # the canonical text reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ns=2;s=Tank1.Temperature", "names its namespace by index ns=2"),
        ("Tank1.Temperature", "is not a node id"),
        (f"nsu={NS};i=-1", "i= takes a whole number"),
        (f"nsu={NS};i=4294967296", "i= takes a whole number"),
        (f"nsu={NS};g=not-a-guid", "g= takes a GUID"),
        (f"nsu={NS};b=!!", "b= takes base64"),
        (f"nsu={NS};s=", "empty identifier"),
    ],
)
def test_bad_node_ids_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_node(text)


@given(st.text(min_size=1).filter(lambda s: s.strip() == s), st.integers(0, 2**32 - 1))
def test_node_text_round_trips(identifier: str, number: int) -> None:
    for ref in (NodeRef(NS, "s", identifier), NodeRef(NS, "i", number)):
        assert parse_node(str(ref)) == ref


def test_browse_paths_take_a_namespace() -> None:
    assert parse_path("PLC1/Tank1/Temperature", NS) == BrowsePath(
        ((NS, "PLC1"), (NS, "Tank1"), (NS, "Temperature"))
    )
    mixed = parse_path([f"nsu={NS};PLC1", "nsu=http://x.org/UA/DI/;Identification"], None)
    assert mixed.segments == ((NS, "PLC1"), ("http://x.org/UA/DI/", "Identification"))
    with pytest.raises(ValueError, match="needs a namespace"):
        parse_path("PLC1/Tank1", None)
    with pytest.raises(ValueError, match="path is empty"):
        parse_path("/", NS)


# --- the device model ----------------------------------------------------------------


def device(**kw: object) -> OpcUaDevice:
    base: dict[str, object] = {
        "name": "plc-1",
        "driver": "opcua",
        "url": "opc.tcp://127.0.0.1:4840",
        "points": [{"name": "t", "node": f"nsu={NS};s=T"}],
    }
    return OpcUaDevice.model_validate({**base, **kw})


def test_defaults_and_derived_settings() -> None:
    d = device(interval_s=2, keepalive_count=4, points=[
        {"name": "a", "node": f"nsu={NS};s=A", "mode": "subscribe"},
        {"name": "b", "path": "PLC1/B", "namespace": NS, "sampling_interval_s": 0.5},
        {"name": "c", "node": f"nsu={NS};s=C"},
    ], mode="subscribe")  # fmt: skip
    assert d.address == ("127.0.0.1", 4840)
    assert d.publishing_s == 2 and d.watchdog_s == 24  # 3 x keepalive x publishing
    assert d.security.effective_policy is None
    planned = build_points(d)
    assert [p.mode for p in planned] == [AcquisitionMode.SUBSCRIBE] * 3
    assert [p.sampling_ms for p in planned] == [2000, 500, 2000]
    assert read_requests(d) == 0
    secure = device(security={"mode": "Sign"})
    assert secure.security.effective_policy is SecurityPolicy.BASIC256SHA256
    resolved = secure.resolved(Path("/etc/edge"))
    assert resolved.security.key_file == Path("/etc/edge/pki/own/key.pem")
    assert resolved.security.trust_dir == Path("/etc/edge/pki/trusted")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "opc.tcp://:4840"}, "no host"),
        ({"url": "opc.tcp://u:p@h:4840"}, "not the URL"),
        ({"url": "opc.tcp://h:0"}, "port 0"),
        ({"security": {"mode": "None", "server_cert": "x.der"}}, "server_cert applies only"),
        ({"security": {"mode": "Sign", "policy": "Basic256"}}, "Aes256Sha256RsaPss"),
        ({"username": "edge"}, "give username and password together"),
        ({"username": "edge", "password": "x"}, "would cross the network readable"),
        ({"points": [{"name": "t", "node": "i=1", "deadband": {"abs": 1}}]}, "only to mode"),
        ({"points": [{"name": "t", "node": "i=1", "deadband": {}}]}, "exactly one"),
        ({"points": [{"name": "t", "node": "i=1", "deadband": {"percent": 101}}]}, "100"),
        ({"points": [{"name": "t", "node": "i=1", "scale": 0}]}, "scale 0"),
        ({"points": [{"name": "t", "node": "i=1", "namespace": NS}]}, "applies to path"),
    ],
)
def test_bad_devices_say_why(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        device(**changes)


def test_password_stays_secret() -> None:
    d = device(security={"mode": "SignAndEncrypt"}, username="edge", password="hunter2")
    assert "hunter2" not in repr(d) and "hunter2" not in str(d.model_dump())
    assert d.password is not None and d.password.get_secret_value() == "hunter2"


# --- quality and values --------------------------------------------------------------


def test_status_codes_map_to_quality() -> None:
    assert quality_of(0, names) is None
    assert quality_of(0x000000FF, names) is None  # info bits only: still Good
    assert quality_of(0x40920000, names) == (Quality.UNCERTAIN, "UncertainLastUsableValue")
    assert quality_of(0x80340000, names) == (Quality.BAD, "BadNodeIdUnknown")
    assert quality_of(0x80340400, names) == (Quality.BAD, "BadNodeIdUnknown")  # limit bits
    assert quality_of(0xC0000000, names) == (Quality.BAD, "0xC0000000")  # reserved: bad


def test_values_are_carried_as_the_reading_model_allows() -> None:
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert plain_value(True) == (True, None)
    assert plain_value(7) == (7, None)
    assert plain_value(1.5) == (1.5, None)
    assert plain_value("RUN") == ("RUN", None)
    assert plain_value(stamp) == ("2026-01-02T03:04:05+00:00", None)
    assert plain_value(b"\x01\xff") == ("01ff", None)
    assert plain_value(math.nan) == (None, "not finite: nan")
    assert plain_value(None) == (None, "no value")
    assert plain_value([1, 2]) == (None, "unsupported value type list")
    assert scaled(10, 0.5, 1.0, None) == 6.0
    assert scaled(1.23456, 1.0, 0.0, 2) == 1.23
    assert scaled(True, 2.0, 1.0, 1) is True and scaled("x", 2.0, 0.0, None) == "x"


# --- certificates --------------------------------------------------------------------


def test_certificate_made_once_with_a_private_key(tmp_path: Path) -> None:
    pair = CertificatePair(tmp_path / "own" / "cert.der", tmp_path / "own" / "key.pem")
    assert ensure_certificate(pair, "urn:edge-agent:client", common_name="edge") is True
    assert stat.S_IMODE(pair.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.key_file.parent.stat().st_mode) == 0o700
    der = pair.cert_file.read_bytes()
    assert ensure_certificate(pair, "urn:edge-agent:client", common_name="edge") is False
    assert pair.cert_file.read_bytes() == der
    pair.key_file.chmod(0o644)  # someone widened it: narrowed again, not replaced
    assert ensure_certificate(pair, "urn:edge-agent:client", common_name="edge") is False
    assert stat.S_IMODE(pair.key_file.stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:edge-agent:client" in san.get_values_for_type(x509.UniformResourceIdentifier)


def test_trust_directory_and_rejected_store(tmp_path: Path) -> None:
    pair = CertificatePair(tmp_path / "c.der", tmp_path / "k.pem")
    ensure_certificate(pair, "urn:x", common_name="x")
    der = pair.cert_file.read_bytes()
    trusted = tmp_path / "trusted"
    assert trusted_fingerprints(trusted) == set()
    kept = keep_rejected(tmp_path / "rejected", der)
    assert kept.read_bytes() == der
    trusted.mkdir()
    kept.rename(trusted / kept.name)
    (trusted / "notes.txt").write_text("not a certificate")
    (trusted / "broken.der").write_bytes(b"garbage")
    assert trusted_fingerprints(trusted) == {fingerprint(der)}
    assert normalise_fingerprint(fingerprint(der).replace(":", "").upper()) == fingerprint(der)
    with pytest.raises(ValueError, match="64 hex digits"):
        normalise_fingerprint("ab:cd")


# --- the CLI -------------------------------------------------------------------------


def test_check_and_plan_the_issue_yaml_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(ISSUE_SITE)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok, 1 devices, 2 points\n"
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "plc-1: opc.tcp://127.0.0.1:4840, security SignAndEncrypt/Basic256Sha256" in out
    assert "deadband abs 0.5" in out
    assert not (tmp_path / "pki").exists()  # offline: no certificate made, no socket opened
    path.write_text(ISSUE_SITE.replace("nsu=urn:plant:plc;i=1002", "ns=3;i=1002"))
    assert main(["check", str(path)]) == 2
    assert "names its namespace by index ns=3" in capsys.readouterr().err


def test_browse_command_lists_points(
    opcua_plc: PlcThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["browse", opcua_plc.url, "--path", "PLC1/Pump1", "--depth", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["browse", "name", "class/type", "acc", "node"]
    run = next(line for line in lines if line.startswith("Run "))
    assert run.split() == ["Run", "Boolean", "r", f"nsu={NS};i=1002"]
    assert main(["browse", "opc.tcp://127.0.0.1:1"]) == 1
    assert "connection refused" in capsys.readouterr().err


def test_simulate_serves_what_the_config_reads(tmp_path: Path) -> None:
    from edge_agent.cli.simulation import specs
    from edge_agent.config.site import load_config

    path = tmp_path / "site.yaml"
    path.write_text(
        ISSUE_SITE.replace(
            "mode: poll}", 'mode: poll}\n      - {name: x, node: "nsu=urn:other;s=X"}'
        )
        + "    username: edge\n    password: ${OPCUA_PASSWORD}\n"
    )
    loaded = load_config(path, environ={"OPCUA_PASSWORD": "pw"})
    assert specs(loaded, "modbus") == []
    (spec,) = specs(loaded, "opcua")
    assert spec.url == "opc.tcp://127.0.0.1:4840" and spec.namespace == NS
    assert spec.endpoints == (("None", None), ("SignAndEncrypt", "Basic256Sha256"))
    assert spec.users == {"edge": "pw"} and spec.allow_anonymous is False
    assert spec.pki_dir == tmp_path / "pki" / "simulator" / "plc-1"
    assert NodeRef("urn:other", "s", "X") in spec.extra_nodes

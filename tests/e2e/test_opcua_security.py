"""OPC UA security against the simulated PLC: certificates both ways, policies, users.

The simulated PLC trusts exactly the client certificates in its trust directory, and the
driver trusts exactly the server certificates in its own (or a pin). A first connection
of a new gateway is therefore refused twice, each refusal telling the engineer what to
trust, and works once both sides trust each other.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from drivers.opcua.certificates import fingerprint
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver
from drivers.reading import DeviceUnreachable
from edge_agent.config.site import load_config
from tests.fixtures.opcua import OPCUA_PASSWORD, OPCUA_USER, PlcThread

pytestmark = pytest.mark.timeout(30)

TEMP = "nsu=urn:plant:plc;s=Tank1.Temperature"


def secure_device(url: str, pki: Path, security: dict[str, Any], **kw: Any) -> OpcUaDevice:
    paths = {
        "cert_file": str(pki / "own" / "cert.der"),
        "key_file": str(pki / "own" / "key.pem"),
        "trust_dir": str(pki / "trusted"),
        "rejected_dir": str(pki / "rejected"),
    }
    return OpcUaDevice.model_validate(
        {
            "name": "plc-1",
            "driver": "opcua",
            "url": url,
            "security": {**paths, **security},
            "points": [{"name": "temp", "node": TEMP, "unit": "degC"}],
            **kw,
        }
    )


async def read_once(device: OpcUaDevice) -> Any:
    driver = OpcUaDriver(device)
    try:
        return await driver.read()
    finally:
        await driver.close()


async def test_sign_and_encrypt_with_certificates_made_on_first_use(
    opcua_plc: PlcThread, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    device = secure_device(
        opcua_plc.url, pki, {"mode": "SignAndEncrypt", "policy": "Basic256Sha256"}
    )
    # 1. The gateway does not know the server yet: refused, its certificate kept aside.
    with pytest.raises(DeviceUnreachable) as info:
        await read_once(device)
    assert info.value.reason.startswith("server certificate not trusted")
    rejected = list((pki / "rejected").iterdir())
    assert len(rejected) == 1
    server_der = opcua_plc.plc.server_certificate
    assert server_der is not None and rejected[0].read_bytes() == server_der
    # The client certificate and key were made on that first use, the key owner-only.
    key = pki / "own" / "key.pem"
    assert (pki / "own" / "cert.der").is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in key.read_bytes()
    made = key.read_bytes()

    # 2. The engineer trusts the server; now the server refuses the unknown client.
    (pki / "trusted").mkdir()
    rejected[0].rename(pki / "trusted" / rejected[0].name)
    with pytest.raises(DeviceUnreachable) as info:
        await read_once(device)
    assert info.value.reason == "BadCertificateUntrusted"

    # 3. The PLC's engineer trusts the gateway: values flow, encrypted.
    opcua_plc.trust(pki / "own" / "cert.der")
    poll = await read_once(device)
    assert poll.issues == {} and isinstance(poll.values[0], float)
    assert key.read_bytes() == made  # the key is made once, then reused


async def test_pinned_fingerprint_and_aes_policies(opcua_plc: PlcThread, tmp_path: Path) -> None:
    server_der = opcua_plc.plc.server_certificate
    assert server_der is not None
    pin = fingerprint(server_der).replace(":", "").upper()  # any case, colons optional
    aes128 = secure_device(
        opcua_plc.url,
        tmp_path / "pki",
        {"mode": "SignAndEncrypt", "policy": "Aes128Sha256RsaOaep", "server_fingerprint": pin},
    )
    with pytest.raises(DeviceUnreachable, match="BadCertificateUntrusted"):
        await read_once(aes128)  # pinned server, but the client is not trusted yet
    opcua_plc.trust(tmp_path / "pki" / "own" / "cert.der")
    assert (await read_once(aes128)).issues == {}

    pinned_file = tmp_path / "server.der"
    pinned_file.write_bytes(server_der)
    aes256_sign = secure_device(
        opcua_plc.url,
        tmp_path / "pki",
        {"mode": "Sign", "policy": "Aes256Sha256RsaPss", "server_cert": str(pinned_file)},
    )
    assert (await read_once(aes256_sign)).issues == {}

    wrong = secure_device(
        opcua_plc.url, tmp_path / "pki", {"mode": "Sign", "server_fingerprint": "ab" * 32}
    )
    with pytest.raises(DeviceUnreachable, match="is not the pinned fingerprint"):
        await read_once(wrong)


async def test_endpoint_the_server_does_not_offer(opcua_plc: PlcThread, tmp_path: Path) -> None:
    device = secure_device(
        opcua_plc.url, tmp_path / "pki", {"mode": "Sign", "policy": "Aes128Sha256RsaOaep"}
    )
    with pytest.raises(DeviceUnreachable) as info:
        await read_once(device)
    assert info.value.reason.startswith("server has no endpoint Aes128Sha256RsaOaep/Sign")
    assert "Basic256Sha256/SignAndEncrypt" in info.value.reason


async def test_username_from_env_works_and_a_wrong_password_is_refused(
    opcua_plc: PlcThread, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    server_der = opcua_plc.plc.server_certificate
    assert server_der is not None
    site = tmp_path / "site.yaml"
    site.write_text(
        f"""site: plant-a
gateway: gw-01
devices:
  - name: plc-1
    driver: opcua
    url: {opcua_plc.url}
    security: {{mode: SignAndEncrypt, server_fingerprint: "{fingerprint(server_der)}"}}
    username: {OPCUA_USER}
    password: ${{OPCUA_PASSWORD}}
    points:
      - {{name: temp, node: "{TEMP}"}}
"""
    )
    good = load_config(site, environ={"OPCUA_PASSWORD": OPCUA_PASSWORD}).devices[0].device
    assert isinstance(good, OpcUaDevice)
    assert OPCUA_PASSWORD not in repr(good) and OPCUA_PASSWORD not in str(good)
    # Relative certificate paths were made absolute against the site file's folder.
    assert good.security.cert_file == pki / "own" / "cert.der"
    opcua_plc.trust(_client_cert(good))
    assert (await read_once(good)).issues == {}

    bad = load_config(site, environ={"OPCUA_PASSWORD": "not-the-password"}).devices[0].device
    assert isinstance(bad, OpcUaDevice)
    with pytest.raises(DeviceUnreachable) as info:
        await read_once(bad)
    assert info.value.reason == "BadUserAccessDenied"
    assert "not-the-password" not in str(info.value)


def _client_cert(device: OpcUaDevice) -> Path:
    """Make the device's client certificate now (as its first connection would)."""
    from drivers.opcua.certificates import CertificatePair, ensure_certificate

    sec = device.security
    ensure_certificate(
        CertificatePair(sec.cert_file, sec.key_file), device.application_uri, common_name="t"
    )
    return sec.cert_file

"""Application instance certificates for OPC UA: make them, store them safely, trust peers.

OPC UA authenticates the two applications of a secure channel by X.509 certificates. The
agent makes its own self-signed certificate on first use (RSA 2048, SHA-256, the
application URI in subjectAltName as Part 6 requires) and keeps it beside the site file:

    pki/own/cert.der     the client certificate, DER (readable)
    pki/own/key.pem      its private key, PKCS#8 PEM, mode 0600 in a 0700 directory
    pki/trusted/         server certificates the engineer trusts (DER or PEM)
    pki/rejected/        server certificates seen but not trusted (move one to trusted/)

A server is trusted when its certificate is pinned (a file or a SHA-256 fingerprint) or
lies in the trust directory; nothing else is. The simulator uses the same code for its
server certificate. Only `cryptography` is used here, never asyncua.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Where they were: the driver, the simulator and tests import them from here.
from drivers.opcua.fingerprint import fingerprint as fingerprint
from drivers.opcua.fingerprint import normalise_fingerprint as normalise_fingerprint

KEY_BITS = 2048
VALID_DAYS = 3650
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# The devices of a site share pki/own/ by default and open their sessions at once, each
# making the pair from a worker thread: without this, each made its own and the last
# key written could pair with another's certificate.
_MAKING = threading.Lock()


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """Where a certificate and its private key are stored."""

    cert_file: Path
    key_file: Path


def der_of(data: bytes) -> bytes:
    """DER bytes of a certificate given as DER or PEM; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(data)
    else:
        cert = x509.load_der_x509_certificate(data)
    return cert.public_bytes(serialization.Encoding.DER)


def make_certificate(
    application_uri: str,
    *,
    common_name: str,
    server: bool = False,
    hostnames: tuple[str, ...] = ("localhost",),
    days: int = VALID_DAYS,
) -> tuple[bytes, bytes]:
    """A new self-signed application certificate: (DER certificate, PEM PKCS#8 key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in dict.fromkeys((*hostnames, socket.gethostname())):
        alt.append(x509.DNSName(host))
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem


def write_private(path: Path, data: bytes) -> None:
    """Write a secret so that only the owner can ever read it (no window with wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        os.write(fd, data)
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have narrowed it; never widened
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_certificate(
    pair: CertificatePair, application_uri: str, *, common_name: str, server: bool = False
) -> bool:
    """Make the certificate and key when either is missing; True when they were made now.

    An existing pair is left alone (an engineer may have installed a CA-signed one); a key
    file readable by others is narrowed to 0600, as SSH does for its keys.
    """
    with _MAKING:
        if pair.cert_file.is_file() and pair.key_file.is_file():
            if pair.key_file.stat().st_mode & 0o077:
                pair.key_file.chmod(PRIVATE_FILE_MODE)
            return False
        der, key_pem = make_certificate(application_uri, common_name=common_name, server=server)
        write_private(pair.key_file, key_pem)
        pair.cert_file.parent.mkdir(parents=True, exist_ok=True)
        pair.cert_file.write_bytes(der)
        return True


def trusted_fingerprints(trust_dir: Path) -> set[str]:
    """Fingerprints of every certificate (DER or PEM) in a trust directory."""
    found: set[str] = set()
    if not trust_dir.is_dir():
        return found
    for path in sorted(trust_dir.iterdir()):
        if path.suffix.lower() not in (".der", ".pem", ".crt", ".cer") or not path.is_file():
            continue
        try:
            found.add(fingerprint(der_of(path.read_bytes())))
        except ValueError:
            continue  # not a certificate: an engineer's note, a half-copied file
    return found


def keep_rejected(rejected_dir: Path, der: bytes) -> Path:
    """Store an untrusted peer certificate for the engineer to inspect and trust."""
    rejected_dir.mkdir(parents=True, exist_ok=True)
    path = rejected_dir / f"{fingerprint(der).replace(':', '')[:16]}.der"
    if not path.exists():
        path.write_bytes(der)
    return path

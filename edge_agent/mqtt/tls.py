"""The TLS context the MQTT sink connects with, built from the config's `tls:` block."""

from __future__ import annotations

import ssl
from pathlib import Path

from edge_agent.config.document import Document
from edge_agent.config.errors import ConfigIssue
from edge_agent.mqtt.config import TlsConfig


def tls_context(config: TlsConfig) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (else the system CAs); offer a client cert if set.

    `insecure` only drops the hostname check: the chain is still verified, so a broker
    commissioned by IP address with a certificate for its DNS name can be reached.
    ValueError names the file that cannot be used.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=_path(config.ca_file, "ca_file")
        )
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"mqtt.tls.ca_file {config.ca_file}: {_why(exc)}") from exc
    if config.cert_file is not None:
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = f"{config.cert_file}" + (f", {config.key_file}" if config.key_file else "")
            raise ValueError(f"mqtt.tls.cert_file/key_file {files}: {_why(exc)}") from exc
    elif config.key_file is not None:
        raise ValueError("mqtt.tls.key_file is set but cert_file is not")
    if config.insecure:
        context.check_hostname = False
    # paho leaves the socket of a failed handshake to the garbage collector; with a broker
    # that keeps refusing our certificate checks that is one file descriptor per retry.
    context.sslsocket_class = ClosingSSLSocket
    return context


MISSING = "no such file"


def tls_issues(doc: Document, config: TlsConfig) -> list[ConfigIssue]:
    """What the sink would refuse at start, found by `check`: files missing or not usable."""
    try:
        tls_context(config)
    except ValueError as exc:
        text = str(exc)
        key = next((k for k in ("ca_file", "cert_file", "key_file") if k in text), None)
        if key is not None and text.startswith("mqtt.tls."):
            text = text.split(" ", 1)[1]  # the path says which key already
        at = ("mqtt", "tls", key) if key else ("mqtt", "tls")
        return [doc.issue(at, text, local=text.endswith(MISSING))]
    return []


class ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails."""

    def do_handshake(self, block: bool = False) -> None:
        """Handshake; close the socket before raising anything."""
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _path(path: Path | None, field: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"mqtt.tls.{field} {path}: {MISSING}")
    return str(path)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)

"""TLS towards the `influx:` server: which CAs to trust, what `check` reports, the warning.

`ca_file_problem` also serves the platform uplink's endpoints (a CA file is a CA file).

The ingest (influxdb-client's async client, on aiohttp) and `edge-agent report`
(VictoriaSource, on urllib) trust the same certificates: the system's CAs, or the PEM
bundle `influx.ca_file` alone; `influx.verify_tls: false` checks nothing and is warned
about once when either starts.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from edge_agent.config.document import Document
from edge_agent.config.errors import ConfigIssue
from edge_agent.ingest.config import InfluxConfig


def influx_issues(doc: Document, config: InfluxConfig, *, base: Path) -> list[ConfigIssue]:
    """What `edge-agent check` finds in an `influx:` block beyond its model: a `ca_file`
    that is missing or holds no PEM certificate, or one given for an http:// URL."""
    if config.ca_file is None:
        return []
    at = ("influx", "ca_file")
    if not config.url.lower().startswith("https://"):
        return [doc.issue(at, f"is only used over https, and influx.url is {config.url!r}")]
    problem = ca_file_problem(base / config.ca_file)
    if problem is None:
        return []
    return [doc.issue(at, problem, local=not (base / config.ca_file).exists())]


def ca_file_problem(path: Path) -> str | None:
    """`{path}: why` when a PEM CA bundle cannot be loaded, else None (for `check`; the
    uplink's endpoints use it too)."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        return f"{path}: {_unusable(exc)}"
    return None


def ssl_context(ca_file: Path | None, *, verify: bool = True) -> ssl.SSLContext:
    """The context urllib connects with: what influxdb-client's async client builds from
    the same `ssl_ca_cert` and `verify_ssl`. `ca_file` is used as given (see
    InfluxConfig.resolved); ValueError names it when it cannot be used."""
    try:
        context = ssl.create_default_context(cafile=ca_cert(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(ca_file_error(ca_file, exc)) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def ca_cert(ca_file: Path | None) -> str | None:
    """`ca_file` as influxdb-client's `ssl_ca_cert` takes it (None: the system's CAs)."""
    return str(ca_file) if ca_file is not None else None


def ca_file_error(ca_file: Path | None, exc: BaseException) -> str:
    """Why `influx.ca_file` cannot be loaded, for an error at start."""
    return f"influx.ca_file {ca_file}: {_unusable(exc)}"


def _unusable(exc: BaseException) -> str:
    # SSLError is an OSError: asked first, it says what is wrong with the file's content.
    if isinstance(exc, ssl.SSLError):
        return f"not a PEM CA bundle ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def certificate_problem(exc: object, ca_file: Path | None) -> str | None:
    """What a refused server certificate was refused for, and against which CAs; None
    when `exc` is no certificate error."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return None
    why = exc.verify_message or exc.reason or str(exc)
    if ca_file is not None:
        return f"not accepted ({why}) checked against influx.ca_file {ca_file}"
    return (
        f"not accepted ({why}) checked against the system's CAs; "
        "set influx.ca_file to the server's CA (or its self-signed certificate)"
    )


def warn_unverified(url: str, *, verify: bool, logger: logging.Logger, user: str) -> None:
    """The loud warning for `verify_tls: false` over https (call once, at start)."""
    if verify or not url.lower().startswith("https://"):
        return
    logger.warning(
        "INSECURE: influx.verify_tls is false: %s does not check the certificate of %s; "
        "anyone on the network path can read the token and change or drop the data. "
        "Set influx.ca_file to the CA (or the self-signed certificate) of the server "
        "and remove verify_tls: false.",
        user,
        url,
    )

"""A stand-in for a provincial 能耗在线监测 platform: an HTTPS receiver with a self-signed cert.

    python -m simulators.platform.receiver --port 8443 --cert-dir /tmp/recv

It accepts JSON POSTs on any path, keeps every body it received in arrival order and
answers `{"code": 0, "message": "ok"}`. It can be told to misbehave (`mode`):
`ok`, `fail` (HTTP 503), `reject` (HTTP 200 with `{"code": 1, ...}`: a negative
acknowledgement), `timeout` (holds the request `hold_s` before answering, so the client
times out first). The certificate (CN and SAN 127.0.0.1 / localhost) is made with
`cryptography` and written to `cert.pem`; clients use it as their CA file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Mode = Literal["ok", "fail", "reject", "timeout"]


def self_signed(cert_dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (EC P-256, 1 day) for `host`; their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = cert_dir / "cert.pem", cert_dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    """One request as it arrived."""

    path: str
    body: Any
    authorization: str
    answered: str  # the mode it was answered in


@dataclass
class ReceiverState:
    """What the receiver got and how it answers; change `mode` at any time."""

    mode: Mode = "ok"
    hold_s: float = 5.0
    received: list[Received] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)  # predicates re-enter
    changed: threading.Condition = field(init=False)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def set_mode(self, mode: Mode) -> None:
        with self.lock:
            self.mode = mode

    def accepted(self) -> list[Any]:
        """Bodies answered with a positive acknowledgement, in order."""
        with self.lock:
            return [r.body for r in self.received if r.answered == "ok"]

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        """Wait until `predicate(state)` holds after some request; False on timeout."""
        with self.changed:
            return bool(self.changed.wait_for(lambda: predicate(self), timeout_s))


class PlatformReceiver:
    """The HTTPS server on a thread; `start()`/`stop()`, or use as a context manager."""

    def __init__(
        self,
        cert_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        report: Callable[[Received, float], None] | None = None,
    ) -> None:
        self.host = host
        self.cert, self.key = self_signed(cert_dir, host)
        self.state = ReceiverState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with state.changed:
                    mode = state.mode
                    auth = self.headers.get("Authorization", "")
                    got = Received(self.path, body, auth, mode)
                    state.received.append(got)
                    state.changed.notify_all()
                if report is not None:
                    report(got, time.time())
                if mode == "timeout":
                    state.release.wait(state.hold_s)  # the client gives up first
                if mode == "fail":
                    self._answer(503, {"code": 503, "message": "unavailable"})
                elif mode == "reject":
                    self._answer(200, {"code": 1, "message": "rejected"})
                else:
                    self._answer(200, {"code": 0, "message": "ok"})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and went away

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.server.server_address[1]}/upload"

    def start(self) -> PlatformReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()  # held requests answer now
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> PlatformReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _print(got: Received, at: float) -> None:
    """One line per request, so a person running the receiver sees the uplink arrive."""
    records = got.body.get("data") if isinstance(got.body, dict) else None
    what = f"{len(records)} records" if isinstance(records, list) else f"{len(str(got.body))} B"
    first = records[0] if isinstance(records, list) and records else {}
    key = first.get("dataKey", "") if isinstance(first, dict) else ""
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    print(f"{stamp} POST {got.path}: {what}, answered {got.answered}  {key}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert-dir", type=Path, default=Path("var/platform-receiver"))
    p.add_argument("--mode", default="ok", choices=["ok", "fail", "reject", "timeout"])
    args = p.parse_args()
    receiver = PlatformReceiver(args.cert_dir, args.host, args.port, report=_print)
    receiver.state.mode = args.mode
    print(f"{receiver.url}  (CA file {receiver.cert})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.server.serve_forever()


if __name__ == "__main__":
    main()

"""node-opcua (another vendor's OPC UA stack, npm) run as child processes for interop tests.

`NodeOpcUaServer` runs server.js beside this file on a loopback port: `start()` returns when
the server printed its "listening" line (or fails with its stderr), `set()`/`trust()` send
it commands on stdin and wait for the answer, `stop()` shuts it down gracefully, `kill()`
abruptly; `start()` again serves on the same port with the same certificate.
`run_client(request)` runs client.js once and returns what it printed (JSON).

node comes from PATH, node-opcua from .venv/node (scripts/test installs it); without node
the tests skip, without node-opcua they fail saying how to install it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server_process import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 60.0
PLC_NAMESPACE = "urn:foreign:plc"


def node_or_skip() -> str:
    """The node executable; skips the test without Node.js, fails without node-opcua."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the interop tests against node-opcua need Node.js")
    if not (NODE_MODULES / "node-opcua" / "package.json").is_file():
        pytest.fail(
            f"{NODE_MODULES.relative_to(ROOT)}/node-opcua is missing: run scripts/test (its "
            "scripts/bootstrap line installs node-opcua from npm)"
        )
    return node


def _env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(NODE_MODULES), "NODE_NO_WARNINGS": "1"}


class NodeOpcUaServer:
    """server.js as a child process on a fixed loopback port (kept across restarts)."""

    def __init__(self, node: str, workdir: Path, *, user: str = "", password: str = "") -> None:
        self.node = node
        self.workdir = workdir
        self.port = free_port()
        self.options = {"port": self.port, "pki": str(workdir / "pki")}
        if user:
            self.options |= {"user": user, "password": password}
        self.process: asyncio.subprocess.Process | None = None
        self.namespace_index = 0
        self.certificate: Path | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> None:
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                self.node,
                str(HERE / "server.js"),
                json.dumps(self.options),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_env(),
            )
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                hello = await self._line()
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"node-opcua server did not listen within {START_TIMEOUT_S} s:\n{self.log_text()}"
            ) from None
        assert hello.get("listening") == self.port, hello
        self.namespace_index = hello["namespace"]
        self.certificate = Path(hello["certificate"])

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                code = await self.process.wait()
                raise AssertionError(f"node-opcua server exited ({code}):\n{self.log_text()}")
            if raw.startswith(b"{"):
                doc: dict[str, Any] = json.loads(raw)
                return doc

    async def command(self, **command: Any) -> None:
        """Send one command and wait for the server's {"ok": cmd}."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            answer = await self._line()
        assert answer == {"ok": command["cmd"]}, answer

    async def set(
        self, node: str, value: Any, *, source: str | None = None, status: str = "Good"
    ) -> None:
        """Serve `value` on `node` (s=... / i=... in urn:foreign:plc) with that source time."""
        await self.command(cmd="set", node=node, value=value, source=source, status=status)

    async def trust(self, certificate: Path) -> None:
        """Make the server trust a client certificate (DER or PEM)."""
        await self.command(cmd="trust", file=str(certificate))

    async def stop(self) -> None:
        """Graceful shutdown (sessions closed, listener gone), then the process exits."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def kill(self) -> None:
        """As a power cut: SIGKILL, no goodbye to any client."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        await process.wait()


async def run_client(node: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run client.js with `request` (JSON on stdin) and return its JSON answer."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "client.js"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            out, err = await process.communicate(json.dumps(request).encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"node-opcua client took over {CLIENT_TIMEOUT_S} s") from None
    lines = [line for line in out.splitlines() if line.startswith(b"{")]
    assert process.returncode == 0 and lines, (process.returncode, out, err.decode())
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer

"""The `edge-agent` command: run, check, plan, simulate, demo, browse, ingest, report.

Exit codes: 0 success, 2 bad config (every issue listed with file:line path), 1 other
failures, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.reading import DeviceUnreachable
from edge_agent import __version__
from edge_agent.cli.plan_listing import render_issues, render_plan
from edge_agent.config.site import ConfigError, LoadedConfig, load_config
from edge_agent.delivery.database_check import database_issues
from edge_agent.delivery.sqlite_file import DatabaseFileError
from edge_agent.diagnose.commands import DIAGNOSE_COMMANDS, add_diagnose_parsers, run_diagnose
from edge_agent.grafana import push as grafana_push
from edge_agent.ops.log_format import configure_logging
from edge_agent.uplink import commands as platform_uplink_cli

if TYPE_CHECKING:
    from edge_agent.runtime.agent import Agent

log = logging.getLogger("edge_agent")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _http_address(text: str) -> tuple[str, int] | None:
    return None if text.lower() in ("off", "none") else _host_port(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="poll the devices of a site config and publish over MQTT")
    run.add_argument("config", type=Path)
    run.add_argument("--view", action="store_true", help="show the live device table")
    run.add_argument(
        "--http",
        type=_http_address,
        default=("127.0.0.1", 9108),
        metavar="HOST:PORT",
        help="status page, /metrics and /healthz (default 127.0.0.1:9108; 'off' for none)",
    )

    reload = sub.add_parser(
        "reload", help="check a changed config, then make the running agent apply it"
    )
    reload.add_argument("config", type=Path)

    check = sub.add_parser("check", help="validate a site config offline")
    check.add_argument("config", type=Path)
    check.add_argument(
        "--portable",
        action="store_true",
        help="for CI without the gateway's secrets and files: unset ${VAR}s and missing "
        "certificate files are listed as notes, not errors",
    )

    plan = sub.add_parser("plan", help="print the requests the agent will send, offline")
    plan.add_argument("config", type=Path)

    sim = sub.add_parser("simulate", help="serve every device of a site config from its profile")
    sim.add_argument("config", type=Path)
    sim.add_argument(
        "--control",
        type=_host_port,
        default=("127.0.0.1", 8502),
        metavar="HOST:PORT",
        help="HTTP fault-switch API (default 127.0.0.1:8502)",
    )

    demo = sub.add_parser(
        "demo", help="simulators + agent + embedded MQTT broker on loopback, with a live table"
    )
    demo.add_argument(
        "config", type=Path, nargs="?", default=None, help="default: the shipped demo site"
    )
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    demo.add_argument(
        "--store", type=Path, default=None, help="SQLite file of the ingest (default: a temp file)"
    )

    ingest = sub.add_parser(
        "ingest", help="write the gateways' data messages into the time-series or embedded store"
    )
    ingest.add_argument("config", type=Path)
    ingest.add_argument(
        "--worker", default=None, help="name of this worker when several run on one host"
    )
    ingest.add_argument(
        "--http",
        type=_http_address,
        default=None,
        metavar="HOST:PORT",
        help="serve the worker's /metrics (default: none)",
    )

    report = sub.add_parser(
        "report", help="energy report of a period (HTML with plots, plus CSV) from the store"
    )
    report.add_argument("config", type=Path)
    report.add_argument(
        "--from", dest="start", required=True, help="first day YYYY-MM-DD or YYYY-MM-DDTHH:MM"
    )
    report.add_argument(
        "--to", dest="end", required=True, help="day after the last, or time; local time"
    )
    report.add_argument("--out", type=Path, required=True, help="directory for the files")
    report.add_argument(
        "--store", type=Path, default=None, help="embedded store (default: ingest.store)"
    )

    catalog = sub.add_parser(
        "catalog", help="list the profiles, tariffs, coefficient tables and templates in reach"
    )
    catalog.add_argument(
        "config", type=Path, nargs="?", default=None, help="as this site file sees them"
    )

    browse = sub.add_parser(
        "browse", help="list an OPC UA server's address space: node ids for points"
    )
    browse.add_argument("endpoint", help="opc.tcp://host:port (security None)")
    browse.add_argument(
        "--path", default="", help="start below Objects at this browse path, e.g. PLC1/Tank1"
    )
    browse.add_argument("--depth", type=int, default=4, help="levels to walk (default 4)")
    browse.add_argument("--all", action="store_true", help="include the standard Server object")
    add_diagnose_parsers(sub)
    grafana_push.add_parser(sub)
    platform_uplink_cli.add_parser(sub)
    return p


def _load(path: Path, *, portable: bool = False) -> LoadedConfig | None:
    try:
        return load_config(path, portable=portable)
    except ConfigError as exc:
        print(render_issues(exc), file=sys.stderr)
        return None


def _refuse_files(loaded: LoadedConfig) -> bool:
    """Databases of the site that are not the agent's, or cannot be written: listed."""
    issues = database_issues(loaded)
    if issues:
        print(render_issues(ConfigError(issues, file=issues[0].file)), end="", file=sys.stderr)
    return bool(issues)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        return _main(argv)
    except ConfigError as exc:  # found only at start: a gap in `check`, still no traceback
        print(render_issues(exc), file=sys.stderr)
        return 2
    except DatabaseFileError as exc:  # a store found not ours only when a command opened it
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `edge-agent plan site.yaml | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more to write
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Lines as they happen under systemd, a pipe or `tee`, not 8 KiB later.
        sys.stdout.reconfigure(line_buffering=True)
    configure_logging(args.log_level, json_lines=args.log_json)
    if args.command in DIAGNOSE_COMMANDS:
        return run_diagnose(args)
    if args.command == "browse":
        return asyncio.run(_browse(args.endpoint, args.path, args.depth, args.all))
    if args.command == "catalog":
        from edge_agent.catalog.listing import print_catalog

        return print_catalog(args.config)
    if args.command == "demo" and args.config is None:
        from edge_agent.catalog import shipped_demo

        args.config = shipped_demo()
    loaded = _load(args.config, portable=args.command == "check" and args.portable)
    if loaded is None:
        return 2
    if args.command in ("check", "run", "uplink") and _refuse_files(loaded):
        return 2
    if args.command == "check":
        n_points = sum(
            len(d.profile.points) if d.profile is not None else len(d.device.points or ())
            for d in loaded.devices
        )
        for note in loaded.notes:
            print(f"note: {note} (not an error with --portable)", file=sys.stderr)
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{args.config}: ok, {len(loaded.devices)} devices, {n_points} points")
        return 0
    if args.command == "reload":
        return _reload(loaded)
    if args.command == "plan":
        print(render_plan(loaded), end="")
        return 0
    if args.command == "run":
        for warning in loaded.warnings:
            log.warning("config: %s", warning)
        try:
            return _run_until_signal(_run_agent(loaded, view=args.view, http=args.http))
        except DatabaseFileError as exc:  # what _refuse_files could not see offline
            print(f"edge-agent: {exc}", file=sys.stderr)
            return 2
    if args.command == "simulate":
        try:
            return _run_until_signal(_simulate(loaded, control=args.control))
        except OSError as exc:  # a port in use, a serial path that cannot be opened
            print(f"simulate: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if args.command == "demo":
        return _run_until_signal(_demo(loaded, store=args.store, seconds=args.seconds))
    if args.command == "ingest":
        return _run_until_signal(_ingest(loaded, worker=args.worker, http=args.http))
    if args.command == "grafana":
        return grafana_push.run(loaded, args)
    if args.command == "uplink":
        return platform_uplink_cli.run(loaded, args)
    if args.command == "report":
        from edge_agent.energy.report.build import run_report

        return run_report(loaded, args.start, args.end, out=args.out, store=args.store)
    return 1


def _run_until_signal(main_coro: Coroutine[Any, Any, None], *, seconds: float | None = None) -> int:
    async def runner() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stopped: list[int] = []

        def stop(signum: int) -> None:
            stopped.append(signum)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        try:
            if seconds is None:
                await main_coro
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(main_coro, seconds)
        except asyncio.CancelledError:
            if not stopped:
                raise
        return 130 if signal.SIGINT in stopped else 0

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:
        return 130


def start_agent(loaded: LoadedConfig) -> Agent:
    """The agent `run` starts: everything built from the config before the first poll.

    Whatever could refuse a config here is checked by `load_config` first (`check` = `run`);
    tests/e2e/test_check_is_run.py holds the two to that on a thousand mutated configs.
    """
    from edge_agent.runtime.agent import Agent

    return Agent(loaded, settle_heap=True)


async def _run_agent(
    loaded: LoadedConfig, *, view: bool, http: tuple[str, int] | None = None
) -> None:
    from edge_agent.cli.live_view import run_live_view

    agent = start_agent(loaded)
    pid_file = pid_path(loaded)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        async with _http_port(agent, http), asyncio.TaskGroup() as tg:
            # SIGHUP (or `edge-agent reload`) re-reads the file and applies device changes.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: tg.create_task(agent.reload_file(), name="reload")
            )
            tg.create_task(agent.run(), name="agent")
            if view:
                tg.create_task(run_live_view(agent), name="live-view")
    except* DatabaseFileError as group:  # a store refused at open: one clear line, exit 2
        raise _first(group) from None
    finally:
        pid_file.unlink(missing_ok=True)


def _first(group: BaseExceptionGroup[DatabaseFileError]) -> BaseException:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


@contextlib.asynccontextmanager
async def _http_port(agent: Agent, address: tuple[str, int] | None) -> AsyncIterator[None]:
    """The status page, /metrics and /healthz of `run`, bound before the agent starts."""
    if address is None:
        yield
        return
    from edge_agent.ops.http_server import AgentHttp

    http = AgentHttp(agent)
    try:
        await http.start(*address)
    except OSError as exc:
        raise SystemExit(
            f"edge-agent: cannot listen on {address[0]}:{address[1]} (--http): "
            f"{os.strerror(exc.errno).lower() if exc.errno else exc}; "
            "choose another port or --http off"
        ) from exc
    try:
        yield
    finally:
        await http.close()


def pid_path(loaded: LoadedConfig) -> Path:
    """Where `run` records its process id: next to the outbox, as the config says."""
    outbox = loaded.path.parent / loaded.site.outbox.path
    return outbox.parent / "edge-agent.pid"


def _reload(loaded: LoadedConfig) -> int:
    """Ask the running agent of this config to re-read it (the config is valid: checked)."""
    pid_file = pid_path(loaded)
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        print(f"no running agent for {loaded.path} ({pid_file}: {exc})", file=sys.stderr)
        return 1
    print(f"asked agent {pid} to reload {loaded.path}")
    return 0


async def _simulate(loaded: LoadedConfig, *, control: tuple[str, int]) -> None:
    from edge_agent.cli.simulation import simulated, simulator, specs
    from simulators.common.control import Control, ControlServer, merged

    async with contextlib.AsyncExitStack() as stack:
        controls: dict[str, Control] = {}
        lines: dict[str, list[str]] = {}
        for protocol in simulated(loaded):
            served = await stack.enter_async_context(
                simulator(protocol).serve(specs(loaded, protocol))
            )
            controls = merged(controls, served.controls)
            lines.update(served.lines)
        # The control API switches the faults of every device, whatever its protocol.
        server = ControlServer(controls, host=control[0], port=control[1])
        await server.start()
        stack.push_async_callback(server.close)
        for d in loaded.devices:
            for line in lines.get(d.device.name, []):
                print(line)
        print(f"fault switches: {server.url}/devices")
        await asyncio.Event().wait()


class _DemoOver(Exception):
    """`demo --seconds` ran out: leave the task group so everything stops in order."""


async def _demo(
    loaded: LoadedConfig, *, store: Path | None = None, seconds: float | None = None
) -> None:
    from edge_agent.mqtt.embedded_broker import embedded_broker

    # The table is the demo's output; routine log lines would scroll it away.
    logging.getLogger().setLevel(logging.WARNING)
    async with (
        embedded_broker("127.0.0.1", 0) as url,
        _simulator_process(loaded.path),
    ):
        # A demo leaves nothing behind, and the shipped demo's folder is not writable.
        with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
            outbox = loaded.site.outbox.model_copy(
                update={"path": Path(state) / loaded.site.outbox.path.name}
            )
            mqtt = loaded.site.mqtt.model_copy(update={"url": url})
            site = loaded.site.model_copy(update={"mqtt": mqtt, "outbox": outbox})
            demo = dataclasses.replace(loaded, site=site)
            with contextlib.suppress(_DemoOver):
                await _run_demo(demo, url=url, store=store, seconds=seconds)


async def _run_demo(
    demo: LoadedConfig, *, url: str, store: Path | None, seconds: float | None
) -> None:
    from edge_agent.cli.live_view import run_live_view
    from edge_agent.ingest.demo import run_demo_ingest
    from edge_agent.runtime.agent import Agent

    try:
        async with asyncio.TaskGroup() as tg:
            agent = Agent(demo)
            tg.create_task(agent.run(), name="agent")
            footer = [
                f"embedded MQTT broker at {url}; topics {agent.topics.base}/#",
                "Ctrl-C to stop.",
            ]
            tg.create_task(run_demo_ingest(demo, store=store, footer=footer), name="ingest")
            tg.create_task(run_live_view(agent, footer=footer), name="live-view")
            if seconds is not None:
                # Counted from here: the simulators' start-up is not part of the run.
                await asyncio.sleep(seconds)
                raise _DemoOver
    except* _DemoOver:
        raise _DemoOver from None


@contextlib.asynccontextmanager
async def _simulator_process(config: Path) -> AsyncIterator[None]:
    """`edge-agent simulate CONFIG` as a child process, ready when this yields.

    In a process of their own the simulators (an OPC UA server costs a second or two of
    CPU to start) run on the other core instead of stalling the agent's polls.
    """
    with socket.socket() as probe:  # a free loopback port for the fault-switch API
        probe.bind(("127.0.0.1", 0))
        control = f"127.0.0.1:{probe.getsockname()[1]}"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "edge_agent", "--log-level", "ERROR"),
        *("simulate", str(config), "--control", control),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while not (line := await proc.stdout.readline()).startswith(b"fault switches"):
                if not line:
                    raise RuntimeError(f"the simulators exited with {await proc.wait()}")
        drain = asyncio.create_task(proc.stdout.read(), name="simulator-output")
        yield
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _ingest(
    loaded: LoadedConfig, *, worker: str | None, http: tuple[str, int] | None = None
) -> None:
    from edge_agent.ingest.http import serving_ingest_metrics
    from edge_agent.ingest.service import Ingest, IngestStopped

    ingest = Ingest(loaded, worker=worker)
    async with contextlib.AsyncExitStack() as stack:
        if http is not None:
            try:
                await stack.enter_async_context(serving_ingest_metrics(ingest, *http))
            except OSError as exc:
                raise SystemExit(
                    f"edge-agent: cannot listen on {http[0]}:{http[1]} (--http): "
                    f"{os.strerror(exc.errno).lower() if exc.errno else exc}"
                ) from exc
        try:
            await ingest.run()
        except IngestStopped as exc:
            print(f"ingest stopped: {exc}", file=sys.stderr)
            raise SystemExit(1) from exc


async def _browse(endpoint: str, path: str, depth: int, standard: bool) -> int:
    from drivers.opcua.driver import browse

    try:
        entries = await browse(
            endpoint, path=[p for p in path.split("/") if p], depth=depth, standard=standard
        )
    except DeviceUnreachable as exc:
        print(f"{endpoint}: {exc.reason}", file=sys.stderr)
        return 1
    print(f"{'browse name':<40} {'class/type':<18} {'acc':<4} node")
    for e in entries:
        kind = e.data_type or e.node_class
        name = "  " * e.depth + e.browse_name
        print(f"{name:<40} {kind:<18} {e.access or '':<4} {e.node}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `edge-agent` command: run, check, plan, simulate, demo.

Exit codes: 0 success, 2 bad config (every issue listed with file:line path), 1 other
failures, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.config import ConfigError, LoadedConfig, load_config
from edge_agent.plan_listing import render_issues, render_plan

log = logging.getLogger("edge_agent")

DEFAULT_DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="poll the devices of a site config and publish over MQTT")
    run.add_argument("config", type=Path)
    run.add_argument("--view", action="store_true", help="show the live device table")

    check = sub.add_parser("check", help="validate a site config offline")
    check.add_argument("config", type=Path)

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
    demo.add_argument("config", type=Path, nargs="?", default=DEFAULT_DEMO)
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    return p


def _load(path: Path) -> LoadedConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(render_issues(exc), file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loaded = _load(args.config)
    if loaded is None:
        return 2
    if args.command == "check":
        n_points = sum(len(d.profile.points) for d in loaded.devices)
        print(f"{args.config}: ok, {len(loaded.devices)} devices, {n_points} points")
        return 0
    if args.command == "plan":
        print(render_plan(loaded), end="")
        return 0
    if args.command == "run":
        return _run_until_signal(_run_agent(loaded, view=args.view))
    if args.command == "simulate":
        return _run_until_signal(_simulate(loaded, control=args.control))
    if args.command == "demo":
        return _run_until_signal(_demo(loaded), seconds=args.seconds)
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


async def _run_agent(loaded: LoadedConfig, *, view: bool) -> None:
    from edge_agent.agent import Agent
    from edge_agent.live_view import run_live_view

    agent = Agent(loaded)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(agent.run(), name="agent")
        if view:
            tg.create_task(run_live_view(agent), name="live-view")


async def _simulate(loaded: LoadedConfig, *, control: tuple[str, int]) -> None:
    from edge_agent.simulation import sim_specs
    from simulators.site import run_simulators

    ready = asyncio.Event()
    task = asyncio.create_task(
        run_simulators(sim_specs(loaded), control=control, ready=ready), name="simulators"
    )
    await ready.wait()
    for d in loaded.devices:
        print(
            f"serving {d.device.name} ({d.profile_name}) at {d.device.url} id {d.device.device_id}"
        )
    print(f"fault switches: http://{control[0]}:{control[1]}/devices")
    await task


async def _demo(loaded: LoadedConfig) -> None:
    from edge_agent.agent import Agent
    from edge_agent.embedded_broker import embedded_broker
    from edge_agent.live_view import run_live_view
    from edge_agent.simulation import sim_specs
    from simulators.site import run_simulators

    # The table is the demo's output; routine log lines would scroll it away.
    logging.getLogger().setLevel(logging.WARNING)
    async with embedded_broker("127.0.0.1", 0) as url:
        site = loaded.site.model_copy(
            update={"mqtt": loaded.site.mqtt.model_copy(update={"url": url})}
        )
        demo = dataclasses.replace(loaded, site=site)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_simulators(sim_specs(demo), ready=ready), name="simulators")
            await ready.wait()
            agent = Agent(demo)
            tg.create_task(agent.run(), name="agent")
            footer = [
                f"embedded MQTT broker at {url}; topics {agent.topics.base}/#",
                "Ctrl-C to stop.",
            ]
            tg.create_task(run_live_view(agent, footer=footer), name="live-view")


if __name__ == "__main__":
    sys.exit(main())

"""Hot reload: a changed config's devices apply without losing a reading.

The in-process test calls Agent.reload_file(); the subprocess test goes through the real
signal path (`edge-agent reload` sends SIGHUP to the pid the running agent recorded).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
PROFILE = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))

pytestmark = pytest.mark.timeout(90)


def _site(path: Path, *, broker: Mosquitto, prefix: str, devices: list[dict[str, Any]]) -> Path:
    lines = [
        "site: plant-a",
        "gateway: gw-01",
        f'mqtt: {{url: "{broker.url}", prefix: "{prefix}"}}',
        "outbox: {path: outbox.sqlite}",
        "devices:",
        *(f"  - {orjson.dumps(d).decode()}" for d in devices),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _line(url: str, device_id: int) -> str:
    """The line key of a Modbus TCP unit: its entries share one connection."""
    return f"tcp:{url.removeprefix('tcp://')}#{device_id}"


def _device(name: str, url: str, device_id: int, interval_s: float = 0.05) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "modbus",
        "url": url,
        "device_id": device_id,
        "profile": "chint-dtsu666",
        "interval_s": interval_s,
    }


def _data(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.messages if m.topic.endswith("/data")]


def _specs() -> list[SimDeviceSpec]:
    return [
        SimDeviceSpec(name=n, url="tcp://127.0.0.1:0", profile=PROFILE, device_id=i + 1)
        for i, n in enumerate(["a", "b", "c"])
    ]


def _count(sub: Subscriber, device: str) -> int:
    return sum(1 for d in _data(sub) if d["device"] == device)


async def test_reload_adds_removes_and_restarts_only_what_changed(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(_specs()) as sim:
        url = {n: sim.device(n).url for n in "abc"}
        site = _site(
            tmp_path / "site.yaml",
            broker=mosquitto,
            prefix=unique_prefix,
            devices=[_device("a", url["a"], 1), _device("b", url["b"], 2)],
        )
        agent = Agent(load_config(site))
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: _count(sub, "a") >= 5 and _count(sub, "b") >= 5, what="a, b")
            unit_a = agent.units[0]
            assert unit_a.driver.name == "a"

            # 1. An invalid edit is refused and changes nothing.
            site.write_text(site.read_text().replace("interval_s", "intervall_s", 1))
            assert await agent.reload_file() is None
            assert "unknown key 'intervall_s'" in caplog.text
            assert agent.units[0] is unit_a

            # 2. Remove b, add c, leave a alone.
            _site(
                site,
                broker=mosquitto,
                prefix=unique_prefix,
                devices=[_device("a", url["a"], 1), _device("c", url["c"], 3)],
            )
            plan = await agent.reload_file()
            assert plan is not None
            assert (plan.added, plan.removed, plan.changed) == (("c",), ("b",), ())
            assert plan.keep == (_line(url["a"], 1),) and plan.stop == (_line(url["b"], 2),)
            assert agent.units[0] is unit_a  # untouched: same unit, same schedule
            b_seen = _count(sub, "b")
            await until(lambda: _count(sub, "c") >= 5, what="c after the reload")
            polls_a = unit_a.stats.polls
            await until(lambda: unit_a.stats.polls >= polls_a + 5, what="a to keep polling")
            assert _count(sub, "b") <= b_seen + 1  # at most a poll that was already emitted

            # 3. Change a's interval: only a's line restarts.
            _site(
                site,
                broker=mosquitto,
                prefix=unique_prefix,
                devices=[_device("a", url["a"], 1, 0.02), _device("c", url["c"], 3)],
            )
            plan = await agent.reload_file()
            assert plan is not None and plan.changed == ("a",)
            assert plan.keep == (_line(url["c"], 3),)
            assert next(u for u in agent.units if u.driver.name == "a").interval_s == 0.02
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=20)
        last = agent.seq
        await until(
            lambda: {d["seq"] for d in _data(sub)} >= set(range(1, last + 1)),
            what="every sequence number",
        )
        statuses = [m for m in sub.messages if m.topic.endswith("/b/status")]
        assert statuses[-1].payload == b""  # the removed device's retained status is cleared


async def test_sighup_under_load_loses_no_reading(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    async with serve(_specs()) as sim:
        url = {n: sim.device(n).url for n in "abc"}
        site = _site(
            tmp_path / "site.yaml",
            broker=mosquitto,
            prefix=unique_prefix,
            devices=[_device("a", url["a"], 1, 0.01), _device("b", url["b"], 2, 0.01)],
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        log = (tmp_path / "agent.log").open("wb")
        agent = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "edge_agent", "run", str(site), "--http", "off"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await until(lambda: len(_data(sub)) >= 100, what="load", timeout_s=40)
            _site(
                site,
                broker=mosquitto,
                prefix=unique_prefix,
                devices=[_device("a", url["a"], 1, 0.01), _device("c", url["c"], 3, 0.01)],
            )
            reload = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "edge_agent", "reload", str(site)),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(reload.communicate(), 30)
            assert reload.returncode == 0, err
            assert f"asked agent {agent.pid} to reload" in out.decode()
            await until(lambda: _count(sub, "c") >= 50, what="c under load", timeout_s=40)
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 30) == 0
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "config reloaded: 1 devices added, 1 removed, 0 changed" in text
    seqs = {d["seq"] for d in _data(sub)}
    await until(
        lambda: {d["seq"] for d in _data(sub)} >= set(range(1, max(seqs) + 1)), what="no gap in seq"
    )
    assert not (tmp_path / "edge-agent.pid").exists()


async def test_reload_restarting_every_line_keeps_the_agent_running(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    """Issue 18.1: on a one-device site every reload restarts every line, even to none."""
    async with serve(_specs()) as sim:
        url = {n: sim.device(n).url for n in "abc"}
        site = tmp_path / "site.yaml"

        def write(*devices: dict[str, Any]) -> None:
            _site(site, broker=mosquitto, prefix=unique_prefix, devices=list(devices))

        write(_device("a", url["a"], 1))
        agent = Agent(load_config(site))
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        task = asyncio.create_task(agent.run())

        async def reload_and_see(device: str, *, more: int = 3) -> None:
            seen = _count(sub, device)
            plan = await agent.reload_file()
            assert plan is not None
            await until(lambda: _count(sub, device) >= seen + more, what=f"{device} polled")
            assert not task.done()

        try:
            await until(lambda: _count(sub, "a") >= 3, what="a")
            # 1. The only device's interval changes: its line, the only one, restarts.
            write(_device("a", url["a"], 1, 0.03))
            await reload_and_see("a")
            assert [u.interval_s for u in agent.units] == [0.03]
            # 2. The only device goes away (disabled: a site keeps at least one entry).
            write({**_device("a", url["a"], 1), "enabled": False})
            plan = await agent.reload_file()
            assert plan is not None and plan.stop == (_line(url["a"], 1),) and plan.start == ()
            assert agent.units == [] and not task.done()
            await until(
                lambda: sub.payloads(f"{unique_prefix}/plant-a/gw-01/a/status")[-1:] == [b""],
                what="a's retained status cleared",
            )
            # 3. ... and comes back.
            write(_device("a", url["a"], 1))
            await reload_and_see("a")
            # 4. Replaced by another device: every line stops, a new one starts.
            write(_device("b", url["b"], 2))
            await reload_and_see("b")
            # 5. Two devices, then the last one in the list removed and added back.
            write(_device("b", url["b"], 2), _device("c", url["c"], 3))
            await reload_and_see("c")
            write(_device("b", url["b"], 2))
            await reload_and_see("b")
            write(_device("b", url["b"], 2), _device("c", url["c"], 3))
            await reload_and_see("c")
            assert sorted(u.driver.name for u in agent.units) == ["b", "c"]
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=20)
        assert task.cancelled(), task.exception()
        last = agent.seq
        await until(
            lambda: {d["seq"] for d in _data(sub)} >= set(range(1, last + 1)),
            what="every sequence number",
        )
        assert sorted(d["seq"] for d in _data(sub)) == list(range(1, last + 1))


async def test_reload_command_on_a_one_device_site_keeps_the_agent_running(
    mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], unique_prefix: str, tmp_path: Path
) -> None:
    """Issue 18.1 as the user met it: `edge-agent reload` after changing the only interval."""
    async with serve(_specs()) as sim:
        url = sim.device("a").url
        site = _site(
            tmp_path / "site.yaml",
            broker=mosquitto,
            prefix=unique_prefix,
            devices=[_device("a", url, 1, 0.05)],
        )
        sub = subscribe(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        log = (tmp_path / "agent.log").open("wb")
        agent = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "edge_agent", "run", str(site), "--http", "off"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await until(lambda: _count(sub, "a") >= 5, what="a", timeout_s=40)
            _site(
                site,
                broker=mosquitto,
                prefix=unique_prefix,
                devices=[_device("a", url, 1, 0.02)],
            )
            reload = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "edge_agent", "reload", str(site)),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(reload.communicate(), 30)
            assert reload.returncode == 0, err
            await until(
                lambda: "config reloaded" in (tmp_path / "agent.log").read_text(), what="reload"
            )
            seen = _count(sub, "a")
            await until(lambda: _count(sub, "a") >= seen + 20, what="a after the reload")
            assert agent.returncode is None
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 30) == 0
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "config reloaded: 0 devices added, 0 removed, 1 changed; 1 lines restarted" in text
    assert "Traceback" not in text
    seqs = {d["seq"] for d in _data(sub)}
    await until(
        lambda: {d["seq"] for d in _data(sub)} >= set(range(1, max(seqs) + 1)), what="no gap in seq"
    )

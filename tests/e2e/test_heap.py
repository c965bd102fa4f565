"""`edge-agent run` freezes its start-up objects out of the garbage collector's walks, and a
reload still frees what it drops (edge_agent/runtime/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.catalog import Kind, shipped
from edge_agent.cli.main import start_agent
from edge_agent.config.site import load_config
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.heap import YOUNG_THRESHOLD, settle, thaw
from simulators.modbus.site import SimDeviceSpec, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.waiting import until

PROFILE = load_profile(shipped(Kind.PROFILES, "chint-dtsu666"))

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    """The test process's collector as it was: freezing is for a process of its own."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _site(path: Path, broker: Mosquitto, prefix: str, urls: dict[str, str]) -> Path:
    devices = "".join(
        f"  - {{name: {name}, driver: modbus, url: '{url}', device_id: {i + 1}, "
        "profile: chint-dtsu666, interval_s: 0.05}\n"
        for i, (name, url) in enumerate(urls.items())
    )
    path.write_text(
        f"site: plant-a\ngateway: gw-01\nmqtt: {{url: '{broker.url}', prefix: {prefix}}}\n"
        f"outbox: {{path: outbox.sqlite}}\ndevices:\n{devices}"
    )
    return path


def _tracked(obj: object) -> bool:
    """In one of the collector's generations (a frozen object is in none)."""
    return any(o is obj for o in gc.get_objects())


def test_frozen_garbage_in_a_cycle_waits_for_a_thaw() -> None:
    """Why a reload thaws first: a cycle frozen while alive outlives its last reference."""

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    settle()
    assert not _tracked(a)
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: no collection walks it
    thaw()
    gc.collect()
    assert gone() is None


async def test_run_freezes_the_config_and_a_reload_swaps_it_for_the_new_one(
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    specs = [
        SimDeviceSpec(name=n, url="tcp://127.0.0.1:0", profile=PROFILE, device_id=i + 1)
        for i, n in enumerate("ab")
    ]
    async with serve(specs) as sim:
        urls = {n: sim.device(n).url for n in "ab"}
        site = _site(tmp_path / "site.yaml", mosquitto, unique_prefix, urls)
        agent = start_agent(load_config(site))
        assert agent.settle_heap  # what `edge-agent run` starts
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: all(u.stats.good_polls >= 3 for u in agent.units), what="polls")
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            site_config = agent.loaded.site
            assert not _tracked(site_config)  # frozen at start-up
            unit_a = agent.units[0]
            old = weakref.ref(agent.loaded)

            _site(site, mosquitto, unique_prefix, {"a": urls["a"]})
            plan = await agent.reload_file()
            assert plan is not None and plan.removed == ("b",)
            assert old() is None  # frozen at start-up, freed by the reload
            assert agent.units == [unit_a]
            assert not _tracked(agent.loaded.site.devices[0])  # the new config is frozen too
            polls = unit_a.stats.good_polls
            await until(lambda: unit_a.stats.good_polls >= polls + 3, what="a after the reload")
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=20)


async def test_an_agent_in_a_shared_process_freezes_nothing(
    mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    async with serve([SimDeviceSpec(name="a", url="tcp://127.0.0.1:0", profile=PROFILE)]) as sim:
        site = _site(tmp_path / "site.yaml", mosquitto, unique_prefix, {"a": sim.device("a").url})
        agent = Agent(load_config(site))
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.units[0].stats.good_polls >= 2, what="polls")
            assert gc.get_freeze_count() == 0
            assert _tracked(agent.loaded.site)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=20)

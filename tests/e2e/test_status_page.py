"""The status page in a real browser: Debian's headless Chromium driven by ChromeDriver.

Simulators -> agent -> real Mosquitto, with the agent's HTTP port on a free loopback port.
The test opens the page once and then changes the world under it: a meter's values, an
alarm raised by the boiler, a meter that stops answering, the broker going away. Each
change must appear on the page without a reload (a marker set in the page's window
survives), and what it shows must be what the simulators serve. A screenshot of the last
state is kept under the test's tmp dir; its path is printed.

Selenium's calls block, and the agent runs on this test's loop, so every browser call
goes through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile
from edge_agent.catalog import Kind, shipped
from edge_agent.config.site import load_config
from edge_agent.ops.http_server import AgentHttp, serving_http
from edge_agent.runtime.agent import Agent
from simulators.modbus.site import SimDeviceSpec, SimSite, load_profile, serve
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

PROFILES = shipped(Kind.PROFILES)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
BOILER = ModbusProfile(
    name="boiler",
    points=(ModbusPoint(name="pressure", address=0, type=PointType.FLOAT32, unit="bar"),),
)
HIGH = "boiler/pressure/high"
T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium from Debian with a fresh profile, nothing fetched from outside."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "chromium and chromedriver are missing; scripts/test installs them "
            "(apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # An explicit driver path: selenium then never looks for (or downloads) one itself.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def _site(tmp_path: Path, broker: Mosquitto, prefix: str, sim: SimSite) -> Path:
    meter, boiler = sim.device("meter-1"), sim.device("boiler")
    text = f"""\
site: plant-a
gateway: gw-07
mqtt: {{url: "{broker.url}", prefix: "{prefix}", backoff_max_s: 0.5}}
outbox: {{path: var/outbox.sqlite}}
devices:
  - {{name: meter-1, driver: modbus, url: "{meter.url}", device_id: {meter.device_id},
     profile: chint-dtsu666, interval_s: 0.1, timeout_s: 0.2, backoff_max_s: 0.2}}
  - name: boiler
    driver: modbus
    url: "{boiler.url}"
    device_id: {boiler.device_id}
    interval_s: 0.1
    points:
      - {{name: pressure, address: 0, type: float32, unit: bar,
         alarms: [{{kind: high, limit: 80}}]}}
"""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


@asynccontextmanager
async def _world(
    tmp_path: Path, broker: Mosquitto, prefix: str
) -> AsyncIterator[tuple[SimSite, Agent, AgentHttp]]:
    chint = load_profile(PROFILES / "chint-dtsu666.yaml")
    specs = [
        SimDeviceSpec(name="meter-1", url="tcp://127.0.0.1:0", profile=chint, device_id=1),
        SimDeviceSpec(name="boiler", url="tcp://127.0.0.1:0", profile=BOILER, device_id=2),
    ]
    async with serve(specs) as sim:
        for name in ("meter-1", "boiler"):
            sim.device(name).freeze()
        sim.device("boiler").image.store({"pressure": 50.0})
        agent = Agent(load_config(_site(tmp_path, broker, prefix, sim)), grace_s=0.2)
        async with serving_http(agent, "127.0.0.1", 0) as http:
            task = asyncio.create_task(agent.run(), name="agent")
            try:
                yield sim, agent, http
            finally:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=15)
                assert done == {task}, "the agent did not stop within 15 s"


async def _in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


# What the page shows, read in one script run: the page redraws its tables every second,
# and one synchronous read cannot interleave with a redraw.
SNAPSHOT_JS = """
const out = {devices: {}, alarms: [], text: {}, title: document.title,
             notReloaded: window.notReloaded === true,
             stale: getComputedStyle(document.getElementById("stale")).display !== "none"};
for (const row of document.querySelectorAll("tr[data-device]")) {
  const points = {};
  for (const p of row.querySelectorAll(".point")) {
    points[p.dataset.point] = [p.querySelector(".value").innerText, p.dataset.quality];
  }
  out.devices[row.dataset.device] = {state: row.dataset.state, text: row.innerText, points};
}
for (const row of document.querySelectorAll("tr[data-alarm]")) {
  out.alarms.push([...row.cells].map((c) => c.innerText));
}
for (const id of ["title", "mqtt", "health", "alarms", "alarm-count", "outbox-messages"]) {
  out.text[id] = document.getElementById(id).innerText;
}
return out;
"""
Snapshot = dict[str, Any]


async def _snapshot(driver: WebDriver) -> Snapshot:
    doc: Snapshot = await _in_thread(lambda: driver.execute_script(SNAPSHOT_JS))
    return doc


async def _wait(driver: WebDriver, condition: Callable[[Snapshot], bool], what: str) -> Snapshot:
    """Read the page until the condition holds, for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        shown = await _snapshot(driver)
        if condition(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the page shows {shown}")
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline


def _state(shown: Snapshot, device: str) -> str | None:
    row = shown["devices"].get(device)
    return None if row is None else str(row["state"])


def _number(text: str) -> float:
    return float(text.split()[0])


async def test_status_page_shows_devices_values_alarms_and_outbox_live(
    browser: WebDriver, mosquitto_fresh: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    async with _world(tmp_path, mosquitto_fresh, unique_prefix) as (sim, agent, http):
        host, port = http.server.address
        await _in_thread(lambda: browser.get(f"http://{host}:{port}/"))
        await _in_thread(lambda: browser.execute_script("window.notReloaded = true;"))

        # Devices up with exactly the values the simulator serves, with their units.
        shown = await _wait(
            browser,
            lambda s: (
                _state(s, "meter-1") == "up"
                and _state(s, "boiler") == "up"
                and s["devices"]["boiler"]["points"]["pressure"] == ["50 bar", "good"]
            ),
            "both devices up",
        )
        assert shown["title"] == "plant-a/gw-07 · edge-agent"
        assert shown["text"]["title"] == "plant-a / gw-07"
        served = sim.device("meter-1").served_values()
        points = shown["devices"]["meter-1"]["points"]
        assert set(points) == set(served)
        units = {p.name: p.unit for p in load_profile(PROFILES / "chint-dtsu666.yaml").points}
        for name, value in served.items():
            text, quality = points[name]
            assert quality == "good"
            assert _number(text) == pytest.approx(value, rel=1e-6), name
            assert text.endswith(f" {units[name]}") if units[name] else " " not in text
        assert (shown["text"]["mqtt"], shown["text"]["health"]) == ("connected", "ok")
        assert shown["text"]["alarms"] == "none"

        # A value changes under the page and raises an alarm.
        sim.device("boiler").image.store({"pressure": 85.5})
        shown = await _wait(browser, lambda s: bool(s["alarms"]), "an alarm on the page")
        [alarm] = shown["alarms"]
        assert alarm[:3] == ["3", HIGH, "active_unack"]
        assert alarm[4] == "pressure high: 85.5 bar (limit 80 bar)"
        assert shown["text"]["alarm-count"] == "(1)"
        assert shown["devices"]["boiler"]["points"]["pressure"] == ["85.5 bar", "good"]

        # The meter stops answering: down with its reason, its values bad.
        sim.device("meter-1").faults.set("no_answer")
        shown = await _wait(browser, lambda s: _state(s, "meter-1") == "down", "meter-1 down")
        meter = shown["devices"]["meter-1"]
        assert "down timeout" in meter["text"]
        assert {tuple(v) for v in meter["points"].values()} == {("—", "bad")}

        # The broker goes away: the outbox fills, the uplink badge says so.
        mosquitto_fresh.stop()
        shown = await _wait(
            browser,
            lambda s: (
                s["text"]["mqtt"].startswith("down") and int(s["text"]["outbox-messages"]) > 3
            ),
            "the outbox filling while the broker is down",
        )
        assert int(shown["text"]["outbox-messages"]) <= agent.outbox.stats.messages

        # Nothing above reloaded the page.
        assert shown["notReloaded"] is True
        shot = tmp_path / "status-page.png"
        assert await _in_thread(lambda: browser.save_screenshot(str(shot)))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"status page screenshot: {shot}")


async def test_status_page_says_when_the_agent_stops_answering(
    browser: WebDriver, mosquitto: Mosquitto, unique_prefix: str, tmp_path: Path
) -> None:
    async with _world(tmp_path, mosquitto, unique_prefix) as (_sim, _agent, http):
        host, port = http.server.address
        await _in_thread(lambda: browser.get(f"http://{host}:{port}/"))
        shown = await _wait(browser, lambda s: _state(s, "boiler") == "up", "the device table")
        assert shown["stale"] is False
        await http.server.close()
        shown = await _wait(browser, lambda s: s["stale"], "the not-answering banner")
        # What was shown stays shown.
        assert _state(shown, "boiler") == "up"

"""The user's path: the wheel, installed outside the checkout, run from an empty directory.

The wheel is built from this checkout and installed (not editable) into a fresh virtualenv in
a temporary folder; every command runs there with a site file written the way a plant
engineer writes one: shipped profiles by name, one meter with its own profile beside the site
file, inline PLC points, energy counters, the shipped TOU calendar and a device-level alarm.
Nothing of the checkout is importable: the commands see what the wheel ships, and only that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import Mosquitto, Subscriber
from tests.fixtures.server_process import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

SITE = """\
# Plant A, gateway 1: written by hand, beside its own profiles/ folder.
site: plant-a
gateway: gw-01
mqtt: {{url: "mqtt://127.0.0.1:{broker}", prefix: {prefix}}}
outbox: {{path: var/outbox.sqlite}}
energy:
  timezone: Asia/Shanghai
  tariff: example-tou
devices:
  - name: incomer
    driver: modbus
    url: tcp://127.0.0.1:{meter}
    device_id: 1
    interval_s: 0.5
    profile: chint-dtsu666           # shipped
    alarms:
      - {{kind: comm_loss}}
  - name: boiler
    driver: modbus
    url: tcp://127.0.0.1:{boiler}
    interval_s: 0.5
    profile: boiler-panel            # profiles/boiler-panel.yaml, the plant's own
  - name: pump-plc
    driver: modbus
    url: tcp://127.0.0.1:{plc}
    interval_s: 0.5
    points:
      - {{name: flow, table: holding, address: 0, type: float32, unit: m3/h}}
      - {{name: running, table: coil, address: 0}}
"""

OWN_PROFILE = """\
manufacturer: Plant A
model: boiler panel meter
points:
  - {name: steam_t, table: input, address: 0, type: float32, unit: degC}
  - {name: energy_import, table: input, address: 2, type: uint32, scale: 0.01, unit: kWh,
     energy: {kind: electricity, direction: import}}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtualenv holding only the wheel and its dependencies."""
    base = tmp_path_factory.mktemp("installed")
    # Built from a copy of the sources: a build/ folder left in the checkout by an earlier
    # build would put modules that no longer exist into the wheel.
    source = base / "source"
    junk = (".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*junk, "var", "node_modules"))
    dist = base / "dist"
    _ok([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("edge_agent-*.whl")
    venv = base / "venv"
    _ok([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    _ok([*pip, "install", "-q", str(wheel)])
    return venv / "bin"


def _ok(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


def _env() -> dict[str, str]:
    """The user's environment: nothing pointing into the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


@pytest.fixture
def plant(tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str) -> Iterator[Path]:
    folder = tmp_path / "plant"
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "boiler-panel.yaml").write_text(OWN_PROFILE)
    ports = {"meter": free_port(), "boiler": free_port(), "plc": free_port()}
    text = SITE.format(broker=mosquitto.port, prefix=unique_prefix, **ports)
    (folder / "site.yaml").write_text(text)
    yield folder


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "edge-agent"), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_holds_the_program_and_its_data(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import edge_agent, drivers; print(edge_agent.__file__)"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.parent)), where  # not the checkout
    version = subprocess.run(
        [str(installed / "python"), "-m", "edge_agent", "--version"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert (version.returncode, version.stdout.split()[0]) == (0, "edge-agent")
    listing = _run(installed, tmp_path, "catalog")
    assert listing.returncode == 0, listing.stderr
    for name in ("chint-dtsu666", "eastron-sdm630", "acrel-adl400", "test-plc", "example-tou"):
        assert f"    {name} " in listing.stdout
    assert "example-province" in listing.stdout and "standard-coal" in listing.stdout


def test_check_plan_and_catalog_from_an_empty_directory(installed: Path, plant: Path) -> None:
    check = _run(installed, plant, "check", "site.yaml")
    assert (check.returncode, check.stderr) == (0, "")
    assert check.stdout == "site.yaml: ok, 3 devices, 29 points\n"
    plan = _run(installed, plant, "plan", "site.yaml")
    assert plan.returncode == 0, plan.stderr
    assert "incomer: tcp://" in plan.stdout and "boiler-panel" in plan.stdout
    listing = _run(installed, plant, "catalog", "site.yaml")
    own = next(x for x in listing.stdout.splitlines() if "boiler-panel" in x)
    assert own.split()[:3] == ["boiler-panel", "site", "profiles/boiler-panel.yaml"]
    # A typo gets the line and the catalog's folders, not a traceback.
    (plant / "bad.yaml").write_text(
        (plant / "site.yaml").read_text().replace("chint-dtsu666", "chint-dtsu66")
    )
    bad = _run(installed, plant, "check", "bad.yaml")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(
        "bad.yaml:15 devices[0].profile: unknown profile 'chint-dtsu66' (looked in: profiles/, "
        "/etc/edge-agent/profiles/, the shipped set; did you mean 'chint-dtsu666'?)"
    )


@dataclass
class Started:
    """A long-running command and the file its output goes to (a pipe could fill up)."""

    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> tuple[int, str]:
        """SIGINT, as Ctrl-C or systemd would; the exit code and everything it wrote."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.log.read_text()


def _start(installed: Path, plant: Path, *args: str, ready: str) -> Started:
    """A long-running command, returned once its output shows `ready`."""
    log = plant.parent / f"{args[0]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(installed / "edge-agent"), *args],
            cwd=plant,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while ready not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{args}: no {ready!r} in:\n{log.read_text()}")
        time.sleep(0.05)  # polling a file the child writes: no event to wait on
    return Started(proc, log)


def test_simulate_run_ingest_report_and_grafana(
    installed: Path, plant: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    control = f"127.0.0.1:{free_port()}"
    sim = _start(installed, plant, "simulate", "site.yaml", "--control", control, ready="fault")
    try:
        subscriber = Subscriber(mosquitto.host, mosquitto.port, f"{unique_prefix}/#")
        ingest = _start(installed, plant, "ingest", "site.yaml", ready="subscribed")
        run = _start(
            installed, plant, "run", "site.yaml", "--http", "off", ready="connected",
        )  # fmt: skip
        data = f"{unique_prefix}/plant-a/gw-01/%s/data"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            subscriber.payloads(data % d) for d in ("incomer", "boiler", "pump-plc")
        ):
            subscriber.wait_for_sync(len(subscriber.messages) + 1, timeout_s=10)
        for device in ("incomer", "boiler", "pump-plc"):
            message = json.loads(subscriber.payloads(data % device)[-1])
            assert message["device"] == device
            assert all(p.get("quality", "good") == "good" for p in message["points"].values())
        assert {"steam_t", "energy_import"} <= set(
            json.loads(subscriber.payloads(data % "boiler")[-1])["points"]
        )
        run_code, run_log = run.stop()
        assert run_code in (0, 130), run_log
        assert "Traceback" not in run_log
        ingest_code, ingest_log = ingest.stop()
        assert ingest_code in (0, 130) and "Traceback" not in ingest_log, ingest_log
    finally:
        sim_code, sim_log = sim.stop()
    assert sim_code in (0, 130) and "Traceback" not in sim_log, sim_log
    assert (plant / "edge-data.sqlite").is_file()  # the ingest's embedded store, by default
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400))
    report = _run(installed, plant, "report", "site.yaml", "--from", today, "--to", tomorrow,
                  "--out", "report")  # fmt: skip
    assert "Traceback" not in report.stderr, report.stderr
    # Seconds of data close no 15-minute interval: the report reads the store, then says so.
    assert "read incomer: " in report.stderr and "read boiler: " in report.stderr
    assert report.returncode == 3 and "no data for plant-a" in report.stderr, report.stderr
    grafana = _run(installed, plant, "grafana", "generate", "site.yaml", "--out", "grafana")
    assert grafana.returncode == 0, grafana.stderr
    boards = sorted(p.name for p in (plant / "grafana" / "dashboards" / "edge-agent").glob("*"))
    assert len(boards) >= 4 and all(b.endswith(".json") for b in boards), boards


def test_demo_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    demo = _run(installed, tmp_path, "demo", "--seconds", "3")
    assert demo.returncode == 0, demo.stderr
    assert "main-incomer" in demo.stdout and "utility-meter" in demo.stdout
    assert list(tmp_path.iterdir()) == []  # a demo leaves nothing behind


def test_a_modbus_only_site_imports_no_optional_stack(tmp_path: Path) -> None:
    """OPC UA (its certificates' `cryptography` too: ~10 MB of RSS), the time-series client,
    Grafana and the embedded broker stay unloaded."""
    (tmp_path / "site.yaml").write_text(
        "site: s\ngateway: g\ndevices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:9', profile: chint-dtsu666}\n"
    )
    probe = (
        "import sys\nfrom pathlib import Path\n"
        "from edge_agent.cli.main import start_agent\n"
        "from edge_agent.config.site import load_config\n"
        "start_agent(load_config(Path('site.yaml')))\n"
        "heavy = ('asyncua', 'influxdb_client', 'grafana_client', 'amqtt', 'aiohttp',"
        " 'cryptography')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr

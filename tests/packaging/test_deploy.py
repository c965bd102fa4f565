"""The deployment files in deploy/, tested as far as this machine allows (no Docker engine).

systemd unit     parsed and its hardening checked key by key; `systemd-analyze verify`
                 (with ExecStart pointed at this checkout's edge-agent, since nothing
                 is installed under /opt here) and its offline security score
sysusers file    `systemd-sysusers --dry-run` against a copy of this machine's users
Dockerfile       every COPY source exists; ENTRYPOINT and CMD are our command line
compose stack    parsed; every file it mounts or builds from exists; every service of
                 our image runs a command our CLI accepts; the config each one reads is
                 checked by the image's entry command (`edge-agent check`) laid out as
                 the container sees it; secrets only from .env; host ports on loopback
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import __version__
from edge_agent.cli.main import _parser, main

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "edge-agent.service"
SYSUSERS = DEPLOY / "systemd" / "edge-agent.sysusers"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
EDGE_AGENT = Path(sys.executable).with_name("edge-agent")
OUR_IMAGE = "edge-agent:local"


def _unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path}: {raw!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not key=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _run(*args: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=30, check=False, **kw
    )


def test_systemd_unit_is_hardened() -> None:
    unit = _unit_sections(UNIT)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    expected = {
        "User": "edge-agent",
        "Group": "edge-agent",
        "SupplementaryGroups": "dialout",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "StateDirectory": "edge-agent",
        "ReadWritePaths": "/var/lib/edge-agent",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictSUIDSGID": "yes",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert float(service["RestartSec"]) > 0
    # Common gateway UARTs too: Raspberry Pi (ttyAMA), i.MX (ttymxc), SC16IS7xx (ttySC).
    assert unit["Service"]["DeviceAllow"] == [
        f"char-{name} rw" for name in ("ttyS", "ttyUSB", "ttyACM", "ttyAMA", "ttymxc", "ttySC")
    ]
    assert "PrivateDevices" not in service  # it would hide the serial lines
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # The service runs our command line, with the config where ConfigurationDirectory is.
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/edge-agent/venv/bin/edge-agent"
    args = _parser().parse_args(argv[1:])
    assert (args.command, str(args.config), args.http) == (
        "run",
        "/etc/edge-agent/site.yaml",
        ("127.0.0.1", 9108),
    )
    assert args.log_json is True
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit_and_scores_it_ok(tmp_path: Path) -> None:
    # verify insists that ExecStart exists; point it at this checkout's console script.
    text = UNIT.read_text().replace("/opt/edge-agent/venv/bin/edge-agent", str(EDGE_AGENT))
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text)
    done = _run("systemd-analyze", "verify", copy)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # A typo is caught, so the check above can fail.
    typo = tmp_path / "typo.service"
    typo.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    assert "Unknown key 'ProtectSystm'" in _run("systemd-analyze", "verify", typo).stderr

    score = _run("systemd-analyze", "security", "--offline=yes", "--no-pager", copy)
    assert score.returncode == 0, score.stderr
    found = re.search(
        r"Overall exposure level for edge-agent\.service: ([\d.]+) (\w+)", score.stdout
    )
    assert found is not None, score.stdout[-500:]
    assert float(found.group(1)) <= 2.0 and found.group(2) == "OK"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers here")
def test_sysusers_file_creates_the_user(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", etc / name)
    if "edge-agent:" in (etc / "passwd").read_text():
        pytest.fail("this machine already has a user edge-agent; the dry run proves nothing")
    done = _run("systemd-sysusers", f"--root={tmp_path}", "--dry-run", SYSUSERS)
    assert done.returncode == 0, done.stderr
    assert "Creating user 'edge-agent' (edge-agent collector)" in done.stderr
    lines = [x.split() for x in SYSUSERS.read_text().splitlines() if x and not x.startswith("#")]
    assert ["m", "edge-agent", "dialout"] in lines


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_copies_what_exists_and_runs_our_command() -> None:
    steps = _dockerfile()
    # Two stages: one builds the wheel, the image installs only that wheel.
    assert [rest for word, rest in steps if word == "FROM"] == [
        "python:3.11-slim-bookworm AS wheel",
        "python:3.11-slim-bookworm",
    ]
    runs = [rest for word, rest in steps if word == "RUN"]
    assert runs[0] == "pip wheel --no-deps --wheel-dir /wheels ."
    assert runs[1].startswith("pip install /tmp/wheels/*.whl ")
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from="):
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    cmd = json.loads(dict(steps)["CMD"])
    assert entry == ["edge-agent"]
    args = _parser().parse_args(cmd)
    assert (args.command, str(args.config), args.http) == (
        "run",
        "/etc/edge-agent/site.yaml",
        ("0.0.0.0", 9108),
    )
    assert dict(steps)["USER"] == "edge-agent"
    # The image's entry point, run directly.
    done = _run(EDGE_AGENT, "--version")
    assert (done.returncode, done.stdout) == (0, f"edge-agent {__version__}\n")
    # The package ships the status page: the image installs it with `pip install .`.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"static/*.html"' in pyproject
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"]
    assert {"!drivers/", "!edge_agent/", "!simulators/"} <= set(ignore)


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    binds = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            binds.append((source, target))
    return binds


def test_compose_stack_is_complete_and_every_file_it_uses_exists() -> None:
    doc = _compose()
    services = doc["services"]
    assert set(services) == {
        "mosquitto", "influxdb", "grafana", "dashboards", "simulators", "agent", "ingest"
    }  # fmt: skip
    declared_volumes = set(doc["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build is not None:
            context = COMPOSE_DIR / build["context"]
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is not on loopback"
    # Grafana reads the provisioning the dashboards service generates from the stack's site.
    assert "grafana-provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]
    assert "grafana-provisioning:/provisioning" in services["dashboards"]["volumes"]
    assert ("./mosquitto.conf", "/mosquitto/config/mosquitto.conf") in _binds(services["mosquitto"])
    # Secrets come from .env (documented in .env.example), never from a file in the repo.
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (COMPOSE_DIR / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    assert used == documented == {"INFLUX_TOKEN", "INFLUX_PASSWORD", "GRAFANA_PASSWORD"}
    assert services["agent"]["healthcheck"]["test"][-1].endswith(
        "urlopen('http://127.0.0.1:9108/healthz', timeout=3)"
    )


def _container_root(tmp_path: Path, service: dict[str, Any]) -> Path:
    """This service's files laid out as its container sees them (image files + bind mounts)."""
    root = tmp_path / "container"
    for source, target in _binds(service):
        dest = root / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(COMPOSE_DIR / source, dest)
    return root


def test_compose_services_wait_on_the_health_of_what_they_need() -> None:
    services = _compose()["services"]
    needs = {
        name: {dep: cond["condition"] for dep, cond in service["depends_on"].items()}
        for name, service in services.items()
        if "depends_on" in service
    }
    assert needs == {
        "agent": {"mosquitto": "service_healthy", "simulators": "service_healthy"},
        "ingest": {"mosquitto": "service_healthy", "influxdb": "service_healthy"},
        "grafana": {
            "influxdb": "service_healthy",
            "dashboards": "service_completed_successfully",
        },
    }
    # Whatever is waited on for health has a healthcheck, and so has every long-lived
    # service that can tell (the ingest has no HTTP port; the dashboards job exits).
    healthy = {dep for deps in needs.values() for dep, c in deps.items() if c == "service_healthy"}
    checked = {name for name, service in services.items() if "healthcheck" in service}
    assert healthy <= checked
    assert checked == {"mosquitto", "influxdb", "grafana", "simulators", "agent"}
    for name in checked:
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
        assert {"interval", "timeout", "retries"} <= set(check), name
    # The one-shot job is not restarted, and the checks probe what each service serves.
    assert services["dashboards"]["restart"] == "no"
    assert services["simulators"]["healthcheck"]["test"][-1].endswith(
        "urlopen('http://127.0.0.1:8502/devices', timeout=3)"
    )
    assert _parser().parse_args(services["simulators"]["command"]).control == ("0.0.0.0", 8502)


@pytest.mark.parametrize("name", ["simulators", "agent", "ingest", "dashboards"])
def test_compose_services_of_our_image_run_commands_our_cli_accepts(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = _compose()["services"][name]
    assert service["image"] == OUR_IMAGE
    args = _parser().parse_args(service["command"])
    expected = {
        "simulators": "simulate",
        "agent": "run",
        "ingest": "ingest",
        "dashboards": "grafana",
    }
    assert args.command == expected[name]
    root = _container_root(tmp_path, service)
    config = root / str(args.config).lstrip("/")
    assert config.is_file(), f"{name} reads {args.config}, which nothing mounts"
    # The image's entry point (the console script's function), run on the file as the
    # container has it, with the environment compose gives this service (the token only to
    # the ingest).
    monkeypatch.delenv("INFLUX_TOKEN", raising=False)
    for key in service.get("environment", {}):
        monkeypatch.setenv(key, "from-dot-env")
    assert main(["check", str(config)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"{config}: ok, 5 devices, 288 points\n"
    if name == "agent":
        assert args.http == ("0.0.0.0", 9108)  # the container's port, published on loopback
        assert service["ports"] == ["127.0.0.1:9108:9108"]
        assert ("agent-state", "/var/lib/edge-agent") in [
            tuple(v.split(":")[:2]) for v in service["volumes"]
        ]
        site = yaml.safe_load(config.read_text())
        assert site["outbox"]["path"].startswith("/var/lib/edge-agent/")
    if name == "simulators":
        assert service["hostname"] == "simulators"
        site = yaml.safe_load(config.read_text())
        hosts = {re.sub(r"^[a-z+]+://([^:/]+).*$", r"\1", d["url"]) for d in site["devices"]}
        assert hosts == {"simulators"}


def test_compose_dashboards_are_generated_from_the_site_the_stack_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = _compose()["services"]["dashboards"]
    root = _container_root(tmp_path, service)
    argv = [a.replace("/etc/edge-agent", str(root / "etc/edge-agent")) for a in service["command"]]
    out = tmp_path / "provisioning"
    argv[argv.index("/provisioning")] = str(out)
    monkeypatch.delenv("INFLUX_TOKEN", raising=False)
    assert main(argv) == 0, capsys.readouterr().err
    site = yaml.safe_load((COMPOSE_DIR / "site.yaml").read_text())
    # The stack's site, not the demo's that deploy/grafana holds: its name, and no energy
    # areas (the demo has workshop-1 and utilities, which nothing in the stack writes).
    meter = json.loads((out / "dashboards/edge-agent/meter.json").read_text())
    variables = {v["name"]: v for v in meter["templating"]["list"]}
    assert variables["site"]["current"]["value"] == site["site"] == "demo-plant"
    # The area variable's first option is the site itself (its own series hold the totals).
    assert [o["text"] for o in variables["area"]["options"]] == ["demo-plant"]
    demo = json.loads((DEPLOY / "grafana/dashboards/edge-agent/meter.json").read_text())
    demo_variables = {v["name"]: v for v in demo["templating"]["list"]}
    demo_areas = [o["text"] for o in demo_variables["area"]["options"]]
    assert demo_areas == ["demo-plant", "workshop-1", "utilities"]
    source = yaml.safe_load((out / "datasources/edge.yaml").read_text())["datasources"][0]
    assert source["url"] == site["influx"]["url"] == "http://influxdb:8086"
    # Grafana finds the dashboards where the provider says, inside its provisioning mount.
    provider = yaml.safe_load((out / "dashboards/edge-agent.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/edge-agent"

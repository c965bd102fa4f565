"""Config loading: golden site folders, ${ENV} substitution, line mapping, profile lookup.

Golden folders live in tests/configs/{valid,invalid}/<case>/: a site.yaml (and profiles/),
with expected-plan.txt or expected-errors.txt beside it. Run with UPDATE_GOLDEN=1 to rewrite
the expectations from the current output, then read the diff before committing it.
Every golden test runs from the repository root so the paths in messages are stable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.modbus.config import ModbusDevice
from drivers.modbus.plan import build_plan
from edge_agent.catalog import Kind, shipped, shipped_demo
from edge_agent.cli.plan_listing import render_issues, render_plan
from edge_agent.config.document import expand_env, read_yaml
from edge_agent.config.errors import format_loc, shown_path
from edge_agent.config.site import (
    ConfigError,
    ConfigIssue,
    SiteConfig,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path("tests") / "configs"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SECRET = "hunter2-not-in-any-message"
GOLDEN_ENV = {"MQTT_PASSWORD": SECRET, "METER_HOST": SECRET}


def _cases(kind: str) -> list[str]:
    return sorted(p.name for p in (REPO / GOLDEN / kind).iterdir() if p.is_dir())


def _compare(expected_file: Path, actual: str) -> None:
    if UPDATE:
        expected_file.write_text(actual, encoding="utf-8")
        return
    assert expected_file.is_file(), f"{expected_file} missing: run with UPDATE_GOLDEN=1"
    assert actual == expected_file.read_text(encoding="utf-8")


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _load_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value


def _messages(err: ConfigError) -> list[str]:
    return [str(issue) for issue in err.issues]


# --- golden folders ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_case(case: str, in_repo: None) -> None:
    loaded = load_config(GOLDEN / "valid" / case / "site.yaml", environ=GOLDEN_ENV)
    _compare(GOLDEN / "valid" / case / "expected-plan.txt", render_plan(loaded))


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_case_warnings(case: str, in_repo: None) -> None:
    """Warnings (a 0-based map whose numbers look Modicon) only where a case expects them."""
    loaded = load_config(GOLDEN / "valid" / case / "site.yaml", environ=GOLDEN_ENV)
    expected = GOLDEN / "valid" / case / "expected-warnings.txt"
    text = "".join(f"{w}\n" for w in loaded.warnings)
    if text or expected.exists():
        _compare(expected, text)


@pytest.mark.parametrize("case", _cases("invalid"))
def test_invalid_case(case: str, in_repo: None) -> None:
    err = _load_error(GOLDEN / "invalid" / case / "site.yaml", GOLDEN_ENV)
    text = render_issues(err)
    assert SECRET not in text
    _compare(GOLDEN / "invalid" / case / "expected-errors.txt", text)


def test_golden_folders_cover_the_brief() -> None:
    assert set(_cases("invalid")) >= {
        "bad-url",
        "duplicate-device",
        "duplicate-point",
        "many-errors",
        "missing-env",
        "overlapping-registers",
        "profile-error",
        "type-mismatch",
        "unknown-key",
        "unknown-profile",
        "unreadable-range",
        "yaml-syntax",
        # issue 16: reading is bounded, numbers are numbers
        "alias-bomb",
        "boolean-numbers",
        "control-character",
        "deep-nesting",
        "too-fast",
        "unreadable-scalars",
    }


# --- the site model ---------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BRIEF_SITE = """\
site: plant-a
gateway: gw-01
mqtt: {url: "mqtt://127.0.0.1:1883", prefix: factory}    # mqtts:// for TLS
devices:
  - name: meter-1
    driver: modbus
    url: tcp://127.0.0.1:5020   # rtu:///dev/ttyUSB0?baudrate=9600&parity=E, rtu+tcp://host:port
    device_id: 1
    interval_s: 1.0
    profile: chint-dtsu666      # a shipped profile (edge-agent catalog), or `points:` inline
"""

ONE_POINT_PROFILE = "points:\n  - {name: voltage_a, address: 0x2006, type: float32, unit: V}\n"


def test_brief_example_loads_as_written(tmp_path: Path) -> None:
    site_file = _write(tmp_path / "site.yaml", BRIEF_SITE)
    _write(tmp_path / "profiles" / "chint-dtsu666.yaml", ONE_POINT_PROFILE)
    loaded = load_config(site_file, environ={})
    assert loaded.path == site_file
    assert loaded.site.site == "plant-a"
    assert loaded.site.gateway == "gw-01"
    assert loaded.site.mqtt.url == "mqtt://127.0.0.1:1883"
    assert loaded.site.mqtt.prefix == "factory"
    assert loaded.site.profiles_dir is None
    (setup,) = loaded.devices
    assert setup.profile_name == "chint-dtsu666"
    assert setup.device.name == "meter-1"
    assert setup.device.url == "tcp://127.0.0.1:5020"
    assert setup.device.device_id == 1
    assert setup.device.interval_s == 1.0
    assert setup.device.profile == "chint-dtsu666"
    assert [(p.name, p.address) for p in setup.profile.points] == [("voltage_a", 0x2006)]


def test_inline_points_with_hex_addresses(tmp_path: Path) -> None:
    site_file = _write(
        tmp_path / "site.yaml",
        "site: s\ngateway: g\ndevices:\n"
        "  - name: m\n    driver: modbus\n    url: tcp://h\n"
        "    points: [{name: voltage_a, table: holding, address: 0x2006, type: float32,"
        " order: ABCD, scale: 0.1, unit: V}]\n",
    )
    (setup,) = load_config(site_file, environ={}).devices
    assert setup.profile_name == "inline"
    (point,) = setup.profile.points
    assert (point.address, point.scale, point.unit) == (8198, 0.1, "V")


def test_site_model_rejects_clashing_devices() -> None:
    device = {"driver": "modbus", "url": "tcp://10.0.0.1", "points": [{"name": "v", "address": 0}]}
    with pytest.raises(ValueError) as info:
        SiteConfig.model_validate(
            {
                "site": "s",
                "gateway": "g",
                "devices": [{**device, "name": "a"}, {**device, "name": "a"}],
            }
        )
    assert "devices[1]: device name 'a' is already used by devices[0]" in str(info.value)
    assert "devices[1]: device_id 1 at 'tcp://10.0.0.1' is already used by devices[0] 'a'" in str(
        info.value
    )


def test_devices_are_a_union_tagged_by_driver() -> None:
    site = SiteConfig.model_validate(
        {
            "site": "s",
            "gateway": "g",
            "devices": [
                {"name": "m", "driver": "modbus", "url": "tcp://h", "profile": "p"},
            ],
        }
    )
    assert isinstance(site.devices[0], ModbusDevice)
    assert site.mqtt.url == "mqtt://127.0.0.1:1883"


# --- profile lookup ---------------------------------------------------------------------

SITE_USING_P = """\
site: s
gateway: g
profiles_dir: shared
devices:
  - {name: a, driver: modbus, url: "tcp://h", profile: p}
  - {name: b, driver: modbus, url: "tcp://h", device_id: 2, profile: p}
"""


def test_profile_next_to_site_wins_over_profiles_dir(tmp_path: Path) -> None:
    site_file = _write(tmp_path / "site.yaml", SITE_USING_P)
    _write(tmp_path / "profiles" / "p.yaml", "points: [{name: local, address: 1}]\n")
    _write(tmp_path / "shared" / "p.yaml", "points: [{name: shared, address: 1}]\n")
    a, b = load_config(site_file, environ={}).devices
    assert [p.name for p in a.profile.points] == ["local"]
    assert a.profile is b.profile  # loaded once for both devices


def test_profiles_dir_is_relative_to_the_site_file(tmp_path: Path) -> None:
    site_file = _write(tmp_path / "site.yaml", SITE_USING_P)
    _write(tmp_path / "shared" / "p.yaml", "points: [{name: shared, address: 1}]\n")
    a, _ = load_config(site_file, environ={}).devices
    assert [p.name for p in a.profile.points] == ["shared"]


def test_profiles_dir_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "site.yaml", SITE_USING_P)
    err = _load_error(Path("site.yaml"))
    assert _messages(err)[0] == "site.yaml:3 profiles_dir: profiles_dir shared/ is not a directory"
    assert _messages(err)[1].startswith(
        "site.yaml:5 devices[0].profile: unknown profile 'p' (looked in: profiles/, shared/, "
    )


def _shipped_profiles() -> list[str]:
    return sorted(p.stem for p in shipped(Kind.PROFILES).glob("*.yaml"))


@pytest.mark.parametrize("name", _shipped_profiles())
def test_shipped_profile_loads_and_plans(name: str, tmp_path: Path) -> None:
    site_file = _write(
        tmp_path / "site.yaml",
        f"site: s\ngateway: g\ndevices:\n  - {{name: d, driver: modbus, url: 'tcp://h', "
        f"profile: {name}}}\n",
    )
    try:
        loaded = load_config(site_file, environ={})
    except ConfigError as err:
        pytest.fail(render_issues(err))
    (setup,) = loaded.devices
    assert setup.profile_name == name
    plan = build_plan(setup.device, setup.profile)
    names = [n for r in plan.requests for n in r.point_names]
    assert sorted(names) == sorted(p.name for p in setup.profile.points)


# --- ${ENV} substitution ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("plain", {}, ("plain", [])),
        ("${A}", {"A": "1"}, ("1", [])),
        ("x-${A}-${B}-y", {"A": "1", "B": "2"}, ("x-1-2-y", [])),
        ("${A:-dflt}", {}, ("dflt", [])),
        ("${A:-dflt}", {"A": ""}, ("dflt", [])),
        ("${A:-dflt}", {"A": "set"}, ("set", [])),
        ("${A:-}", {}, ("", [])),
        ("${A:-a:b}c", {}, ("a:bc", [])),
        ("$${A}", {"A": "1"}, ("${A}", [])),
        ("$$${A}", {"A": "1"}, ("$${A}", [])),
        ("$$A $5 ${", {}, ("$$A $5 ", ["unclosed ${ (write $${ for a literal ${)"])),
        ("${A}", {"A": "${B}"}, ("${B}", [])),  # values are not expanded again
        ("p=${PW}", {}, ("p=", ["environment variable PW is not set"])),
        (
            "${A}${B}",
            {},
            ("", ["environment variable A is not set", "environment variable B is not set"]),
        ),
        (
            "${1A}",
            {},
            (
                "",
                [
                    "bad reference ${1A}: write ${NAME} or ${NAME:-default}, with NAME made of "
                    "letters, digits and _"
                ],
            ),
        ),
    ],
)
def test_expand_env(text: str, environ: dict[str, str], expected: tuple[str, list[str]]) -> None:
    assert expand_env(text, environ) == expected


def test_env_fills_every_string_and_numbers_still_validate(tmp_path: Path) -> None:
    site_file = _write(
        tmp_path / "site.yaml",
        "site: ${SITE}\ngateway: g\n"
        "mqtt: {url: 'mqtt://${BROKER}:${PORT}', password: '${PW}', username: 'a$${b}'}\n"
        "devices:\n  - {name: m, driver: modbus, url: 'tcp://h', device_id: '${UNIT}',"
        " profile: p}\n",
    )
    _write(tmp_path / "profiles" / "p.yaml", "points: [{name: v, address: 0, unit: '${UNIT_V}'}]\n")
    loaded = load_config(
        site_file,
        environ={
            "SITE": "plant-a",
            "BROKER": "b.example",
            "PORT": "8883",
            "PW": "pw",
            "UNIT": "7",
            "UNIT_V": "kV",
        },
    )
    assert loaded.site.site == "plant-a"
    assert loaded.site.mqtt.url == "mqtt://b.example:8883"
    assert loaded.site.mqtt.password is not None
    assert loaded.site.mqtt.password.get_secret_value() == "pw"
    assert loaded.site.mqtt.username == "a${b}"
    assert loaded.devices[0].device.device_id == 7
    assert loaded.devices[0].profile.points[0].unit == "kV"


def test_environ_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_TEST_SITE", "from-os-environ")
    site_file = _write(
        tmp_path / "site.yaml",
        "site: ${EDGE_TEST_SITE}\ngateway: g\n"
        "devices: [{name: m, driver: modbus, url: 'tcp://h', points: [{name: v, address: 0}]}]\n",
    )
    assert load_config(site_file).site.site == "from-os-environ"


def test_substituted_values_never_reach_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(
        tmp_path / "site.yaml",
        "site: s\ngateway: g\n"
        "devices:\n  - {name: m, driver: modbus, url: 'tcp://${HOST}:99999',"
        " points: [{name: v, address: 0}]}\n"
        "  - {name: n, driver: modbus, url: 'ftp://${HOST}', points: [{name: v, address: 0}]}\n"
        "  - {name: '${NAME}', driver: modbus, url: 'tcp://h', points: [{name: v, address: 0}]}\n",
    )
    err = _load_error(Path("site.yaml"), {"HOST": "s3cret", "NAME": "s3cret name"})
    assert _messages(err) == [
        "site.yaml:4 devices[0].url: bad port in 'tcp://${HOST}:99999' (use 1-65535)",
        "site.yaml:5 devices[1].url: unknown scheme 'ftp' in 'ftp://${HOST}' "
        "(use tcp://, rtu://, rtu+tcp://)",
        "site.yaml:6 devices[2].name: name '${NAME}' may use only letters, digits, _ . and - "
        "(and not start with . or -)",
    ]
    assert "s3cret" not in render_issues(err)


# --- line mapping -----------------------------------------------------------------------


def test_read_yaml_records_the_line_of_every_key_and_item(tmp_path: Path) -> None:
    doc = read_yaml(
        _write(
            tmp_path / "a.yaml",
            "# comment\n"
            "site: s\n"
            "devices:\n"
            "  - name: m\n"
            "    points:\n"
            "\n"
            "      - {name: v, address: 0x10}\n"
            "      - name: w\n"
            "        address: 2\n",
        ),
        environ={},
    )
    assert doc.data == {
        "site": "s",
        "devices": [
            {"name": "m", "points": [{"name": "v", "address": 16}, {"name": "w", "address": 2}]}
        ],
    }
    assert dict(doc.lines) == {
        (): 2,
        ("site",): 2,
        ("devices",): 3,
        ("devices", 0): 4,
        ("devices", 0, "name"): 4,
        ("devices", 0, "points"): 5,
        ("devices", 0, "points", 0): 7,
        ("devices", 0, "points", 0, "name"): 7,
        ("devices", 0, "points", 0, "address"): 7,
        ("devices", 0, "points", 1): 8,
        ("devices", 0, "points", 1, "name"): 8,
        ("devices", 0, "points", 1, "address"): 9,
    }
    assert doc.line_of(("devices", 0, "points", 1, "type")) == 8
    assert doc.line_of(("nowhere", 3)) == 2
    assert doc.issues == ()


def test_read_yaml_merge_keys_and_duplicate_keys(tmp_path: Path) -> None:
    doc = read_yaml(
        _write(
            tmp_path / "a.yaml",
            "base: &b {driver: modbus, url: x}\ndev:\n  <<: *b\n  name: m\n  name: n\n",
        ),
        environ={},
    )
    assert doc.data == {
        "base": {"driver": "modbus", "url": "x"},
        "dev": {"driver": "modbus", "url": "x", "name": "m"},
    }
    assert doc.lines[("dev", "driver")] == 1  # a merged key keeps the line it was written on
    assert doc.lines[("dev", "name")] == 4
    assert [str(i) for i in doc.issues] == [
        f"{shown_path(tmp_path / 'a.yaml')}:5 dev.name: duplicate key 'name' (first at line 4)"
    ]


def test_read_yaml_reports_unset_variables_at_their_line(tmp_path: Path) -> None:
    doc = read_yaml(
        _write(tmp_path / "a.yaml", "mqtt:\n  password: ${MQTT_PASSWORD}\n"), environ={}
    )
    assert [(i.line, i.path, i.message) for i in doc.issues] == [
        (2, "mqtt.password", "environment variable MQTT_PASSWORD is not set")
    ]


def test_yaml_syntax_error_has_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "site.yaml", "site: s\ngateway: [g\n")
    err = _load_error(Path("site.yaml"))
    assert _messages(err) == [
        "site.yaml:3: YAML syntax: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 2)"
    ]


def test_missing_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = _load_error(Path("nothere.yaml"))
    assert _messages(err) == ["nothere.yaml: file not found"]
    assert render_issues(err) == "nothere.yaml: file not found\n1 error in nothere.yaml\n"


def test_absolute_path_under_cwd_is_shown_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    err = _load_error(tmp_path / "sub" / "site.yaml")
    assert _messages(err) == ["sub/site.yaml: file not found"]
    assert shown_path(Path("a/../b/site.yaml")) == Path("b/site.yaml")
    assert shown_path(Path("/elsewhere/site.yaml")) == Path("/elsewhere/site.yaml")


def test_issue_text_forms() -> None:
    assert str(ConfigIssue(Path("site.yaml"), 41, "devices[2].points[5]", "m")) == (
        "site.yaml:41 devices[2].points[5]: m"
    )
    assert str(ConfigIssue(Path("site.yaml"), 3, "", "m")) == "site.yaml:3: m"
    assert str(ConfigIssue(Path("site.yaml"), None, "x", "m")) == "site.yaml x: m"
    assert format_loc(("devices", 2, "points", 5, "address")) == "devices[2].points[5].address"
    assert format_loc(()) == ""


def test_config_error_needs_an_issue() -> None:
    with pytest.raises(ValueError):
        ConfigError([])


def _errors_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "site.yaml", text)
    return _messages(_load_error(Path("site.yaml")))


def test_odd_shapes_get_plain_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _errors_of(tmp_path, monkeypatch, "- a\n") == [
        "site.yaml:1: the file must be a mapping (key: value lines); got a list"
    ]
    assert _errors_of(tmp_path, monkeypatch, "site: s\ngateway: g\non: 1\ndevices: [foo]\n") == [
        "site.yaml:3: unknown key 'on' (known keys: site, gateway, mqtt, outbox, polling, influx, "
        "ingest, energy, alarms, health, uplink, sparkplug, writes, profiles_dir, devices)",
        "site.yaml:4 devices[0]: each entry of devices must be a mapping (key: value lines); "
        "got 'foo'",
    ]
    assert _errors_of(tmp_path, monkeypatch, "site: !!python/object:os.system x\n") == [
        "site.yaml:1: YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'"
    ]
    assert _errors_of(tmp_path, monkeypatch, "a: &a [*a]\n")[-1] == (
        "site.yaml:1 a[0]: an alias refers to itself"
    )


def test_profile_errors_name_the_devices_using_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "profiles" / "p.yaml", "points: [{name: v, address: -1}]\n")
    devices = "".join(
        f"  - {{name: m{i}, driver: modbus, url: 'tcp://h', device_id: {i}, profile: p}}\n"
        for i in range(1, 6)
    )
    assert _errors_of(tmp_path, monkeypatch, f"site: s\ngateway: g\ndevices:\n{devices}") == [
        "profiles/p.yaml:1 points[0].address: address must be at least 0; got -1 "
        "(used by devices m1, m2, m3 and 2 more)"
    ]


def test_render_plan_counts_in_the_singular(tmp_path: Path) -> None:
    site_file = _write(
        tmp_path / "site.yaml",
        "site: s\ngateway: g\n"
        "devices: [{name: m, driver: modbus, url: 'tcp://h:1502', interval_s: 0.25,"
        " points: [{name: v, table: input, address: 0xFFFF}]}]\n",
    )
    assert render_plan(load_config(site_file, environ={})) == (
        "site s, gateway g\n"
        "m: tcp://h:1502 device_id 1, profile inline, every 0.25 s\n"
        "  FC04 input     start 65535 (0xFFFF)  count    1  v\n"
        "total: 1 device, 1 point, 1 request per poll, 1 register per poll\n"
    )


@pytest.mark.parametrize("name", ["demo.yaml", "site.example.yaml"])
def test_shipped_site_configs_check(name: str) -> None:
    """The configs the README points at load and plan as written."""
    root = Path(__file__).resolve().parents[2]
    path = shipped_demo() if name == "demo.yaml" else root / "configs" / name
    loaded = load_config(path, environ={"MQTT_PASSWORD": "not-a-secret"}, portable=True)
    # The example's broker CA is the gateway's file: a note here, an error without portable.
    assert [n.path for n in loaded.notes] == ([] if name == "demo.yaml" else ["mqtt.tls.ca_file"])
    assert len(loaded.devices) == (7 if name == "demo.yaml" else 5)  # + OPC UA PLC, DL/T 645 meter
    assert all(d.profile.points if d.profile else d.device.points for d in loaded.devices)


def test_check_prints_warnings_and_exits_0(
    in_repo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0-based map whose numbers look Modicon passes `check` with a warning on stderr."""
    from edge_agent.cli.main import main

    case = GOLDEN / "valid" / "modicon-looking"
    assert main(["check", str(case / "site.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{case / 'site.yaml'}: ok, 3 devices, 6 points\n"
    expected = (case / "expected-warnings.txt").read_text(encoding="utf-8")
    assert err == "".join(f"warning: {line}\n" for line in expected.splitlines())
    assert main(["check", str(GOLDEN / "valid" / "addressing-notations" / "site.yaml")]) == 0
    assert capsys.readouterr().err == ""

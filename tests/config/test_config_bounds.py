"""Config reading is bounded: limits of size, nodes, depth and aliases; numbers are numbers.

Each hostile file of issue 16 gets listed errors with its line, and costs little memory
(measured with tracemalloc, the allocations Python makes); a 500-device site still loads.
The golden folders tests/configs/invalid/{alias-bomb,deep-nesting,control-character,
boolean-numbers,too-fast,unreadable-scalars} show the full messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.config_numbers import MIN_BACKOFF_S, MIN_INTERVAL_S, MIN_TIMEOUT_S
from drivers.modbus.config import ModbusDevice
from edge_agent.config import document as config_yaml
from edge_agent.config.document import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, read_data, read_yaml
from edge_agent.config.site import ConfigError, load_config
from edge_agent.energy.coefficients import load_coefficients
from edge_agent.energy.tariffs import load_calendar
from tests.allocations import MB, Allocations, traced

HEAD = "site: s\ngateway: g\n"
DEVICE = (
    "devices:\n  - {name: m, driver: modbus, url: 'tcp://h', points: [{name: v, address: 0}]}\n"
)
LAUGHS = "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS  # 9**9 strings


@pytest.fixture
def memory() -> Iterator[Allocations]:
    with traced() as allocations:
        yield allocations


@pytest.fixture
def errors_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: Allocations
) -> Callable[[str], list[str]]:
    """The messages of a site file's ConfigError, read from tmp_path/site.yaml."""
    monkeypatch.chdir(tmp_path)

    def errors(text: str) -> list[str]:
        (tmp_path / "site.yaml").write_text(text, encoding="utf-8")
        memory.mark()
        with pytest.raises(ConfigError) as info:
            load_config(Path("site.yaml"), environ={})
        assert all(issue.line is not None for issue in info.value.issues)
        return [str(issue) for issue in info.value.issues]

    return errors


# --- aliases, depth, size ----------------------------------------------------------------


def test_alias_bomb_is_refused_before_it_expands(
    errors_of: Callable[[str], list[str]], memory: Allocations
) -> None:
    assert errors_of(HEAD + DEVICE + BOMB) == [
        "site.yaml:11 g: aliases (*name) expand the file past 1,000,000 keys, values and "
        "list items here, the most a config file may have"
    ]
    assert memory.peak_mb() < 5  # was 4.9 GB and counting when stopped after 60 s


def test_merge_key_bomb_is_refused_before_merging(
    errors_of: Callable[[str], list[str]], memory: Allocations
) -> None:
    # Each level merges the one before twice: PyYAML's flatten doubled its pairs per level.
    merges = "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 60))
    errors = errors_of(HEAD + DEVICE + "m0: &m0 {k0: 1, k1: 2}\n" + merges)
    assert errors == [
        "site.yaml:21 m16: aliases (*name) expand the file past 1,000,000 keys, values and "
        "list items here, the most a config file may have"
    ]
    assert memory.peak_mb() < 5


def test_aliases_that_nest_too_deep_are_refused(errors_of: Callable[[str], list[str]]) -> None:
    chain = "".join(f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 200))
    assert errors_of(HEAD + DEVICE + "x0: &x0 [1]\n" + chain) == [
        "site.yaml:67 x62: aliases (*name) nest this deeper than 64 levels, the most a config "
        "file may have"
    ]


def test_a_merge_chain_is_bounded_like_nesting(errors_of: Callable[[str], list[str]]) -> None:
    # Entries skipped as duplicates are never flattened in order: the last alias then made
    # PyYAML's flatten_mapping recurse through the whole chain.
    chain = "".join(f"d: &d{i} {{<<: *d{i - 1}}}\n" for i in range(1, 1500))
    errors = errors_of(HEAD + DEVICE + "d: 0\nd: &d0 {x: 1}\n" + chain + "e: *d1499\n")
    assert errors == [
        "site.yaml:68 d: aliases (*name) nest this deeper than 64 levels, the most a config "
        "file may have"
    ]


@pytest.mark.parametrize(
    ("nesting", "line"),
    [
        ("devices: " + "[" * 1200 + "]" * 1200 + "\n", 3),
        ("devices: " + "{a: " * 1200 + "1" + "}" * 1200 + "\n", 3),
        ("devices:\n" + "".join(" " * i + "- \n" for i in range(1, 200)), 67),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_deep_nesting_is_a_listed_error(
    errors_of: Callable[[str], list[str]], nesting: str, line: int
) -> None:
    assert errors_of(HEAD + nesting) == [
        f"site.yaml:{line}: nested deeper than 64 levels, the most a config file may have"
    ]


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n")
    data = read_yaml(path, environ={}).data
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(data, list)
        (data,) = data
    assert data == 1


def test_too_many_nodes_are_refused_where_the_limit_is_passed(
    errors_of: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_yaml, "MAX_NODES", 1000)  # a million takes 30 s to compose
    items = "".join(f"  - {i}\n" for i in range(2000))
    assert errors_of(HEAD + "x:\n" + items) == [
        "site.yaml:997: more than 1,000 keys, values and list items, the most a config file "
        "may have"
    ]


def test_limits_are_what_the_readme_says() -> None:
    assert (MAX_FILE_BYTES, MAX_NODES, MAX_DEPTH) == (16 * MB, 1_000_000, 64)
    assert (MIN_INTERVAL_S, MIN_TIMEOUT_S, MIN_BACKOFF_S) == (0.01, 0.05, 0.1)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for text in ("16 MiB", "1,000,000 keys, values and list items", "64 levels"):
        assert text in readme


def test_a_file_past_the_size_limit_is_refused_unread(
    errors_of: Callable[[str], list[str]], memory: Allocations
) -> None:
    line = "# " + "x" * 1021 + "\n"  # 1 KiB a line
    errors = errors_of(HEAD + DEVICE + line * (16 * 1024 + 1))
    assert errors == ["site.yaml:16388: larger than 16 MiB, the most a config file may have"]
    assert memory.peak_mb() < 1.1 * MAX_FILE_BYTES / MB  # the bytes read, and no more


@pytest.mark.slow  # 2-4 s: 25,000 points validated and planned (issue 20 item 3)
def test_a_500_device_site_with_50_inline_points_each_loads(tmp_path: Path) -> None:
    lines = [HEAD.rstrip("\n"), "devices:"]
    for d in range(500):
        lines += [
            f"  - name: meter-{d:03d}",
            "    driver: modbus",
            f"    url: tcp://10.0.{d // 250}.{d % 250 + 1}:502",
            "    interval_s: 0.1",
            "    points:",
        ]
        lines += [
            f"      - {{name: p{p:02d}, address: {2 * p}, type: float32, unit: kWh, "
            f'scale: 0.01, description: "point {p} of meter {d}"}}'
            for p in range(50)
        ]
    (tmp_path / "site.yaml").write_text("\n".join(lines) + "\n")
    loaded = load_config(tmp_path / "site.yaml", environ={})
    assert len(loaded.devices) == 500
    assert sum(len(s.profile.points) for s in loaded.devices if s.profile) == 25_000
    points = [p for s in loaded.devices for p in s.device.points or ()]
    assert len({id(p.model_fields_set) for p in points}) == 1  # one set for 25,000 points


def test_models_given_the_same_keys_share_one_set_of_them(tmp_path: Path) -> None:
    devices = "".join(
        f"  - {{name: m{d}, driver: modbus, url: 'tcp://h:502', device_id: {d + 1}, points: "
        "[{name: a, address: 0, unit: V}, {name: b, address: 1, unit: A}, {name: c, address: 2}]}\n"
        for d in range(3)
    )
    (tmp_path / "site.yaml").write_text(HEAD + "devices:\n" + devices)
    loaded = load_config(tmp_path / "site.yaml", environ={})
    points = [p for s in loaded.devices for p in s.device.points or ()]
    assert len(points) == 9
    assert len({id(p.model_fields_set) for p in points}) == 2  # with unit, and without
    assert points[0].model_fields_set == {"name", "address", "unit"}
    assert points[2].model_fields_set == {"name", "address"}
    copied = points[0].model_copy(update={"scale": 0.1})
    assert copied.model_fields_set == {"name", "address", "unit", "scale"}
    assert points[3].model_fields_set == {"name", "address", "unit"}  # the shared set as it was
    devices_sets = {id(s.device.model_fields_set) for s in loaded.devices}
    assert len(devices_sets) == 1


# --- what the text may hold ---------------------------------------------------------------


def test_control_characters_are_listed_with_line_and_column(
    errors_of: Callable[[str], list[str]],
) -> None:
    text = HEAD + 'devices:\n  - name: "a\x07b"\n    url: "\x1b[0m\x7f\x80"\n'
    assert errors_of(text) == [
        "site.yaml:4: YAML syntax: control character U+0007 is not allowed in YAML (column 13)",
        "site.yaml:5: YAML syntax: control character U+001B is not allowed in YAML (column 11)",
        "site.yaml:5: YAML syntax: control character U+007F is not allowed in YAML (column 15)",
        "site.yaml:5: YAML syntax: control character U+0080 is not allowed in YAML (column 16)",
    ]


def test_at_most_ten_unprintable_characters_are_listed(
    errors_of: Callable[[str], list[str]],
) -> None:
    errors = errors_of(HEAD + "\x00\n" * 50)
    assert errors[0] == (
        "site.yaml:3: YAML syntax: control character U+0000 is not allowed in YAML (column 1)"
    )
    assert len(errors) == 10


def test_bom_and_crlf_are_read_as_text_editors_write_them(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEAD + DEVICE).replace("\n", "\r\n").encode())
    (setup,) = load_config(path, environ={}).devices
    assert setup.device.name == "m"


def test_bytes_that_are_not_utf8_are_placed_at_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.yaml").write_bytes(HEAD.encode() + b"devices:\n  - name: m\xe9ter\n")
    with pytest.raises(ConfigError) as info:
        load_config(Path("site.yaml"), environ={})
    assert [str(i) for i in info.value.issues] == ["site.yaml:4: not UTF-8 text (byte 39)"]


def test_scalars_yaml_cannot_construct_are_listed_and_the_rest_is_checked(
    errors_of: Callable[[str], list[str]],
) -> None:
    text = HEAD + (
        "devices:\n"
        "  - name: m\n"
        "    driver: modbus\n"
        "    url: tcp://h\n"
        "    interval_s: 2024-02-30\n"
        "    timeout_s: !!float fast\n"
        "    device_id: 300\n"
        f"    points: [{{name: v, address: {'9' * 5000}}}]\n"
    )
    assert errors_of(text) == [
        "site.yaml:7 devices[0].interval_s: YAML: cannot read '2024-02-30' as a date "
        "(put it in quotes if it is text)",
        "site.yaml:8 devices[0].timeout_s: YAML: cannot read 'fast' as a number",
        "site.yaml:9 devices[0].device_id: device_id must be at most 255; got 300",
        "site.yaml:10 devices[0].points[0].address: YAML: cannot read "
        "'99999999999999999999'... (5,000 characters) as a whole number "
        "(put it in quotes if it is text)",
    ]


# --- numbers are numbers ------------------------------------------------------------------


def _device(**fields: str) -> str:
    keys = "".join(f", {k}: {v}" for k, v in fields.items())
    return f"devices:\n  - {{name: m, driver: modbus, url: 'tcp://h'{keys}, profile: p}}\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interval_s": "true"}, "devices[0].interval_s: interval_s must be a number of seconds; "
         "got true"),
        ({"device_id": "false"}, "devices[0].device_id: device_id must be a whole number; "
         "got false"),
        ({"timeout_s": "yes"}, "devices[0].timeout_s: timeout_s must be a number of seconds; "
         "got true"),
        ({"interval_s": "1.0e-9"}, "devices[0].interval_s: interval_s must be at least 0.01; "
         "got 1e-09"),
        ({"interval_s": "0"}, "devices[0].interval_s: interval_s must be more than 0.0; got 0"),
        ({"interval_s": ".nan"}, "devices[0].interval_s: interval_s must be a finite number; "
         "got nan"),
        ({"timeout_s": "0.01"}, "devices[0].timeout_s: timeout_s must be at least 0.05; got 0.01"),
        ({"backoff_max_s": "0.05"}, "devices[0].backoff_max_s: backoff_max_s must be at least "
         "0.1; got 0.05"),
    ],
)  # fmt: skip
def test_numbers_are_numbers_and_polls_have_a_floor(
    errors_of: Callable[[str], list[str]], tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("points: [{name: v, address: 0}]\n")
    assert errors_of(HEAD + _device(**fields)) == [f"site.yaml:4 {message}"]


def test_the_floors_themselves_and_env_numbers_load(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("points: [{name: v, address: 0, scale: 0.1}]\n")
    site = tmp_path / "site.yaml"
    fields = {"interval_s": "0.01", "timeout_s": "0.05", "backoff_max_s": "0.1"}
    site.write_text(HEAD + _device(**fields, device_id="'${UNIT}'"))
    (setup,) = load_config(site, environ={"UNIT": "7"}).devices
    assert isinstance(setup.device, ModbusDevice)
    assert (setup.device.interval_s, setup.device.timeout_s, setup.device.backoff_max_s) == (
        0.01,
        0.05,
        0.1,
    )
    assert setup.device.device_id == 7


def test_models_refuse_booleans_outside_a_file_too() -> None:
    with pytest.raises(ValidationError) as info:
        ModbusDevice(name="m", driver="modbus", url="tcp://h", profile="p", interval_s=True)
    (error,) = info.value.errors()
    assert (error["type"], error["loc"]) == ("bool_not_number", ("interval_s",))
    assert error["msg"] == "expected a number of seconds, got a boolean"


# --- the other YAML files the program reads -----------------------------------------------


def test_a_tariff_calendar_is_read_within_the_limits(tmp_path: Path, memory: Allocations) -> None:
    calendar = tmp_path / "cal.yaml"
    calendar.write_text("name: x\n" + BOMB)
    memory.mark()
    with pytest.raises(ValueError) as info:
        load_calendar(calendar)
    assert str(info.value) == (
        f"{calendar}:8 g: aliases (*name) expand the file past 1,000,000 keys, values and "
        "list items here, the most a config file may have"
    )
    assert memory.peak_mb() < 5
    calendar.write_text("name: x\nversions: [\x00]\n")
    with pytest.raises(ValueError, match=r"cal.yaml:2: YAML syntax: control character U\+0000"):
        load_calendar(calendar)


def test_a_duplicate_key_in_a_data_file_is_an_error_not_a_silent_choice(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("envelope: a\nrecord: b\nrecord: c\n")
    with pytest.raises(ValueError) as info:
        read_data(path)
    assert str(info.value) == f"{path}:3 record: duplicate key 'record' (first at line 2)"


def test_coefficient_tables_are_read_within_the_limits(tmp_path: Path) -> None:
    (tmp_path / "energy").mkdir()  # the site's own tables, first in the catalog's order
    table = tmp_path / "energy" / "standard-coal.yaml"
    table.write_text("tables: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ValueError) as info:
        load_coefficients("a", "b", site_dir=tmp_path)
    assert str(info.value) == (
        f"{table}:1: nested deeper than 64 levels, the most a config file may have"
    )


def test_an_uplink_template_is_read_within_the_limits(
    errors_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text("envelope: x\nrecord: y\n" + BOMB)
    uplink = (
        "uplink:\n  endpoints:\n    - {name: p, url: 'http://127.0.0.1:9/x', template: t.yaml}\n"
    )
    assert errors_of(HEAD + DEVICE + uplink) == [
        "site.yaml:7 uplink.endpoints[0].template: t.yaml:9 g: aliases (*name) expand the "
        "file past 1,000,000 keys, values and list items here, the most a config file may have"
    ]


# --- found by the fuzz tests ----------------------------------------------------------------


def test_a_profile_name_too_long_for_a_file_name_is_a_listed_error(
    errors_of: Callable[[str], list[str]],
) -> None:
    # The lookup stat()ed profiles/<300 x>.yaml: OSError "File name too long".
    assert errors_of(HEAD + _device().replace("profile: p", f"profile: {'x' * 300}")) == [
        "site.yaml:4 devices[0].profile: profile should have at most 64 characters"
    ]


def test_an_empty_list_of_inline_points_is_a_listed_error(
    errors_of: Callable[[str], list[str]],
) -> None:
    # The model took it; building the inline profile then raised outside validation.
    text = HEAD + "devices:\n  - {name: m, driver: modbus, url: 'tcp://h', points: []}\n"
    assert errors_of(text) == [
        "site.yaml:4 devices[0].points: points needs at least 1 entry; got none"
    ]

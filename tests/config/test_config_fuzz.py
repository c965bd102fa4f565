"""Fuzzing the config loader: mutants of the golden sites, and generated values in every key.

Every case ends in a LoadedConfig or a ConfigError whose issues each name a file and a
line (an empty file has no line to name), never another exception; within a memory bound
per case (the peak of Python's allocations, tracemalloc) and a time bound (pytest-timeout).
The mutation corpus is seeded, so a failing case reruns as it failed: its id is its seed.
A few cases go through the real CLI: exit 2, the listed errors, no traceback.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config.document import read_yaml
from edge_agent.config.site import ConfigError, LoadedConfig, load_config
from tests.allocations import Allocations, traced

REPO = Path(__file__).resolve().parents[2]
VALID = REPO / "tests" / "configs" / "valid"
INVALID = Path("tests") / "configs" / "invalid"
EDGE_AGENT = Path(sys.executable).with_name("edge-agent")
# Pinned: the corpus (case k mutates SEEDS[k % len]) must not reshuffle when a golden case
# is added, or test_the_mutants_reach_every_limit loses the mutants that reach a limit.
SEEDS = ["dlt645-meter", "opcua-plc", "profiles-dir", "rtu-bus-inline", "tcp-profile"]
ENV = {"MQTT_PASSWORD": "pw"}
PEAK_MB = 64  # a golden site needs about 2 MB; the hostile snippets below stay under 10
CASES = 240

ALIAS_BOMB = "lol0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)
)
HOSTILE_SNIPPETS = [
    ALIAS_BOMB,
    "m0: &m0 {a: 1, b: 2}\n"
    + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 40)),
    "c0: &c0 [1]\n" + "".join(f"c{i}: &c{i} [*c{i - 1}]\n" for i in range(1, 120)),
    "deep: " + "[" * 3000 + "]" * 3000 + "\n",
    "deep: " + "{a: " * 500 + "1" + "}" * 500 + "\n",
    "".join(" " * i + "- x:\n" for i in range(0, 400, 2)),
    "self: &s [*s, *s]\n",
    "? [complex, key]\n: 1\n",
    "%YAML 1.1\n---\nsite: s\n",
    "---\nsecond: document\n",
    "bad: *undefined\n",
    "tagged: !!python/object/apply:os.system [echo]\n",
    "merge: {<<: 5}\n",
    "bin: !!binary not*base64\n",
    "when: !!timestamp yesterday\n",
    "big: " + "7" * 6000 + "\n",
    "long: " + "x" * 200_000 + "\n",
    "a: &dup 1\nb: &dup 2\n",
    "\t- tabbed\n",
    "{",
    "- [",
    "key: 'unclosed\n",
    'key: "\\xZZ"\n',
    "|\n  block\n",
]
HOSTILE_VALUES = [
    "true", "false", "yes", "off", "null", "~", "[]", "{}", "[1, 2]", "{a: 1}", "''", "-1",
    "0", "1e-9", "1.0e-9", "1e400", "-.inf", ".nan", "0x10000", "0o777", "1_000", "65536",
    "2024-02-30", "2024-01-01", "12:30:00", "!!int x", "!!float y", "!!bool maybe", "*nope",
    "&a", "<<", "'${UNSET}'", "'$${'", "\"\\u0000\"", "x" * 300, "9" * 5000,
]  # fmt: skip
GARBAGE_CHARS = ["\x00", "\x07", "\x1b", "\x7f", "\x80", "\x9f", "\ufffe", "\u2028", "\ufeff"]


def _mutate(text: str, rng: random.Random) -> bytes:
    """One to three mutations of a site or profile file's text, as the bytes to write."""
    lines = text.splitlines(keepends=True) or ["\n"]
    data: bytes | None = None
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(lines))
        # Weighted so that most mutants get past the YAML syntax to the limits and models.
        match rng.choices(range(8), weights=[30, 20, 8, 4, 10, 6, 8, 14])[0]:
            case 0:  # a hostile value for a key
                head, sep, _ = lines[at].partition(": ")
                if sep:
                    lines[at] = f"{head}: {rng.choice(HOSTILE_VALUES)}\n"
            case 1:  # a hostile snippet at the top level
                lines.append("\n" + rng.choice(HOSTILE_SNIPPETS))
            case 2:  # a character YAML does not allow, or one it reads differently
                line = lines[at]
                pos = rng.randrange(len(line) + 1)
                lines[at] = line[:pos] + rng.choice(GARBAGE_CHARS) + line[pos:]
            case 3:  # tabs for the indentation
                stripped = lines[at].lstrip(" ")
                lines[at] = "\t" * ((len(lines[at]) - len(stripped)) // 2) + stripped
            case 4:  # a line twice, or none
                if rng.random() < 0.5:
                    lines.insert(at, lines[at])
                elif len(lines) > 1:
                    del lines[at]
            case 5:  # two lines swapped
                other = rng.randrange(len(lines))
                lines[at], lines[other] = lines[other], lines[at]
            case 6:  # one character of YAML syntax inserted
                line = lines[at]
                pos = rng.randrange(len(line) + 1)
                lines[at] = line[:pos] + rng.choice("[]{}:-&*!|>'\"#%@`,?") + line[pos:]
            case _:  # the bytes: truncated, garbage, BOM, UTF-16
                raw = "".join(lines).encode("utf-8")
                kind = rng.randrange(4)
                if kind == 0:
                    data = raw[: rng.randrange(len(raw) + 1)]
                elif kind == 1:
                    pos = rng.randrange(len(raw) + 1)
                    data = raw[:pos] + rng.randbytes(rng.randint(1, 64)) + raw[pos:]
                elif kind == 2:
                    data = b"\xef\xbb\xbf" + raw
                else:
                    data = "".join(lines).encode("utf-16")
                return data
    return "".join(lines).encode("utf-8")


def _check_outcome(load: Callable[[], LoadedConfig]) -> None:
    """The load ends in a config or in issues that each have a file and a line."""
    try:
        load()
    except ConfigError as exc:
        for issue in exc.issues:
            assert issue.file.name, issue
            if "is empty" not in issue.message:
                assert issue.line is not None and issue.line >= 1, str(issue)


@pytest.fixture
def memory() -> Iterator[Allocations]:
    with traced() as allocations:
        yield allocations


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(CASES))
def test_mutant_gets_a_config_or_listed_errors(
    seed: int, tmp_path: Path, memory: Allocations
) -> None:
    rng = random.Random(seed)
    case = tmp_path / "site"
    shutil.copytree(VALID / SEEDS[seed % len(SEEDS)], case)
    targets = sorted(case.rglob("*.yaml"))
    target = targets[0] if rng.random() < 0.75 else rng.choice(targets)  # site.yaml first
    target.write_bytes(_mutate(target.read_text(encoding="utf-8"), rng))
    memory.mark()
    _check_outcome(lambda: load_config(case / "site.yaml", environ=ENV))
    assert memory.peak_mb() < PEAK_MB


def test_the_mutants_reach_every_limit() -> None:
    """The corpus is not vacuous: its cases hit the limits and the listed YAML errors."""
    seen: set[str] = set()
    markers = ("aliases (*name)", "nested deeper", "not allowed in YAML", "not UTF-8", "YAML")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(CASES):
            rng = random.Random(seed)
            path = Path(tmp) / "site.yaml"
            text = (VALID / SEEDS[seed % len(SEEDS)] / "site.yaml").read_text(encoding="utf-8")
            rng.random()  # the choice of the target file, as in the test above
            path.write_bytes(_mutate(text, rng))
            try:
                read_yaml(path, environ=ENV)
            except ConfigError as exc:
                seen |= {m for m in markers for x in exc.issues if m in x.message}
    assert seen == set(markers)


# --- generated values at every path of a valid site ----------------------------------------


def _paths(node: object, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield loc
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*loc, index))


def _replaced(node: object, loc: tuple[str | int, ...], value: object) -> object:
    if not loc:
        return value
    head, rest = loc[0], loc[1:]
    if isinstance(node, dict):
        return {k: _replaced(v, rest, value) if k == head else v for k, v in node.items()}
    assert isinstance(node, list) and isinstance(head, int)
    return [_replaced(v, rest, value) if i == head else v for i, v in enumerate(node)]


SITES = {name: read_yaml(VALID / name / "site.yaml", environ=ENV).data for name in SEEDS}
SITE_PATHS = [(name, loc) for name, data in SITES.items() for loc in _paths(data) if loc]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from([0, 1, -1, 0.01, 1e-9, 65535, 65536, "1", "true", "${X}"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.timeout(300)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(where=st.sampled_from(SITE_PATHS), value=values)
def test_any_value_anywhere_gets_a_config_or_listed_errors(
    where: tuple[str, tuple[str | int, ...]], value: object
) -> None:
    name, loc = where
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / name
        shutil.copytree(VALID / name, case)
        data = _replaced(SITES[name], loc, value)
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        (case / "site.yaml").write_text(text, encoding="utf-8")
        _check_outcome(lambda: load_config(case / "site.yaml", environ=ENV))


@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8")))
def test_any_bytes_get_a_config_or_listed_errors(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.yaml"
        path.write_bytes(raw)
        _check_outcome(lambda: load_config(path, environ={}))


# --- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["alias-bomb", "deep-nesting", "control-character", "boolean-numbers", "unreadable-scalars"],
)
def test_check_lists_the_errors_and_exits_2_without_a_traceback(case: str) -> None:
    site = INVALID / case / "site.yaml"
    done = subprocess.run(
        [str(EDGE_AGENT), "check", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    expected = (REPO / INVALID / case / "expected-errors.txt").read_text(encoding="utf-8")
    assert done.stderr.rstrip("\n") == expected.rstrip("\n")
    assert done.stdout == ""


def test_check_of_a_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_bytes(b"site: s\ngateway: \xff\xfe\n")
    done = subprocess.run(
        [str(EDGE_AGENT), "check", "site.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "site.yaml:2: not UTF-8 text (byte 17)\n1 error in site.yaml\n\n",
    )

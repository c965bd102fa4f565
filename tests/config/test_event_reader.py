"""The event reader (libyaml's events straight to data) reads what the composer reads.

A file without anchors, aliases or merge keys is read from libyaml's events with no YAML
nodes (edge_agent/config/document.py, _EventReader); anything else is composed into nodes
and walked, as before. Both must give the same data, lines, ${...} templates, issues and
limits, byte for byte in every message: checked here on the golden sites, the fuzz corpus
of mutants, and the hostile snippets.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from edge_agent.config import document
from edge_agent.config.document import Lines, read_yaml
from edge_agent.config.errors import ConfigError
from tests.config.test_config_fuzz import HOSTILE_SNIPPETS, HOSTILE_VALUES, SEEDS, _mutate

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "tests" / "configs"
FILE = Path("site.yaml")
ENV = {"MQTT_PASSWORD": "pw", "EMPTY": ""}

Outcome = tuple[object, ...]


def _document(doc: document.Document) -> Outcome:
    # repr: `.nan` is not equal to itself
    return ("read", repr(doc.data), dict(doc.lines), doc.templates, doc.issues)


def by_events(text: str) -> Outcome:
    try:
        return _document(document._EventReader(text, FILE, ENV).read())
    except document._Fallback:
        return ("composed",)
    except document._Limit as exc:
        return ("limit", exc.line, exc.loc, exc.message)
    except yaml.YAMLError:
        return ("refused",)


def by_nodes(text: str) -> Outcome:
    try:
        return _document(document._compose(document._FastLoader(text), text, FILE, ENV))
    except ConfigError as exc:  # a limit
        (issue,) = exc.issues
        loc: tuple[object, ...] = () if not issue.path else (issue.path,)
        return ("limit", issue.line, loc, issue.message)
    except yaml.YAMLError:
        return ("refused",)


def _texts() -> list[tuple[str, str]]:
    texts = [(str(p.relative_to(CONFIGS)), p.read_text()) for p in sorted(CONFIGS.rglob("*.yaml"))]
    for seed in range(400):
        rng = random.Random(seed)
        text = (CONFIGS / "valid" / SEEDS[seed % len(SEEDS)] / "site.yaml").read_text()
        try:
            mutant = _mutate(text, rng).decode("utf-8")
        except UnicodeDecodeError:
            continue
        texts.append((f"mutant {seed}", mutant))
    texts += [(f"snippet {i}", s) for i, s in enumerate(HOSTILE_SNIPPETS)]
    texts += [(f"value {v[:20]!r}", f"a: {v}\nb: [{v}]\n") for v in HOSTILE_VALUES]
    texts += [
        ("empty", ""),
        ("comment only", "# nothing\n"),
        ("null root", "~\n"),
        ("scalar root", "5\n"),
        ("list root", "- a\n-\n- [b, {c: d}]\n"),
        ("non-scalar keys", "{[a, b]: 1, {c: d}: 2, e: 3}\n"),
        ("block keys", "? - a\n  - b\n: value\nz: 1\n"),
        ("duplicates", "a: 1\nb:\n  c: [1, 2]\na:\n  - {x: !!int nope}\n  - ${UNSET}\n"),
        ("env", "a: ${MQTT_PASSWORD}\nb: '${EMPTY:-d}'\nc: \"$${x}\"\nd: ${UNSET}\ne: ${1bad}\n"),
        ("env unclosed", "a: [x${MQTT_PASSWORD, y]\n"),
        ("tags", "a: !!str 1\nb: !!int '2'\nc: ! 3\nd: !!float x\ne: !!binary aGk=\n"),
        ("tagged key", "!!str a: 1\n"),
        ("quoted merge key", "'<<': {a: 1}\n"),
        ("value key", "=: 1\n"),
        ("value value", "a: =\n"),
        ("multi-line", "a: |\n  one\n  two\nb: >-\n  folded\n  text\nc:\n  plain\n  more\n"),
        ("dates", "a: 2024-01-01\nb: 2024-01-01 10:00:00\nc: 2024-02-30\n"),
        ("numbers", "a: [0x1F, 0o17, 1_000, 1e3, .inf, -.inf, .nan, 017, 1:30, +5]\n"),
        ("explicit end", "a: 1\n...\n"),
        ("two documents", "a: 1\n---\nb: 2\n"),
        ("anchors", "a: &x {b: 1}\nc: *x\n"),
        ("merge", "a: {<<: {b: 1}, c: 2}\n"),
        ("same line", "a: {b: {c: [d, {e: f}]}}\ng: [h,\n  i, {j:\n   k}]\n"),
        ("cached repeats", "".join(f"- {{n: p{i % 3}, v: {i % 2}.5, u: kWh}}\n" for i in range(9))),
    ]
    return texts


TEXTS = _texts()


@pytest.mark.parametrize(("name", "text"), TEXTS, ids=[n for n, _ in TEXTS])
def test_events_read_what_the_nodes_read(name: str, text: str) -> None:
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read_yaml decodes
    if yaml.reader.Reader.NON_PRINTABLE.search(text):
        pytest.skip("refused before either reader (unprintable characters)")
    events = by_events(text)
    if events == ("composed",):
        assert any(mark in text for mark in ("&", "*", "<<", "!", "---")), text
        return
    assert events == by_nodes(text)


def test_the_comparison_is_not_vacuous() -> None:
    """Many texts go through the event reader to the end, and reading, refusing, limits
    and handing over to the composer all happen."""
    outcomes = [by_events(t.replace("\r", "\n"))[0] for _, t in TEXTS]
    assert outcomes.count("read") > 200
    assert {"read", "composed", "refused", "limit"} <= set(outcomes)


def test_a_point_on_one_line_stores_one_line() -> None:
    text = "devices:\n  - name: m\n    points:\n      - {name: v, address: 1, type: float32}\n"
    doc = document._EventReader(text, FILE, {}).read()
    assert doc.lines._stored == {(): 1, ("devices", 0, "points"): 3}  # type: ignore[attr-defined]
    items = doc.lines._items  # type: ignore[attr-defined]
    assert {loc: list(lines) for loc, lines in items.items()} == {
        ("devices",): [2],
        ("devices", 0, "points"): [4],
    }
    assert doc.lines[("devices", 0, "points", 0, "type")] == 4
    assert doc.lines[("devices",)] == 1
    assert len(doc.lines) == 9
    with pytest.raises(KeyError):
        doc.lines[("devices", 0, "points", 0, "scale")]


def test_the_keys_of_many_points_are_one_string_each() -> None:
    """A key written 25,000 times is one string, not 25,000 that die with the read data
    and leave holes in the agent's memory (issue 20); the data reads the same."""
    points = "".join(
        f"      - {{name: p{p}, address: {p}, unit: kWh, description: 'point {p}'}}\n"
        for p in range(3)
    )
    text = "devices:\n" + "".join(f"  - name: m{d}\n    points:\n{points}" for d in range(2))
    doc = document._EventReader(text, FILE, {}).read()
    assert doc.data == yaml.safe_load(text)
    assert isinstance(doc.data, dict)
    keys = [k for device in doc.data["devices"] for point in device["points"] for k in point]
    assert len(keys) == 24 and len({id(k) for k in keys}) == 4  # name, address, unit, ...
    first = doc.data["devices"][0]
    assert [id(k) for k in first] == [id(k) for k in doc.data["devices"][1]]


def test_the_site_file_is_read_from_events(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: s\ngateway: g\nmqtt: {password: '${MQTT_PASSWORD}'}\n")
    doc = read_yaml(path, environ=ENV)
    assert isinstance(doc.lines, Lines)
    assert doc.lines._stored == {(): 1, ("gateway",): 2, ("mqtt",): 3}  # type: ignore[attr-defined]
    assert doc.templates == {("mqtt", "password"): ("${MQTT_PASSWORD}", "pw")}

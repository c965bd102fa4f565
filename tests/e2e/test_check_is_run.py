"""`check` = `run`: on 1,200 mutated configs, whatever a start refuses, `check` refused first.

The golden configs (every driver, energy with a tariff and a hierarchy, alarms, an uplink with
a template and a CA file, TLS to the broker) are mutated at random: keys deleted or renamed,
values of the wrong type, references broken, names duplicated, files that do not exist,
variables that are not set. For every mutant:

- `edge-agent check` exits 0 or 2, never with a traceback;
- when it exits 2, `run` exits 2 with the very same messages before starting anything;
- when it exits 0, everything `run`, `ingest` and `simulate` build from the config before
  their first poll or connection is built without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.registry import PROTOCOLS
from edge_agent.catalog import shipped_demo
from edge_agent.cli.main import main, start_agent
from edge_agent.cli.simulation import specs
from edge_agent.config.site import ConfigError, load_config
from edge_agent.ingest.service import Ingest
from tests.fixtures.mosquitto import make_certificates

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "configs" / "valid"
MUTANTS = int(os.environ.get("MUTANTS", "1200"))
ENV = {"MQTT_PASSWORD": "not-a-secret", "INFLUX_TOKEN": "not-a-token"}

Doc = dict[str, Any]
Mutation = Callable[[random.Random, Doc], str]


def _rich_site(folder: Path) -> Path:
    """The demo site with every optional block that names a file or another entry."""
    ca, _ = make_certificates(folder / "certs")
    site: Doc = yaml.safe_load(shipped_demo().read_text())
    site["mqtt"]["tls"] = {"ca_file": str(ca.relative_to(folder))}
    site["mqtt"]["url"] = "mqtts://127.0.0.1:1"
    site["mqtt"]["username"] = "gw"
    site["mqtt"]["password"] = "${MQTT_PASSWORD}"
    site["outbox"] = {"path": "var/outbox.sqlite"}
    site["uplink"] = {
        "endpoints": [
            {
                "name": "province",
                "url": "https://127.0.0.1:1/energy",
                "template": "example-province",
                "ca_file": str(ca.relative_to(folder)),
            }
        ]
    }
    path = folder / "rich.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False, allow_unicode=True))
    return path


def _bases(tmp: Path) -> list[Path]:
    """Each golden config in a folder of its own (with its profiles), plus the rich site."""
    bases = []
    for case in sorted(GOLDEN.iterdir()):
        shutil.copytree(case, tmp / case.name)
        bases.append(tmp / case.name / "site.yaml")
    rich = tmp / "rich"
    rich.mkdir()
    bases.append(_rich_site(rich))
    example = tmp / "example"
    example.mkdir()
    site: Doc = yaml.safe_load((ROOT / "configs" / "site.example.yaml").read_text())
    ca, _ = make_certificates(example / "certs")
    site["mqtt"]["tls"]["ca_file"] = str(ca)
    (example / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    bases.append(example / "site.yaml")
    return bases


# --- mutations of the parsed document ------------------------------------------------------


def _walk(node: object, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def _parent(doc: Doc, path: tuple[Any, ...]) -> Any:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    return node


def _pick(rng: random.Random, doc: Doc, want: Callable[[Any], bool]) -> tuple[Any, ...] | None:
    found = [p for p, node in _walk(doc) if p and want(node)]
    return rng.choice(found) if found else None


def _delete_key(rng: random.Random, doc: Doc) -> str:
    path = _pick(rng, doc, lambda _: True)
    if path is None or not isinstance(path[-1], str):
        return "nothing"
    del _parent(doc, path)[path[-1]]
    return f"delete {path}"


def _rename_key(rng: random.Random, doc: Doc) -> str:
    path = _pick(rng, doc, lambda _: True)
    if path is None or not isinstance(path[-1], str):
        return "nothing"
    parent = _parent(doc, path)
    key = path[-1]
    typo = key[:-1] if len(key) > 1 else key + "x"
    parent[typo] = parent.pop(key)
    return f"rename {path} -> {typo}"


WRONG = [
    True, False, None, 0, -1, 1e-9, 1e308, "text", "", "${UNSET_VARIABLE_FOR_TEST}",
    [], {}, [1, 2], {"a": 1}, "1e999", 65536, "../../../etc/passwd",
]  # fmt: skip


def _wrong_value(rng: random.Random, doc: Doc) -> str:
    path = _pick(rng, doc, lambda node: not isinstance(node, (dict, list)))
    if path is None:
        return "nothing"
    value = rng.choice(WRONG)
    _parent(doc, path)[path[-1]] = copy.deepcopy(value)
    return f"set {path} = {value!r}"


def _duplicate(rng: random.Random, doc: Doc) -> str:
    path = _pick(rng, doc, lambda node: isinstance(node, list) and node)
    if path is None:
        return "nothing"
    items = _parent(doc, path)[path[-1]]
    items.append(copy.deepcopy(rng.choice(items)))
    return f"duplicate an item of {path}"


REFERENCES = ("point", "setpoint", "meters", "formula", "parent", "profile", "tariff")


def _break_reference(rng: random.Random, doc: Doc) -> str:
    path = _pick(rng, doc, lambda _: True)
    candidates = [p for p, _ in _walk(doc) if p and p[-1] in REFERENCES]
    if not candidates:
        return "nothing"
    path = rng.choice(candidates)
    parent = _parent(doc, path)
    value = parent[path[-1]]
    if isinstance(value, list) and value:
        value[rng.randrange(len(value))] = "no-such-thing"
    else:
        parent[path[-1]] = f"{value}-missing" if isinstance(value, str) else "no-such-thing"
    return f"break {path}"


FILE_KEYS = ("ca_file", "cert_file", "key_file", "template", "tariff", "profiles_dir", "path")


def _missing_file(rng: random.Random, doc: Doc) -> str:
    candidates = [p for p, _ in _walk(doc) if p and p[-1] in FILE_KEYS]
    if not candidates:
        mqtt = doc.setdefault("mqtt", {}) if isinstance(doc, dict) else {}
        if isinstance(mqtt, dict):
            mqtt["tls"] = {"ca_file": "no/such/ca.pem"}
        return "add a missing mqtt CA file"
    path = rng.choice(candidates)
    _parent(doc, path)[path[-1]] = "no/such/file.yaml"
    return f"missing file at {path}"


MUTATIONS: list[Mutation] = [
    _delete_key,
    _rename_key,
    _wrong_value,
    _wrong_value,
    _duplicate,
    _break_reference,
    _break_reference,
    _missing_file,
]


# --- the two paths ----------------------------------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, err.getvalue()


async def _start_everything(path: Path) -> None:
    """What run, ingest and simulate build before they poll, connect or listen."""
    loaded = load_config(path)
    agent = start_agent(loaded)
    agent.outbox.open()
    agent.outbox.close()
    Ingest(loaded)
    for protocol in PROTOCOLS:
        specs(loaded, protocol)


@pytest.mark.timeout(600)
def test_check_refuses_whatever_run_refuses_on_mutated_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("UNSET_VARIABLE_FOR_TEST", raising=False)
    bases = _bases(tmp_path)
    for base in bases:  # the unmutated configs are good: a mutant's refusal is its own
        code, err = _cli(["check", str(base)])  # warnings (modicon-looking) are not errors
        assert code == 0 and all(x.startswith("warning: ") for x in err.splitlines()), base
    rng = random.Random(15)
    refused = started = 0
    outcomes: dict[str, int] = {}
    for n in range(MUTANTS):
        base = bases[n % len(bases)]
        doc = yaml.safe_load(base.read_text())
        what = rng.choice(MUTATIONS)(rng, doc)
        mutant = base.with_name(f"mutant-{n:04d}.yaml")
        mutant.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        code, err = _cli(["check", str(mutant)])
        context = f"mutant {n} of {base.parent.name} ({what}):\n{err}"
        assert "Traceback" not in err, context
        assert code in (0, 2), context
        if code == 2:
            refused += 1
            assert err.strip(), context
            run_code, run_err = _cli(["run", str(mutant), "--http", "off"])
            assert (run_code, run_err) == (2, err), context
            outcomes[what.split()[0]] = outcomes.get(what.split()[0], 0) + 1
            continue
        started += 1
        try:
            asyncio.run(_start_everything(mutant))
        except ConfigError as exc:
            pytest.fail(f"{context}check said ok, the start refused:\n{exc}")
    # The mutations do reach both outcomes, in numbers (not a vacuous pass).
    assert refused + started == MUTANTS
    assert refused > MUTANTS // 3, outcomes
    assert started > MUTANTS // 10

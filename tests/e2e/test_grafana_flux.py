"""The generated dashboards' Flux, through a real Flux parser and type checker.

No InfluxDB or Grafana runs on this machine, so the queries go to flux-lsp, the official Flux
language server (npm @influxdata/flux-lsp-node: InfluxData's Rust Flux parser and semantic
analysis compiled to WASM), run with Node.js and driven over LSP. Every query of every
dashboard `edge-agent grafana generate (the shipped demo)` writes (panel targets and variable
queries) is expanded as Grafana expands it before InfluxDB sees it: template variables in the
browser (`${site}`, `${area}`, `${device:regex}` for each value the dashboard offers), then
`v.timeRangeStart`, `v.timeRangeStop` and `v.windowPeriod` by Grafana's backend, which puts
literals in their place. Each expanded query must get no error diagnostic: syntax, undefined
identifiers, unknown or ill-typed function arguments, invalid regular expressions.

It is a compile check, not a run: names are checked against a real ingest run in
test_grafana_dashboards.py; results are checked nowhere, no InfluxDB runs here.

scripts/test installs the package (scripts/bootstrap --npm, into .venv/node). Without `node`
this test fails; EDGE_AGENT_NO_NODE=1 skips it instead.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.catalog import shipped_demo
from edge_agent.config.site import LoadedConfig, load_config
from edge_agent.grafana.dashboards import write

REPO = Path(__file__).resolve().parents[2]
DEMO = shipped_demo()
FLUX_LSP = REPO / ".venv" / "node" / "node_modules" / "@influxdata" / "flux-lsp-node"

# What Grafana's backend puts in place of its Flux macros (pkg/tsdb/influxdb/flux/macros.go):
# the range as RFC 3339 UTC times, the interval as Go's Duration.String().
RANGE_START = "2026-10-31T16:00:00Z"
RANGE_STOP = "2026-11-01T16:00:00Z"
WINDOW_PERIOD = "1m0s"

_DRIVER = r"""
// stdin: {"module": dir, "docs": [{"uri", "text"}]}; stdout: {"uri": [diagnostic, ...]}
for (const k of ['log', 'info', 'debug', 'warn']) console[k] = (...a) => console.error(...a);
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', async () => {
  const req = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const { Lsp } = require(req.module);
  const lsp = new Lsp();
  const found = {};
  let open = null;
  lsp.onMessage((raw) => {
    const msg = JSON.parse(raw);
    const uri = msg.params && msg.params.uri;
    // The first publication after didOpen is the document's; later ones may re-publish others.
    if (msg.method === 'textDocument/publishDiagnostics' && uri === open && !(uri in found)) {
      found[uri] = msg.params.diagnostics;
    }
  });
  lsp.run().catch((e) => { console.error('flux-lsp stopped: ' + e); process.exit(3); });
  const send = (o) => lsp.send(JSON.stringify({ jsonrpc: '2.0', ...o }));
  const init = { processId: null, rootUri: null, capabilities: {} };
  await send({ id: 1, method: 'initialize', params: init });
  await send({ method: 'initialized', params: {} });
  for (const doc of req.docs) {
    open = doc.uri;
    const textDocument = { uri: doc.uri, languageId: 'flux', version: 1, text: doc.text };
    await send({ method: 'textDocument/didOpen', params: { textDocument } });
    open = null;
    await send({ method: 'textDocument/didClose', params: { textDocument: { uri: doc.uri } } });
    if (!(doc.uri in found)) { console.error('no diagnostics for ' + doc.uri); process.exit(4); }
  }
  process.stdout.write(JSON.stringify(found));
  process.exit(0);
});
"""


class FluxLsp:
    """flux-lsp in one Node.js process per call: Flux texts in, their diagnostics out."""

    def __init__(self, node: str, driver: Path) -> None:
        self.node, self.driver = node, driver

    def diagnostics(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        docs = [{"uri": f"file:///query-{i}.flux", "text": t} for i, t in enumerate(texts)]
        request = json.dumps({"module": str(FLUX_LSP), "docs": docs})
        run = subprocess.run(
            [self.node, str(self.driver)],
            input=request,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, f"flux-lsp driver exited {run.returncode}: {run.stderr}"
        found: dict[str, list[dict[str, Any]]] = json.loads(run.stdout)
        return [found[d["uri"]] for d in docs]


@pytest.fixture(scope="module")
def flux_lsp(tmp_path_factory: pytest.TempPathFactory) -> FluxLsp:
    if os.environ.get("EDGE_AGENT_NO_NODE") == "1":
        pytest.skip("EDGE_AGENT_NO_NODE=1: the Flux parser check is skipped")
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node not found: the Flux parser check runs flux-lsp with Node.js. Run scripts/test "
            "(its scripts/bootstrap installs Debian's nodejs and npm as root), or set "
            "EDGE_AGENT_NO_NODE=1 to skip this check."
        )
    if not (FLUX_LSP / "package.json").is_file():
        pytest.fail(
            f"{FLUX_LSP.relative_to(REPO)} is missing: run scripts/test, or the "
            "`scripts/bootstrap --npm @influxdata/flux-lsp-node@VERSION` line in it."
        )
    driver = tmp_path_factory.mktemp("flux-lsp") / "driver.js"
    driver.write_text(_DRIVER)
    return FluxLsp(node, driver)


# Grafana's variable syntaxes: ${name}, ${name:format}, $name, [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # Grafana's kbn.regexEscape
_MACRO = re.compile(r"([a-zA-Z]+)\.([a-zA-Z]+)")  # as macros.go finds them


class Option(str):
    """A custom variable's option: its value, with its display text (`${name:text}`)."""

    text: str

    def __new__(cls, value: str, text: str) -> Option:
        option = super().__new__(cls, value)
        option.text = text
        return option


def _format(value: str | list[str], fmt: str | None) -> str:
    """A variable's value as Grafana's template service formats it."""
    if fmt == "text":
        return value.text if isinstance(value, Option) else str(value)
    if fmt == "regex":
        escaped = [_REGEX_SPECIAL.sub(r"\\\g<0>", v) for v in _listed(value)]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(_listed(value))
    if fmt in (None, "raw"):  # the Flux data source passes no format of its own
        return value if isinstance(value, str) else "{" + ",".join(value) + "}"
    raise AssertionError(f"variable format {fmt!r}: teach _format what Grafana does with it")


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def grafana_expand(query: str, values: Mapping[str, str | list[str]]) -> str:
    """The query as InfluxDB gets it from Grafana, for the given variable values."""

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        if name in ("__interval", "__interval_ms"):
            return {"__interval": "1m", "__interval_ms": "60000"}[name]
        assert name in values, f"${name} is no variable of the dashboard"
        return _format(values[name], m.group(2))

    text = _VARIABLE.sub(variable, query)
    macros = {
        "timeRangeStart": RANGE_START,
        "timeRangeStop": RANGE_STOP,
        "windowPeriod": WINDOW_PERIOD,
    }
    return _MACRO.sub(lambda m: macros.get(m.group(2), m.group(0)), text)


def _variable_values(board: Mapping[str, Any], devices: list[str]) -> dict[str, list[Any]]:
    """Each variable's values to try: the one site; every area; all devices, or one."""
    values: dict[str, list[Any]] = {}
    for var in board["templating"]["list"]:
        name = var["name"]
        if var["type"] == "custom":
            values[name] = [Option(o["value"], o["text"]) for o in var["options"]]
        elif var.get("includeAll") or var.get("multi"):
            # The tag's values come from InfluxDB; the config's devices stand for them.
            values[name] = [devices, devices[:1]]
        else:
            values[name] = [var["current"]["value"]]
    return values


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title and refId, or the variable
    text: str


def _queries(board: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["query"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']!r}", var["query"]


def expanded_queries(boards: Mapping[str, Mapping[str, Any]], devices: list[str]) -> list[Query]:
    """Every query of every board, once per combination of the values of its variables."""
    out: list[Query] = []
    for name, board in boards.items():
        values = _variable_values(board, devices)
        for where, query in _queries(board):
            used = (m.group(1) or m.group(3) or m.group(4) for m in _VARIABLE.finditer(query))
            names = [n for n in dict.fromkeys(used) if n in values]
            for combo in itertools.product(*(values[n] for n in names)):
                text = grafana_expand(query, dict(zip(names, combo, strict=True)))
                out.append(Query(name, where, text))
    return out


def failures(lsp: FluxLsp, queries: Sequence[Query]) -> list[str]:
    """Each error diagnostic once (of any values of the variables), naming dashboard, panel
    or variable, and where in the query."""
    found: dict[str, None] = {}
    for query, diags in zip(queries, lsp.diagnostics([q.text for q in queries]), strict=True):
        lines = query.text.splitlines()
        for d in diags:
            if d.get("severity", 1) != 1:  # 1 error; 2 warning, 3 information, 4 hint
                continue
            start = d["range"]["start"]
            line = lines[start["line"]] if start["line"] < len(lines) else ""
            found[
                f"{query.dashboard} {query.where}, line {start['line'] + 1}:"
                f"{start['character'] + 1}: {d['message']}\n    {line.strip()}"
            ] = None
    return list(found)


def _demo(tmp_path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What `edge-agent grafana generate (the shipped demo) --out tmp_path` writes."""
    loaded: LoadedConfig = load_config(DEMO)
    written = write(loaded, tmp_path)
    boards = {p.name: json.loads(p.read_text()) for p in written if p.suffix == ".json"}
    devices = [s.device.name for s in loaded.devices if s.device.enabled]
    return boards, devices


def test_every_generated_flux_query_parses_and_type_checks(
    tmp_path: Path, flux_lsp: FluxLsp
) -> None:
    boards, devices = _demo(tmp_path)
    queries = expanded_queries(boards, devices)
    sources = sum(1 for b in boards.values() for _ in _queries(b))
    targets = sum(len(p["targets"]) for b in boards.values() for p in b["panels"])
    assert len(boards) == 5 and targets > 20 and sources == targets + 2 * len(boards)
    assert len(queries) > sources  # each once per value of its variables
    assert not any("${" in q.text or "v.timeRange" in q.text for q in queries)
    problems = failures(flux_lsp, queries)
    assert not problems, f"{len(problems)} Flux errors:\n" + "\n".join(problems)


def test_broken_queries_get_diagnostics_naming_dashboard_and_panel(
    tmp_path: Path, flux_lsp: FluxLsp
) -> None:
    """The check can fail: a missing parenthesis, a misspelt argument, a bad regex."""
    boards, devices = _demo(tmp_path)
    board = copy.deepcopy(boards["demand.json"])
    first, second = board["panels"][0], board["panels"][1]
    first["targets"][0]["query"] = first["targets"][0]["query"].rstrip(")")  # unclosed call
    second["targets"][0]["query"] = (
        second["targets"][0]["query"].replace("createEmpty:", "createEmty:")
        + "\n  |> filter(fn: (r) => r.point =~ /^(a|b$/)"
    )
    problems = failures(flux_lsp, expanded_queries({"broken.json": board}, devices))
    assert problems
    assert all(p.startswith("broken.json panel ") for p in problems)
    first_title, second_title = repr(first["title"]), repr(second["title"])
    assert any(first_title in p and "expected RPAREN" in p for p in problems), problems
    assert any(second_title in p and "unexpected argument createEmty" in p for p in problems)
    assert any(second_title in p and "regex parse error" in p for p in problems), problems
    others = [p for p in problems if first_title not in p and second_title not in p]
    assert not others, others


def test_grafana_expansion_matches_grafana() -> None:
    """Formats as Grafana's template service applies them, and the backend's macros."""
    query = (
        'r.site == "${site}" and r.device =~ /^${device:regex}$/ and r.area =~ /^(${area})$/'
        " |> range(start: v.timeRangeStart, stop: v.timeRangeStop) |> every(v.windowPeriod)"
    )
    values: dict[str, str | list[str]] = {
        "site": "demo-plant",
        "device": ["line-1", "a.b/c"],
        "area": "compressor|utilities",
    }
    assert grafana_expand(query, values) == (
        'r.site == "demo-plant" and r.device =~ /^(line-1|a\\.b\\/c)$/'
        " and r.area =~ /^(compressor|utilities)$/"
        f" |> range(start: {RANGE_START}, stop: {RANGE_STOP}) |> every({WINDOW_PERIOD})"
    )
    assert grafana_expand("/^${device:regex}$/", {"device": ["x.y"]}) == "/^x\\.y$/"
    with pytest.raises(AssertionError, match="no variable"):
        grafana_expand('r.gateway == "${gateway}"', values)

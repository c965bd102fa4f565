"""`edge-agent grafana push` against a stand-in for Grafana's HTTP API.

Grafana itself cannot run on this machine (runtime.md §3), so this test runs a real local
HTTP server (http.server, loopback, free port) that implements the few Grafana API
endpoints push calls (folders, data sources by uid, dashboards by uid and /db), keeps what
was sent the way Grafana does (ids, versions, secrets never returned) and records every
request. grafana-client talks to it over real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.grafana_push import FOLDER_UID, push

pytestmark = pytest.mark.timeout(30)

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
TOKEN = "glsa_test-token"


class FakeGrafana:
    """State and request log of the stand-in server."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth: set[str] = set()
        self.next_id = 1

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            uid = m[1]
            if method == "GET":
                found = self.folders.get(uid)
                return (200, found) if found else (404, {"message": "folder not found"})
            if method == "PUT":
                self.folders[uid]["title"] = body["title"]
                return 200, self.folders[uid]
        if path == "/api/folders" and method == "POST":
            folder = {"id": self._id(), "uid": body["uid"], "title": body["title"]}
            self.folders[body["uid"]] = folder
            return 200, folder
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            uid = m[1]
            if method == "GET":
                found = self.datasources.get(uid)
                return (200, found) if found else (404, {"message": "Data source not found"})
            if method == "PUT":
                self._store_ds(body, keep_id=self.datasources[uid]["id"])
                return 200, {"message": "Datasource updated"}
        if path == "/api/datasources" and method == "POST":
            self._store_ds(body, keep_id=None)
            return 200, {"message": "Datasource added", "id": self.datasources[body["uid"]]["id"]}
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            found = self.dashboards.get(m[1])
            return (200, found) if found else (404, {"message": "Dashboard not found"})
        if path == "/api/dashboards/db" and method == "POST":
            board = dict(body["dashboard"])
            old = self.dashboards.get(board["uid"])
            board["id"] = old["dashboard"]["id"] if old else self._id()
            board["version"] = old["dashboard"]["version"] + 1 if old else 1
            meta = {"folderUid": body.get("folderUid", ""), "version": board["version"]}
            self.dashboards[board["uid"]] = {"dashboard": board, "meta": meta}
            return 200, {"status": "success", "uid": board["uid"], "version": board["version"]}
        return 404, {"message": "Not found"}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _store_ds(self, body: dict[str, Any], *, keep_id: int | None) -> None:
        ds = {k: v for k, v in body.items() if k != "secureJsonData"}
        if "secureJsonData" in body:
            self.secrets[body["uid"]] = body["secureJsonData"]
        # What Grafana adds to every data source it returns.
        ds.update(id=keep_id or self._id(), orgId=1, basicAuth=False, readOnly=False)
        ds["secureJsonFields"] = {k: True for k in self.secrets.get(body["uid"], {})}
        self.datasources[body["uid"]] = ds


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.auth.add(self.headers.get("Authorization", ""))
            status, answer = state.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_push_creates_everything_then_changes_nothing(
    grafana: tuple[str, FakeGrafana], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = grafana
    loaded = load_config(DEMO)
    first = push(loaded, url, TOKEN, influx_token="influx-secret")
    assert sorted(first.created) == sorted(
        [
            f"folder {FOLDER_UID}",
            "datasource edge-influxdb",
            "dashboard edge-energy-overview",
            "dashboard edge-meter",
            "dashboard edge-demand",
            "dashboard edge-quality",
            "dashboard edge-gateway",
        ]
    )
    assert state.writes() == [
        ("POST", "/api/folders"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * 5,
    ]
    assert state.auth == {f"Bearer {TOKEN}"}
    assert state.secrets["edge-influxdb"] == {"token": "influx-secret"}
    assert all(d["meta"]["folderUid"] == FOLDER_UID for d in state.dashboards.values())
    assert state.dashboards["edge-demand"]["dashboard"]["panels"]

    # Second run, through the CLI: reads only, nothing written, nothing changed.
    state.requests.clear()
    snapshot = json.dumps([state.folders, state.datasources, state.dashboards], sort_keys=True)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["grafana", "push", str(DEMO), "--url", url]) == 0
    assert state.writes() == []
    assert len(state.requests) == 7  # folder, data source, five dashboards: one GET each
    assert (
        json.dumps([state.folders, state.datasources, state.dashboards], sort_keys=True) == snapshot
    )

    # A config change updates just the dashboard it touches.
    changed = tmp_path / "site.yaml"
    changed.write_text(DEMO.read_text().replace("contract_demand_kw: 40", "contract_demand_kw: 55"))
    (tmp_path / "profiles").symlink_to(DEMO.parent / "profiles")
    (tmp_path / "energy").symlink_to(DEMO.parent / "energy")
    state.requests.clear()
    third = push(load_config(changed), url, TOKEN)
    assert third.updated == ["dashboard edge-demand"]
    assert state.writes() == [("POST", "/api/dashboards/db")]
    assert state.dashboards["edge-demand"]["dashboard"]["version"] == 2
    assert "secret" not in json.dumps(state.datasources)  # the secret is never read back


def test_push_without_a_token_refuses(
    grafana: tuple[str, FakeGrafana], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = grafana
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert main(["grafana", "push", str(DEMO), "--url", url]) == 2
    assert state.requests == []

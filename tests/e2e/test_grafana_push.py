"""`edge-agent grafana push` against a stand-in for Grafana's HTTP API.

Grafana itself cannot run on this machine (runtime.md §3), so this test runs a real local
HTTP server (http.server, loopback, free port) that implements the few Grafana API
endpoints push calls (folders, data sources by uid, dashboards by uid and /db, search),
keeps what was sent the way Grafana does (ids, versions, secrets never returned) and
records every request. grafana-client talks to it over real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from edge_agent.catalog import shipped_demo
from edge_agent.cli.main import main
from edge_agent.config.site import load_config
from edge_agent.grafana.push import FOLDER_UID, push

pytestmark = pytest.mark.timeout(30)

DEMO = shipped_demo()
TOKEN = "glsa_test-token"
GENERATED = ["edge-energy-overview", "edge-meter", "edge-demand", "edge-quality", "edge-gateway"]


class FakeGrafana:
    """State and request log of the stand-in server."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.searches: list[dict[str, list[str]]] = []  # query parameters of each search
        self.auth: set[str] = set()
        self.next_id = 1
        # Grafana before folderUIDs existed ignores the parameter, as it does any unknown one.
        self.honours_folder_uids = True
        self.honours_page = True

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def add_folder(self, uid: str, title: str) -> dict[str, Any]:
        folder = {"id": self._id(), "uid": uid, "title": title}
        self.folders[uid] = folder
        return folder

    def put_dashboard(self, board: dict[str, Any], folder_uid: str) -> dict[str, Any]:
        board = dict(board)
        old = self.dashboards.get(board["uid"])
        board["id"] = old["dashboard"]["id"] if old else self._id()
        board["version"] = old["dashboard"]["version"] + 1 if old else 1
        meta = {"folderUid": folder_uid, "version": board["version"]}
        self.dashboards[board["uid"]] = {"dashboard": board, "meta": meta}
        return board

    def handle(
        self, method: str, path: str, body: Any, query: dict[str, list[str]] | None = None
    ) -> tuple[int, Any]:
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
            return 200, self.add_folder(body["uid"], body["title"])
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
            if not found:
                return 404, {"message": "Dashboard not found"}
            if method == "GET":
                return 200, found
            if method == "DELETE":
                del self.dashboards[m[1]]
                title = found["dashboard"]["title"]
                return 200, {
                    "title": title,
                    "message": f"Dashboard {title} deleted",
                    "id": found["dashboard"]["id"],
                }
        if path == "/api/dashboards/db" and method == "POST":
            board = self.put_dashboard(body["dashboard"], body.get("folderUid", ""))
            return 200, {"status": "success", "uid": board["uid"], "version": board["version"]}
        if path == "/api/search" and method == "GET":
            return 200, self._search(query or {})
        return 404, {"message": "Not found"}

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """GET /api/search: hits sorted folders first, then by title; `limit` hits a page."""
        self.searches.append(query)
        kind = query.get("type", [None])[0]
        in_folders = query.get("folderUIDs") if self.honours_folder_uids else None
        tags = query.get("tag", [])
        hits: list[dict[str, Any]] = []
        if kind in (None, "dash-folder") and not in_folders:
            hits += [self._folder_hit(folder) for folder in self.folders.values()]
        if kind in (None, "dash-db"):
            for uid, entry in self.dashboards.items():
                board, folder_uid = entry["dashboard"], entry["meta"]["folderUid"]
                if in_folders is not None and folder_uid not in in_folders:
                    continue
                if not set(tags) <= set(board.get("tags", [])):
                    continue
                hits.append(self._dashboard_hit(uid, board, folder_uid))
        hits.sort(key=lambda h: (h["type"] != "dash-folder", h["title"].lower()))
        limit = int(query.get("limit", ["1000"])[0])
        page = int(query.get("page", ["1"])[0]) if self.honours_page else 1
        return hits[(page - 1) * limit : page * limit]

    def _folder_hit(self, folder: dict[str, Any]) -> dict[str, Any]:
        slug = _slug(folder["title"])
        return {
            "id": folder["id"],
            "uid": folder["uid"],
            "title": folder["title"],
            "uri": f"db/{slug}",
            "url": f"/dashboards/f/{folder['uid']}/{slug}",
            "slug": slug,
            "type": "dash-folder",
            "tags": [],
            "isStarred": False,
            "sortMeta": 0,
        }

    def _dashboard_hit(self, uid: str, board: dict[str, Any], folder_uid: str) -> dict[str, Any]:
        slug = _slug(board["title"])
        hit = {
            "id": board["id"],
            "uid": uid,
            "title": board["title"],
            "uri": f"db/{slug}",
            "url": f"/d/{uid}/{slug}",
            "slug": slug,
            "type": "dash-db",
            "tags": list(board.get("tags", [])),
            "isStarred": False,
            "sortMeta": 0,
        }
        # Grafana omits the folder keys (omitempty) for dashboards at the root.
        if folder_uid:
            folder = self.folders[folder_uid]
            hit.update(
                folderId=folder["id"],
                folderUid=folder_uid,
                folderTitle=folder["title"],
                folderUrl=f"/dashboards/f/{folder_uid}/{_slug(folder['title'])}",
            )
        return hit

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


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.auth.add(self.headers.get("Authorization", ""))
            url = urlsplit(self.path)
            status, answer = state.handle(self.command, url.path, body, parse_qs(url.query))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

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
    # Folder, data source, five dashboards: one GET each; one search for stale dashboards.
    assert len(state.requests) == 8
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


SEARCH = {"type": ["dash-db"], "folderUIDs": [FOLDER_UID], "limit": ["1000"], "page": ["1"]}


def _board(uid: str, title: str, tags: list[str]) -> dict[str, Any]:
    return {"uid": uid, "title": title, "tags": tags, "schemaVersion": 39, "panels": []}


@pytest.mark.parametrize("honours_folder_uids", [True, False], ids=["grafana", "no-folderUIDs"])
def test_prune_deletes_only_stale_dashboards_of_ours(
    grafana: tuple[str, FakeGrafana],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    honours_folder_uids: bool,
) -> None:
    url, state = grafana
    state.honours_folder_uids = honours_folder_uids
    state.add_folder(FOLDER_UID, "Edge agent")
    state.add_folder("plant-ops", "Plant operations")
    # What an older version pushed and the current one no longer generates.
    state.put_dashboard(
        _board("edge-old", "demo-plant: old", ["edge-agent", "demo-plant"]), FOLDER_UID
    )
    # Someone's own dashboard in our folder, without the tag.
    state.put_dashboard(_board("edge-handmade", "Compressors", ["energy"]), FOLDER_UID)
    # Carrying the tag, but outside the folder: in another one and at the root.
    state.put_dashboard(_board("edge-moved", "Moved away", ["edge-agent"]), "plant-ops")
    state.put_dashboard(_board("edge-root", "At the root", ["edge-agent"]), "")
    foreign = {uid: state.dashboards[uid] for uid in ("edge-handmade", "edge-moved", "edge-root")}
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)

    # Without --prune: reported, not deleted.
    assert main(["grafana", "push", str(DEMO), "--url", url]) == 0
    assert capsys.readouterr().out == (
        "grafana push: 6 created, 0 updated, 1 unchanged; 1 stale dashboard in folder "
        "edge-agent (edge-old); --prune deletes them\n"
    )
    assert state.writes() == [("POST", "/api/datasources"), *[("POST", "/api/dashboards/db")] * 5]
    assert state.searches == [SEARCH]
    assert "edge-old" in state.dashboards

    # With --prune: just the stale one goes.
    state.requests.clear()
    state.searches.clear()
    assert main(["grafana", "push", str(DEMO), "--url", url, "--prune"]) == 0
    assert capsys.readouterr().out == "grafana push: 0 created, 0 updated, 7 unchanged, 1 deleted\n"
    assert state.writes() == [("DELETE", "/api/dashboards/uid/edge-old")]
    assert state.searches == [SEARCH]
    assert sorted(state.dashboards) == sorted([*GENERATED, *foreign])
    assert {uid: state.dashboards[uid] for uid in foreign} == foreign

    # Again with --prune: reads only.
    state.requests.clear()
    snapshot = json.dumps([state.folders, state.datasources, state.dashboards], sort_keys=True)
    result = push(load_config(DEMO), url, TOKEN, prune=True)
    assert (result.deleted, result.stale) == ([], [])
    assert result.summary() == "0 created, 0 updated, 7 unchanged"
    assert state.writes() == []
    assert (
        json.dumps([state.folders, state.datasources, state.dashboards], sort_keys=True) == snapshot
    )


def test_stale_dashboards_are_found_past_the_first_search_page(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana
    state.add_folder(FOLDER_UID, "Edge agent")
    for i in range(1000):
        state.put_dashboard(_board(f"hand-{i:04}", f"Hand {i:04}", []), FOLDER_UID)
    # Titled to sort last: hit 1006 of 1006, on the second page.
    state.put_dashboard(_board("edge-old", "zz old", ["edge-agent"]), FOLDER_UID)

    result = push(load_config(DEMO), url, TOKEN, prune=True)
    assert result.deleted == ["dashboard edge-old"]
    assert state.searches == [SEARCH, {**SEARCH, "page": ["2"]}]
    assert state.writes()[-1] == ("DELETE", "/api/dashboards/uid/edge-old")
    assert len(state.dashboards) == 1000 + len(GENERATED)


def test_a_search_that_ignores_page_ends_the_listing(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    state.honours_page = False
    state.add_folder(FOLDER_UID, "Edge agent")
    for i in range(1000):
        state.put_dashboard(_board(f"hand-{i:04}", f"Hand {i:04}", []), FOLDER_UID)

    result = push(load_config(DEMO), url, TOKEN, prune=True)
    # Page 2 repeats page 1: nothing new, so the listing stops there instead of looping.
    assert state.searches == [SEARCH, {**SEARCH, "page": ["2"]}]
    assert (result.deleted, result.stale) == ([], [])

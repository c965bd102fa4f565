"""`edge-agent grafana generate|push`: write the provisioning tree, or push it over the API.

`push` creates or updates, through grafana-client, the folder "Edge agent", the data source
(InfluxDB with Flux, or with `--datasource prometheus` a Prometheus-compatible store such as
VictoriaMetrics with PromQL) and the dashboards on a Grafana URL with an API token
(`--token-env`, default GRAFANA_TOKEN; never an argument, so it stays out of shell history
and process lists).
It is idempotent: what already matches is left alone, so a second run sends no write.

Dashboards in the folder that carry the generator's tag but are no longer generated (a uid an
older version or another config produced) are stale: reported, and deleted with `--prune`.
Nothing outside the folder, and nothing in it without the tag, is ever deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.site import LoadedConfig
from edge_agent.grafana.dashboards import FOLDER, STORES, TAG, dashboards, datasource, write

FOLDER_UID = "edge-agent"
DEFAULT_OUT = Path("deploy/grafana")
SEARCH_PAGE = 1000  # Grafana's default search limit; its maximum is 5000


def add_parser(sub: Any) -> None:
    """The `grafana` subcommand and its two actions."""
    g = sub.add_parser("grafana", help="Grafana dashboards generated from a site config")
    actions = g.add_subparsers(dest="grafana_action", required=True)
    gen = actions.add_parser("generate", help="write provisioning files (datasource, dashboards)")
    gen.add_argument("config", type=Path)
    gen.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default deploy/grafana")
    gen.add_argument("--influx-url", default=None, help="URL Grafana uses to reach the store")
    _datasource_option(gen)
    push = actions.add_parser("push", help="create/update folder, datasource, dashboards")
    push.add_argument("config", type=Path)
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    push.add_argument("--token-env", default="GRAFANA_TOKEN", help="env var with the API token")
    push.add_argument("--influx-url", default=None, help="URL Grafana uses to reach the store")
    _datasource_option(push)
    push.add_argument(
        "--prune",
        action="store_true",
        help=f"delete stale dashboards: in folder {FOLDER_UID}, tagged {TAG}, no longer generated",
    )


def _datasource_option(parser: Any) -> None:
    parser.add_argument(
        "--datasource",
        choices=sorted(STORES),
        default="influxdb",
        help="what the dashboards query: influxdb (InfluxDB 2, Flux; default) or prometheus "
        "(VictoriaMetrics or another Prometheus-compatible store, PromQL)",
    )


def run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Run the parsed `grafana` action."""
    if args.grafana_action == "generate":
        for path in write(loaded, args.out, url=args.influx_url, kind=args.datasource):
            print(path)
        return 0
    token = os.environ.get(args.token_env)
    if not token:
        print(f"grafana push: set the API token in ${args.token_env}", file=sys.stderr)
        return 2
    influx_token = os.environ.get("INFLUX_TOKEN", "")
    result = push(
        loaded,
        args.url,
        token,
        influx_token=influx_token,
        influx_url=args.influx_url,
        prune=args.prune,
        kind=args.datasource,
    )
    print(f"grafana push: {result.summary()}")
    return 0


@dataclass
class PushResult:
    """What a push changed, by object."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # found, left in place (no --prune)

    def summary(self) -> str:
        text = (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )
        if self.deleted:
            text += f", {len(self.deleted)} deleted"
        if self.stale:
            n = len(self.stale)
            uids = ", ".join(s.removeprefix("dashboard ") for s in self.stale)
            text += (
                f"; {n} stale dashboard{'s' if n != 1 else ''} in folder {FOLDER_UID} ({uids}); "
                "--prune deletes them"
            )
        return text


def _host(url: str) -> tuple[str, int | None, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port, parts.scheme or "http"


def _same(wanted: dict[str, Any], have: dict[str, Any]) -> bool:
    """Whether every key we set has the value we want (Grafana adds keys of its own)."""
    return all(have.get(k) == v for k, v in wanted.items())


def push(
    loaded: LoadedConfig,
    url: str,
    token: str,
    *,
    influx_token: str = "",
    influx_url: str | None = None,
    prune: bool = False,
    kind: str = "influxdb",
) -> PushResult:
    """Create or update folder, data source and dashboards; unchanged objects are not sent.

    Stale dashboards (see the module docstring) are deleted with `prune`, else reported.
    """
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, TokenAuth

    host, port, scheme = _host(url)
    # grafana-client is untyped: its answers are plain JSON dicts.
    make_auth: Any = TokenAuth
    api: Any = GrafanaApi(auth=make_auth(token), host=host, port=port, protocol=scheme, timeout=10)
    result = PushResult()

    try:
        folder = api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(FOLDER, uid=FOLDER_UID)
        result.created.append(f"folder {FOLDER_UID}")
    else:
        if folder.get("title") != FOLDER:
            api.folder.update_folder(FOLDER_UID, FOLDER, overwrite=True)
            result.updated.append(f"folder {FOLDER_UID}")
        else:
            result.unchanged.append(f"folder {FOLDER_UID}")

    ds = datasource(loaded, url=influx_url, kind=kind)
    # The API takes the secret itself; Grafana never returns it, so it is sent on create only.
    body = {k: v for k, v in ds.items() if k != "secureJsonData"}
    secure = {k: v.replace("$INFLUX_TOKEN", influx_token) for k, v in ds["secureJsonData"].items()}
    try:
        have = api.datasource.get_datasource_by_uid(ds["uid"])
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource({**body, "secureJsonData": secure})
        result.created.append(f"datasource {ds['uid']}")
    else:
        if _same(body, have):
            result.unchanged.append(f"datasource {ds['uid']}")
        else:
            api.datasource.update_datasource_by_uid(ds["uid"], {**have, **body})
            result.updated.append(f"datasource {ds['uid']}")

    boards = list(dashboards(loaded, kind=kind).values())
    for board in boards:
        uid = board["uid"]
        try:
            have_board = api.dashboard.get_dashboard(uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            have_board = None
        if have_board is not None:
            current = dict(have_board.get("dashboard", {}))
            meta = have_board.get("meta", {})
            # Grafana owns id and version; compare the rest.
            mine = {k: v for k, v in board.items() if k not in ("id", "version")}
            if _same(mine, current) and meta.get("folderUid") == FOLDER_UID:
                result.unchanged.append(f"dashboard {uid}")
                continue
        api.dashboard.update_dashboard(
            {
                "dashboard": {k: v for k, v in board.items() if k not in ("id", "version")},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "edge-agent grafana push",
            }
        )
        (result.created if have_board is None else result.updated).append(f"dashboard {uid}")

    for uid in _stale(api, {board["uid"] for board in boards}):
        if prune:
            api.dashboard.delete_dashboard(uid)
            result.deleted.append(f"dashboard {uid}")
        else:
            result.stale.append(f"dashboard {uid}")
    return result


def _stale(api: Any, generated: set[str]) -> list[str]:
    """Uids of our dashboards that are no longer generated, sorted."""
    hits: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        batch = api.search.search_dashboards(
            type_="dash-db", folder_uids=[FOLDER_UID], limit=SEARCH_PAGE, page=page
        )
        new = {h["uid"]: h for h in batch if h.get("uid") not in hits}
        hits.update(new)
        # A short page is the last; a page with nothing new means `page` was ignored.
        if len(batch) < SEARCH_PAGE or not new:
            break
        page += 1
    # The search filters are checked again on every hit: a Grafana too old for folderUIDs
    # ignores it and answers with every dashboard it has, in every folder.
    return sorted(
        uid
        for uid, hit in hits.items()
        if hit.get("type") == "dash-db"
        and hit.get("folderUid") == FOLDER_UID
        and TAG in (hit.get("tags") or ())
        and uid not in generated
    )

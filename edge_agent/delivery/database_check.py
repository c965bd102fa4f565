"""What `check` and `run` find in the files the agent would write, before it starts.

For every database `run` opens (the outbox, the alarm store and energy state beside it,
the uplink store), a file at the path that is not recognisably the agent's own of that
kind (sqlite_file.file_problem), or a location that cannot be written (a read-only file
system, permissions), is a config error at the key that names the path:

    site.yaml:4 outbox.path: outbox victim.yaml is not a SQLite database: not a file of the agent
    site.yaml:4 outbox.path: outbox /mnt/ro/outbox.sqlite cannot be created: /mnt/ro is on
        a read-only file system

`run` stops with exit 2 on them before it opens anything; `check` lists them the same way.
Other commands (plan, simulate, ingest on another host) do not look: they write none of
these files.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.alarms.stage import alarm_store_path, build_watches
from edge_agent.config.document import read_yaml
from edge_agent.config.errors import ConfigIssue, Loc, shown_path
from edge_agent.config.site import LoadedConfig
from edge_agent.delivery.sqlite_file import (
    ALARMS,
    ENERGY,
    OUTBOX,
    UPLINK,
    DatabaseKind,
    file_problem,
    location_problem,
)
from edge_agent.energy.points import energy_points
from edge_agent.energy.stage import energy_state_path


def database_files(loaded: LoadedConfig) -> list[tuple[Loc, Path, DatabaseKind]]:
    """The databases `run` would open for this site: (config key naming it, path, kind)."""
    site = loaded.site
    at_outbox: Loc = ("outbox", "path")
    files = [(at_outbox, loaded.path.parent / site.outbox.path, OUTBOX)]
    if build_watches(loaded):
        files.append((at_outbox, alarm_store_path(loaded), ALARMS))
    if energy_points(loaded.devices):
        files.append((at_outbox, energy_state_path(loaded), ENERGY))
    if site.uplink is not None:
        files.append((("uplink", "path"), loaded.path.parent / site.uplink.path, UPLINK))
    return files


def database_issues(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Every database of the site that `run` must not or cannot open, at its config key."""
    doc = read_yaml(loaded.path, environ=os.environ)  # for the lines
    issues = []
    seen: set[tuple[Path, str]] = set()  # a read-only folder is said once, not per file
    for loc, path, kind in database_files(loaded):
        problem = file_problem(path, kind) or location_problem(path)
        if problem is not None and (path.parent, problem) not in seen:
            seen.add((path.parent, problem))
            issues.append(doc.issue(loc, f"{kind.name} {shown_path(path)} {problem}"))
    return issues

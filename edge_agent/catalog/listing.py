"""`edge-agent catalog [SITE]`: what a site can name, and which file each name comes from."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edge_agent.catalog import SYSTEM_VARIABLE, Kind, entries, folders
from edge_agent.config.document import read_yaml
from edge_agent.config.errors import ConfigError, shown_path

_TITLES = {
    Kind.PROFILES: "profiles (profile: NAME)",
    Kind.TARIFFS: "tariff calendars (energy.tariff: NAME)",
    Kind.COEFFICIENTS: "coefficient tables (energy.standard_coal / grid_emission: VERSION)",
    Kind.TEMPLATES: "uplink templates (uplink.endpoints[].template: NAME)",
}


def print_catalog(site: Path | None) -> int:
    """Print the catalog as `site` sees it (or as a site in the working directory would)."""
    site_dir: Path | None = None
    profiles_dir: Path | None = None
    if site is not None:
        try:
            doc = read_yaml(site, environ=os.environ)
        except ConfigError as exc:
            from edge_agent.cli.plan_listing import render_issues

            print(render_issues(exc), file=sys.stderr)
            return 2
        site_dir = site.parent
        raw = doc.at(("profiles_dir",))
        profiles_dir = Path(raw) if isinstance(raw, str) and raw else None
    listed = entries(site_dir, profiles_dir=profiles_dir)
    for kind in Kind:
        searched = folders(kind, site_dir, profiles_dir=profiles_dir)
        print(f"{_TITLES[kind]}; searched in order:")
        for folder in searched:
            mark = "" if folder.path.is_dir() else "  (absent)"
            print(f"  {folder.origin:<12} {shown_path(folder.path)}/{mark}")
        for entry in (e for e in listed if e.kind is kind):
            hides = f"  (hides {', '.join(str(shown_path(p)) for p in entry.hides)})"
            print(
                f"    {entry.name:<28} {entry.origin:<12} {shown_path(entry.path)}"
                f"{hides if entry.hides else ''}"
            )
        print()
    print(f"The system folder is ${SYSTEM_VARIABLE} (default /etc/edge-agent).")
    return 0

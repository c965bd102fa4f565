"""The catalog: meter profiles, tariff calendars, coefficient tables and uplink templates.

A set of each ships inside the package (the folders beside this file, found through
importlib.resources, so an installed wheel finds them as a checkout does); a plant's own
files override them. For a name, the first match wins:

    1. <the site file's folder>/<kind>/NAME.yaml     e.g. /etc/plant/profiles/my-meter.yaml
    2. profiles_dir: of the site file                (profiles only)
    3. $EDGE_AGENT_DATA/<kind>/NAME.yaml             EDGE_AGENT_DATA defaults to /etc/edge-agent
    4. the shipped set                               edge_agent/catalog/<kind>/NAME.yaml

Coefficient tables are merged by version instead: a plant's `energy/grid-emission.yaml` adds
(or corrects) versions, and the shipped versions it does not name stay available.
`edge-agent catalog [SITE]` lists what a site can see and where each entry comes from.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "SYSTEM_DEFAULT",
    "Entry",
    "Folder",
    "Kind",
    "entries",
    "find",
    "folders",
    "known",
    "shipped",
    "shipped_demo",
]

SYSTEM_DEFAULT = Path("/etc/edge-agent")
SYSTEM_VARIABLE = "EDGE_AGENT_DATA"


class Kind(enum.StrEnum):
    """A kind of catalog entry; its value is the folder that holds it in every layer."""

    PROFILES = "profiles"
    TARIFFS = "tariffs"
    COEFFICIENTS = "energy"
    TEMPLATES = "uplink"


@dataclass(frozen=True, slots=True)
class Folder:
    """One place searched for one kind, with the layer it belongs to."""

    origin: str  # "site", "profiles_dir", "system" or "shipped"
    path: Path

    @property
    def shown(self) -> str:
        """How error messages name it: the shipped set by that word, others by path."""
        if self.origin == "shipped":
            return "the shipped set"
        from edge_agent.config.errors import shown_path

        return f"{shown_path(self.path)}/"


@dataclass(frozen=True, slots=True)
class Entry:
    """A name of one kind as a site sees it: the file used, and the files it hides."""

    kind: Kind
    name: str
    path: Path
    origin: str
    hides: tuple[Path, ...]


_files = contextlib.ExitStack()
atexit.register(_files.close)
_shipped_root: Path | None = None


def shipped_root() -> Path:
    """The folder of the shipped set (extracted once if the package is zipped)."""
    global _shipped_root
    if _shipped_root is None:
        _shipped_root = _files.enter_context(resources.as_file(resources.files(__name__)))
    return _shipped_root


def shipped(kind: Kind, name: str | None = None) -> Path:
    """The shipped folder of a kind, or the shipped file of one name."""
    folder = shipped_root() / kind.value
    return folder if name is None else folder / f"{name}.yaml"


def shipped_demo() -> Path:
    """The demo site that `edge-agent demo` runs when given no file."""
    return shipped_root() / "demo.yaml"


def system_root(environ: Mapping[str, str] | None = None) -> Path:
    """The plant's own catalog for every site on this gateway ($EDGE_AGENT_DATA)."""
    env = os.environ if environ is None else environ
    value = env.get(SYSTEM_VARIABLE, "")
    return Path(value) if value else SYSTEM_DEFAULT


def folders(
    kind: Kind,
    site_dir: Path | None,
    *,
    profiles_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Folder]:
    """Where names of `kind` are looked up, in order; a folder listed twice counts once."""
    found: list[Folder] = []
    if site_dir is not None:
        found.append(Folder("site", site_dir / kind.value))
        if kind is Kind.PROFILES and profiles_dir is not None:
            found.append(Folder("profiles_dir", site_dir / profiles_dir))
    found.append(Folder("system", system_root(environ) / kind.value))
    found.append(Folder("shipped", shipped(kind)))
    unique: dict[Path, Folder] = {}
    for folder in found:
        unique.setdefault(folder.path.resolve(), folder)
    return list(unique.values())


def find(name: str, searched: Sequence[Folder]) -> Path | None:
    """The first NAME.yaml in the searched folders."""
    for folder in searched:
        candidate = folder.path / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def known(searched: Sequence[Folder]) -> list[str]:
    """Every name the searched folders offer, sorted."""
    return sorted({p.stem for f in searched if f.path.is_dir() for p in f.path.glob("*.yaml")})


def entries(
    site_dir: Path | None,
    *,
    profiles_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Entry]:
    """Every entry of every kind a site sees, with where it comes from and what it hides."""
    listed: list[Entry] = []
    for kind in Kind:
        searched = folders(kind, site_dir, profiles_dir=profiles_dir, environ=environ)
        by_name: dict[str, list[tuple[Folder, Path]]] = {}
        for folder in searched:
            if folder.path.is_dir():
                for path in sorted(folder.path.glob("*.yaml")):
                    by_name.setdefault(path.stem, []).append((folder, path))
        for name, places in sorted(by_name.items()):
            (first, path), rest = places[0], places[1:]
            listed.append(Entry(kind, name, path, first.origin, tuple(p for _, p in rest)))
    return listed

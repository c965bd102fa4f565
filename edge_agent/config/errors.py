"""Config errors as a plant engineer reads them: file, line, path in the file, message.

One `ConfigIssue` is one thing to fix, printed as

    site.yaml:41 devices[2].points[5]: holding registers 40-41 of 'flow' overlap 'level' (40)

A `ConfigError` carries every issue found in one pass over the site file and the profile
files it references, so a commissioning engineer fixes them all in one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Loc = tuple[str | int, ...]
"""A position in a YAML document: ("devices", 2, "points", 5, "address")."""


def format_loc(loc: Loc) -> str:
    """The path as written in messages: devices[2].points[5].address."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def shown_path(path: Path) -> Path:
    """The path as the user gave it, made relative when it lies under the working directory."""
    if not path.is_absolute():
        return Path(os.path.normpath(path))
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one config file; `line` is 1-based, None when unknown.

    `local`: the problem is this machine's, not the file's (an unset ${VAR}, a certificate
    file that is not here); `check --portable` lists those without failing.
    """

    file: Path
    line: int | None
    path: str
    message: str
    local: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A site config (or a profile it uses) that cannot be run; `issues` lists every problem."""

    def __init__(self, issues: Sequence[ConfigIssue], *, file: Path | None = None) -> None:
        if not issues:
            raise ValueError("a ConfigError needs at least one issue")
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.file: Path = file if file is not None else self.issues[0].file
        super().__init__("\n".join(str(issue) for issue in self.issues))

"""Read a YAML config file into plain data, the line of every key and item, and ${ENV} values.

pydantic reports an error by its path in the data, ("devices", 2, "points", 5, "address");
a plant engineer needs `site.yaml:41`. So the file is composed into YAML nodes (which keep
their position) and walked once, building the Python data and a map from every path to
the line where it starts:

    devices:                      ("devices",)                        -> 1
      - name: meter-1             ("devices", 0), ("devices", 0, "name") -> 2
        points:                   ("devices", 0, "points")            -> 3
          - {name: v, address: 1} ("devices", 0, "points", 0)         -> 4

A key maps to the line of the key (for a block value that is the line above its first
item); a list item maps to the line it starts on.

Secrets stay out of config files: every string may contain `${NAME}` or
`${NAME:-default}` (the default also applies when NAME is set but empty, as in a shell),
filled from the environment; `$${` writes a literal `${`. The text before substitution is
kept per path so error messages can show `${MQTT_PASSWORD}` instead of the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edge_agent.config_errors import ConfigError, ConfigIssue, Loc, format_loc, shown_path

_REFERENCE = re.compile(r"\$(\$?)\{")
_NAME_DEFAULT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_STR_TAG = "tag:yaml.org,2002:str"


def expand_env(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Fill ${NAME} and ${NAME:-default} from `environ`; returns the text and its problems.

    A problem is a message naming an unset variable or a malformed reference; the
    reference is then left out of the text. Messages never contain a variable's value.
    """
    out: list[str] = []
    problems: list[str] = []
    pos = 0
    while (match := _REFERENCE.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        if match.group(1):  # "$${" is the escape for a literal "${"
            out.append("${")
            pos = match.end()
            continue
        close = text.find("}", match.end())
        if close < 0:
            problems.append("unclosed ${ (write $${ for a literal ${)")
            pos = len(text)
            break
        inner = text[match.end() : close]
        pos = close + 1
        ref = _NAME_DEFAULT.fullmatch(inner)
        if ref is None:
            problems.append(
                f"bad reference ${{{inner}}}: write ${{NAME}} or ${{NAME:-default}}, "
                "with NAME made of letters, digits and _"
            )
            continue
        name, default = ref.group(1), ref.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(f"environment variable {name} is not set")
                continue
            value = default
        out.append(value)
    out.append(text[pos:])
    return "".join(out), problems


def child(node: object, part: str | int) -> tuple[bool, object]:
    """(True, the entry) when `node` is a mapping with key `part` or a list with that index."""
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML file: its data, where each path starts, and what ${...} filled in."""

    file: Path  # for messages: as given, relative when under the working directory
    data: object
    lines: Mapping[Loc, int]
    templates: Mapping[Loc, tuple[str, str]]  # path -> (text as written, text after ${...})
    issues: tuple[ConfigIssue, ...]  # duplicate keys, unset variables: found while reading

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest prefix of `loc` that the file has."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def at(self, loc: Loc) -> object:
        """The data at `loc`, or None when the file has nothing there."""
        node = self.data
        for part in loc:
            found, node = child(node, part)
            if not found:
                return None
        return node

    def issue(
        self, loc: Loc, message: str, *, line_loc: Loc | None = None, local: bool = False
    ) -> ConfigIssue:
        """An issue at `loc` (its line taken from `line_loc` when given), secrets masked."""
        for written, value in self.templates.values():
            if value != written:
                message = message.replace(repr(value), repr(written))
        line = self.line_of(loc if line_loc is None else line_loc)
        return ConfigIssue(self.file, line, format_loc(loc), message, local)


class _Walker:
    """Turns composed nodes into data, recording lines and substitutions on the way."""

    def __init__(self, loader: yaml.SafeLoader, file: Path, environ: Mapping[str, str]):
        self.loader = loader
        self.file = file
        self.environ = environ
        self.lines: dict[Loc, int] = {}
        self.templates: dict[Loc, tuple[str, str]] = {}
        self.issues: list[ConfigIssue] = []
        self._open: set[int] = set()  # ids of nodes being walked: catches recursive aliases

    def _issue(self, loc: Loc, line: int, message: str, *, local: bool = False) -> None:
        self.issues.append(ConfigIssue(self.file, line, format_loc(loc), message, local))

    def walk(self, node: Node, loc: Loc) -> object:
        if id(node) in self._open:
            self._issue(loc, node.start_mark.line + 1, "an alias refers to itself")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items: list[object] = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self.walk(item, (*loc, index)))
                return items
            assert isinstance(node, MappingNode)
            return self._mapping(node, loc)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, object]:
        self.loader.flatten_mapping(node)  # resolve `<<: *defaults` merge keys
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self._issue(loc, line, "a key must be a plain word, not a list or mapping")
                continue
            # The key as written: YAML 1.1 would read `on:` as True, but the writer meant "on".
            key: str = key_node.value
            if key in first_line:
                self._issue(
                    (*loc, key), line, f"duplicate key {key!r} (first at line {first_line[key]})"
                )
                continue
            first_line[key] = line
            self.lines[(*loc, key)] = line
            result[key] = self.walk(value_node, (*loc, key))
        return result

    def _scalar(self, node: ScalarNode, loc: Loc) -> object:
        value = self.loader.construct_object(node)
        if node.tag != _STR_TAG or not isinstance(value, str) or "${" not in value:
            return value
        expanded, problems = expand_env(value, self.environ)
        for problem in problems:
            unset = problem.startswith("environment variable ")
            self._issue(loc, node.start_mark.line + 1, problem, local=unset)
        self.templates[loc] = (value, expanded)
        return expanded


def _syntax_issue(file: Path, exc: yaml.YAMLError) -> ConfigIssue:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return ConfigIssue(file, None, "", f"YAML syntax: {exc}")
    kind = "YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax"
    message = f"{kind}: {exc.problem}"
    if exc.problem is not None and "'\\t'" in exc.problem:
        message += " (indent with spaces, not tabs)"
    if exc.context and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return ConfigIssue(file, exc.problem_mark.line + 1, "", message)


def read_yaml(path: Path, *, environ: Mapping[str, str]) -> Document:
    """Parse one YAML file; raises ConfigError when it cannot be read or is not YAML."""
    file = shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(file, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(file, None, "", "is a directory, not a file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue(file, None, "", f"not UTF-8 text (byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read: {exc.strerror}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        walker = _Walker(loader, file, environ)
        data = None if root is None else walker.walk(root, ())
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_issue(file, exc)]) from None
    finally:
        loader.dispose()
    lines = dict(walker.lines)
    if root is not None:
        lines[()] = root.start_mark.line + 1
    return Document(file, data, lines, dict(walker.templates), tuple(walker.issues))

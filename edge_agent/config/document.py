"""Read a YAML config file into plain data, the line of every key and item, and ${ENV} values.

pydantic reports an error by its path in the data, ("devices", 2, "points", 5, "address");
a plant engineer needs `site.yaml:41`. So reading builds the Python data and a map from
every path to the line where it starts:

    devices:                      ("devices",)                        -> 1
      - name: meter-1             ("devices", 0), ("devices", 0, "name") -> 2
        points:                   ("devices", 0, "points")            -> 3
          - {name: v, address: 1} ("devices", 0, "points", 0)         -> 4

A key maps to the line of the key (for a block value that is the line above its first
item); a list item maps to the line it starts on.

Two ways to read, one result (tests/config/test_event_reader.py): a file without anchors,
aliases or merge keys (a site as people write them) is built straight from libyaml's parse
events, with no YAML nodes (_EventReader: a 500-device site in 0.45 s where composing took
2.7 s); any other file is composed into nodes, which keep their position, and walked.

Secrets stay out of config files: every string may contain `${NAME}` or
`${NAME:-default}` (the default also applies when NAME is set but empty, as in a shell),
filled from the environment; `$${` writes a literal `${`. The text before substitution is
kept per path so error messages can show `${MQTT_PASSWORD}` instead of the password.

Reading is bounded, so a hostile or broken file costs a refusal, not the gateway's memory:
a file has at most MAX_FILE_BYTES, at most MAX_NODES keys, values and list items, nested at
most MAX_DEPTH deep, and the same two limits hold with every alias (`*name`, `<<: *name`)
expanded, which is checked on the composed graph before anything is expanded: an alias
bomb of a few lines is refused in milliseconds. No site reaches them: 500 devices with 50
inline points each are 2.8 MB, 330,000 nodes and 6 levels. A file with aliases just under
the node limit takes about 0.9 GB and 40 s of CPU to check (PyYAML keeps every node with
its position, about 600 bytes each).
Everything wrong with the text itself is a listed issue with its line, never a traceback.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml import SafeLoader
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from edge_agent.config.errors import ConfigError, ConfigIssue, Loc, format_loc, shown_path

_C_PARSER: Any = None  # libyaml's parser, when PyYAML was built with it
if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _C_PARSER

_REFERENCE = re.compile(r"\$(\$?)\{")
_NAME_DEFAULT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_STR_TAG = "tag:yaml.org,2002:str"

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64  # levels of lists, mappings and values; a site file needs fewer than 10
MAX_NODES = 1_000_000  # keys, values and list items, as written and with aliases expanded
_MOST = ", the most a config file may have"
_NODES = "keys, values and list items"
_TAG_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "timestamp": "a date",
    "binary": "base64 data",
}


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


class _Limit(Exception):
    """A file past one of the reading limits: where, and which limit."""

    def __init__(self, line: int | None, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.loc = loc
        self.message = message


class _Bounded(Composer):
    """A composer of at most MAX_NODES nodes at most MAX_DEPTH deep.

    PyYAML's composer recurses once per level: unbounded, 1,200 levels of `[` were a
    RecursionError.
    """

    depth = 0
    nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self.nodes += 1
        if self.nodes > MAX_NODES or self.depth >= MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1  # type: ignore[attr-defined]
            if self.nodes > MAX_NODES:
                raise _Limit(line, (), f"more than {MAX_NODES:,} {_NODES}{_MOST}")
            raise _Limit(line, (), f"nested deeper than {MAX_DEPTH} levels{_MOST}")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Loader(_Bounded, SafeLoader):
    """PyYAML's safe loader, all in Python: its error messages are the ones we show."""


if _C_PARSER is not None:

    class _FastLoader(_Bounded, _C_PARSER, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's scanner and parser under our composer: a 500-device site reads about
        four times faster. Its error texts differ from PyYAML's, so a file it refuses is
        read again by _Loader for the message."""

        def __init__(self, text: str) -> None:
            _C_PARSER.__init__(self, text)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            _Bounded.__init__(self)

        def dispose(self) -> None:
            """Nothing to release beyond what the parser frees itself."""

    _LOADERS: tuple[type[Any], ...] = (_FastLoader, _Loader)
else:  # PyYAML without libyaml
    _LOADERS = (_Loader,)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded(root: Node) -> dict[int, tuple[int, int]]:
    """(nodes, depth) of every collection of the document with its aliases expanded.

    Computed once per composed node (an alias is the node it names, so the graph is small
    even when its expansion is astronomical), without recursion, counts capped just past
    the limits. A node that contains itself counts once there (the walk reports it).
    """
    size: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = [size.get(id(k), (1, 1)) for k in _children(node)]
            nodes = min(1 + sum(n for n, _ in kids), MAX_NODES + 1)
            depth = min(1 + max((d for _, d in kids), default=0), MAX_DEPTH + 1)
            size[key] = (nodes, depth)
        elif key not in size and key not in open_ and not isinstance(node, ScalarNode):
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _children(node))
    return size


def _check_expanded(root: Node) -> None:
    """Raise _Limit at the first top-level entry where the expanded document passes a limit."""
    size = _expanded(root)
    nodes, depth = size.get(id(root), (1, 1))
    if nodes <= MAX_NODES and depth <= MAX_DEPTH:
        return
    entries: list[tuple[Loc, int, Node]] = []
    if isinstance(root, MappingNode):
        entries = [((str(k.value),), k.start_mark.line + 1, v) for k, v in root.value]
    elif isinstance(root, SequenceNode):
        entries = [((i,), n.start_mark.line + 1, n) for i, n in enumerate(root.value)]
    total = 1
    for loc, line, node in entries:
        entry_nodes, entry_depth = size.get(id(node), (1, 1))
        total += entry_nodes + isinstance(root, MappingNode)  # a mapping's entry has a key
        if entry_depth >= MAX_DEPTH:
            message = f"aliases (*name) nest this deeper than {MAX_DEPTH} levels{_MOST}"
            raise _Limit(line, loc, message)
        if total > MAX_NODES:
            raise _Limit(
                line,
                loc,
                f"aliases (*name) expand the file past {MAX_NODES:,} {_NODES} here{_MOST}",
            )
    raise _Limit(root.start_mark.line + 1, (), "aliases (*name) expand the file past its limits")


def _shown_scalar(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text):,} characters)"


def child(node: object, part: str | int) -> tuple[bool, object]:
    """(True, the entry) when `node` is a mapping with key `part` or a list with that index."""
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


class Lines(Mapping[Loc, int]):
    """Where each path of a document's data starts: a key's line, or a list item's.

    Only lines that differ from the enclosing entry's are stored: a point written on one
    line (`- {name: v, address: 1, type: float32}`) is one entry, not four, which is most
    of a large site's memory while it loads. Looking up a path still gives every path its
    line, and a path the data does not have the line of its deepest prefix that it has.
    """

    __slots__ = ("_data", "_items", "_stored")

    def __init__(
        self, data: object, stored: dict[Loc, int], items: dict[Loc, array[int]] | None = None
    ) -> None:
        self._data = data
        self._stored = stored
        # A list's item lines as one array of ints (0: the list's own line), by the list's
        # path: 25,000 points are 100 KB here, where a tuple key and an int each were 4 MB.
        self._items = items or {}

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest prefix of `loc` that the data has."""
        stored, items = self._stored, self._items
        for end in range(len(loc), -1, -1):
            line = stored.get(loc[:end])
            if line is not None:
                return line
            if end and type(index := loc[end - 1]) is int:
                lines = items.get(loc[: end - 1])
                if lines is not None and 0 <= index < len(lines) and lines[index]:
                    return lines[index]
        return None

    def __getitem__(self, loc: Loc) -> int:
        node = self._data
        for part in loc:
            found, node = child(node, part)
            if not found:
                raise KeyError(loc)
        line = self.line_of(loc)
        if line is None:
            raise KeyError(loc)
        return line

    def _paths(self) -> Iterator[Loc]:
        if () not in self._stored:
            return
        stack: list[tuple[Loc, object]] = [((), self._data)]
        while stack:
            loc, node = stack.pop()
            yield loc
            if isinstance(node, dict):
                stack.extend(((*loc, k), v) for k, v in reversed(node.items()))
            elif isinstance(node, list):
                stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(node))))

    def __iter__(self) -> Iterator[Loc]:
        return self._paths()

    def __len__(self) -> int:
        return sum(1 for _ in self._paths())


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML file: its data, where each path starts, and what ${...} filled in."""

    file: Path  # for messages: as given, relative when under the working directory
    data: object
    lines: Lines
    templates: Mapping[Loc, tuple[str, str]]  # path -> (text as written, text after ${...})
    issues: tuple[ConfigIssue, ...]  # duplicate keys, unset variables: found while reading

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest prefix of `loc` that the file has."""
        return self.lines.line_of(loc)

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

    def __init__(self, loader: Any, file: Path, environ: Mapping[str, str] | None):
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
        value, problem = _constructed(self.loader, node)
        if problem is not None:
            self._issue(loc, node.start_mark.line + 1, problem)
            return None
        if self.environ is None or node.tag != _STR_TAG or "${" not in value:  # type: ignore[operator]
            return value
        return _filled(self, loc, node.start_mark.line + 1, value)  # type: ignore[arg-type]


def _constructed(loader: Any, node: ScalarNode) -> tuple[object, str | None]:
    """The value of a scalar node, or None and why it cannot be read."""
    try:
        return loader.construct_object(node), None
    except yaml.YAMLError:
        raise
    except Exception:  # whatever a constructor raises is about the value
        # PyYAML's constructors let plain exceptions through: ValueError for `2024-02-30`
        # (an implicit date), `!!int x` or 4,301 digits, KeyError for `!!bool maybe`,
        # AttributeError for `!!timestamp x`.
        tag = node.tag.rsplit(":", 1)[-1]
        text = f"YAML: cannot read {_shown_scalar(node.value)} as "
        text += _TAG_WORDS.get(tag, f"!!{tag}")
        implicit = loader.resolve(ScalarNode, node.value, (True, False))
        if implicit == node.tag:
            text += " (put it in quotes if it is text)"
        return None, text


def _filled(reader: _Walker | _EventReader, loc: Loc, line: int, value: str) -> str:
    """A string with its ${...} filled from the environment, its problems listed."""
    assert reader.environ is not None
    expanded, problems = expand_env(value, reader.environ)
    for problem in problems:
        unset = problem.startswith("environment variable ")
        reader._issue(loc, line, problem, local=unset)
    reader.templates[loc] = (value, expanded)
    return expanded


class _Fallback(Exception):
    """The file uses what only the composed nodes can read: anchors and aliases, merge
    keys, tagged keys, several documents."""


_ROOT: Any = object()  # the key of the document's root in _EventReader.node
_CACHED = 4096  # plain scalars remembered by text: names, units, types, numbers repeat


class _EventReader:
    """Builds the data straight from libyaml's events, with no YAML nodes in between.

    For a file without anchors, aliases or merge keys (every site we have seen) this reads
    what _Walker reads from the composed nodes, the same data, lines, issues and limits,
    three times faster and in a fraction of the memory: a 500-device site is 330,000 nodes
    of about 600 bytes each. Anything else raises _Fallback and the file is composed.
    """

    def __init__(self, text: str, file: Path, environ: Mapping[str, str] | None) -> None:
        self.loader: Any = _FastLoader(text)
        self.file = file
        self.environ = environ
        self.nodes = 0
        self.lines: dict[Loc, int] = {}
        self.item_lines: dict[Loc, array[int]] = {}
        self.templates: dict[Loc, tuple[str, str]] = {}
        self.issues: list[ConfigIssue] = []
        # (text, plain) -> (tag, value) of scalars whose value is immutable; equal texts
        # also share one str object, which the models keep.
        self.known: dict[tuple[str, bool], tuple[str, object]] = {}

    def _issue(self, loc: Loc, line: int, message: str, *, local: bool = False) -> None:
        self.issues.append(ConfigIssue(self.file, line, format_loc(loc), message, local))

    def read(self) -> Document:
        get = self.loader.get_event
        get()  # StreamStartEvent
        event = get()
        data: object = None
        if not isinstance(event, StreamEndEvent):
            first = get()
            line = first.start_mark.line + 1
            self.lines[()] = line
            data = self.node(first, (), _ROOT, 0, line)
            get()  # DocumentEndEvent
            if not isinstance(get(), StreamEndEvent):
                raise _Fallback  # several documents: the composer says so in its words
        lines = Lines(data, self.lines, self.item_lines)
        return Document(self.file, data, lines, self.templates, tuple(self.issues))

    def count(self, event: Any, depth: int) -> None:
        """One more node at `depth`: within the limits, and no anchor or alias."""
        self.nodes += 1
        if self.nodes > MAX_NODES or depth >= MAX_DEPTH:
            line = event.start_mark.line + 1
            if self.nodes > MAX_NODES:
                raise _Limit(line, (), f"more than {MAX_NODES:,} {_NODES}{_MOST}")
            raise _Limit(line, (), f"nested deeper than {MAX_DEPTH} levels{_MOST}")
        if getattr(event, "anchor", None) is not None or not isinstance(
            event, ScalarEvent | SequenceStartEvent | MappingStartEvent
        ):
            raise _Fallback

    def skip(self, event: Any, depth: int) -> None:
        """Count the nodes of a value nobody reads (a duplicate key's), as composing would."""
        self.count(event, depth)
        if isinstance(event, ScalarEvent):
            return
        get = self.loader.get_event
        while not isinstance(event := get(), SequenceEndEvent | MappingEndEvent):
            self.skip(event, depth + 1)

    def node(self, event: Any, parent: Loc, key: Any, depth: int, line: int) -> object:
        """The data of the node `event` starts, at parent + key, whose entry is on `line`."""
        self.count(event, depth)
        kind = type(event)
        if kind is ScalarEvent:
            return self.scalar(event, parent, key)
        loc = () if key is _ROOT else (*parent, key)
        get = self.loader.get_event
        lines = self.lines
        if kind is SequenceStartEvent:
            items: list[object] = []
            item_lines = array("i")
            while type(event := get()) is not SequenceEndEvent:
                at = event.start_mark.line + 1
                item_lines.append(0 if at == line else at)
                items.append(self.node(event, loc, len(items), depth + 1, at))
            if any(item_lines):
                self.item_lines[loc] = item_lines
            return items
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        while type(event := get()) is not MappingEndEvent:
            at = event.start_mark.line + 1
            if type(event) is not ScalarEvent:
                self.skip(event, depth + 1)
                self._issue(loc, at, "a key must be a plain word, not a list or mapping")
                self.skip(get(), depth + 1)
                continue
            self.count(event, depth + 1)
            # Interned: one string per distinct key, not one per key written. Otherwise the
            # 150,000 keys of 25,000 inline points die with the read data once validated
            # and leave ~9 MB of holes that the agent's RSS keeps (issue 20).
            name: str = sys.intern(event.value)
            if event.tag is not None or (name == "<<" and event.implicit[0]):
                raise _Fallback  # a merge key, or a tag that could make one
            if name in first_line:
                message = f"duplicate key {name!r} (first at line {first_line[name]})"
                self._issue((*loc, name), at, message)
                self.skip(get(), depth + 1)
                continue
            first_line[name] = at
            if at != line:
                lines[(*loc, name)] = at
            result[name] = self.node(get(), loc, name, depth + 1, at)
        return result

    def scalar(self, event: Any, parent: Loc, key: Any) -> object:
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            plain: bool = event.implicit[0]
            cached = self.known.get((text, plain))
            if cached is not None:
                tag, value = cached
            elif not plain:
                tag, value = _STR_TAG, text
            else:
                tag = self.loader.resolve(ScalarNode, text, event.implicit)
                value, problem = self._construct(tag, event)
                if problem is not None:
                    return self._unreadable(event, parent, key, problem)
                if len(self.known) < _CACHED and isinstance(value, str | int | float | None):
                    self.known[(text, plain)] = (tag, value)
        else:
            value, problem = self._construct(tag, event)
            if problem is not None:
                return self._unreadable(event, parent, key, problem)
        if self.environ is None or tag != _STR_TAG or "${" not in text:
            return value
        loc = () if key is _ROOT else (*parent, key)
        return _filled(self, loc, event.start_mark.line + 1, value)  # type: ignore[arg-type]

    def _construct(self, tag: str, event: Any) -> tuple[object, str | None]:
        if tag == _STR_TAG:
            return event.value, None
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        loader = self.loader
        try:
            return _constructed(loader, node)
        finally:
            loader.constructed_objects.clear()
            loader.recursive_objects.clear()

    def _unreadable(self, event: Any, parent: Loc, key: Any, problem: str) -> object:
        """None, the value of a scalar that cannot be read, and its issue."""
        loc = () if key is _ROOT else (*parent, key)
        self._issue(loc, event.start_mark.line + 1, problem)
        return None


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


def _read_bytes(path: Path) -> list[bytes]:
    """The file's bytes in chunks, no more than one chunk past the limit (/dev/zero ends)."""
    chunks: list[bytes] = []
    size = 0
    with path.open("rb") as f:
        # Small reads: read(MAX_FILE_BYTES + 1) allocates its whole buffer up front.
        while size <= MAX_FILE_BYTES and (chunk := f.read(65536)):
            chunks.append(chunk)
            size += len(chunk)
    return chunks


def _decode(chunks: list[bytes], file: Path) -> str:
    """The text of a file's bytes, with newlines as Python's text mode reads them."""
    if sum(len(c) for c in chunks) > MAX_FILE_BYTES:
        line, size = 1, 0
        for chunk in chunks:  # the line where the limit falls
            line += chunk.count(b"\n", 0, MAX_FILE_BYTES - size)
            size += len(chunk)
        mib = MAX_FILE_BYTES // (1024 * 1024)
        raise ConfigError([ConfigIssue(file, line, "", f"larger than {mib} MiB{_MOST}")])
    raw = b"".join(chunks)
    chunks.clear()  # the file is held once, not twice, while it is decoded
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte {exc.start})"
        raise ConfigError([ConfigIssue(file, line, "", message)]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unprintable(text: str, file: Path) -> list[ConfigIssue]:
    """A ConfigIssue for each of the first characters YAML does not allow in a file."""
    issues: list[ConfigIssue] = []
    for match in yaml.reader.Reader.NON_PRINTABLE.finditer(text):
        if len(issues) == 10:  # binary garbage would list thousands
            break
        char = match.group()
        line = text.count("\n", 0, match.start()) + 1
        column = match.start() - text.rfind("\n", 0, match.start())
        what = "control character" if unicodedata.category(char) == "Cc" else "character"
        message = f"YAML syntax: {what} U+{ord(char):04X} is not allowed in YAML (column {column})"
        issues.append(ConfigIssue(file, line, "", message))
    return issues


def _document(text: str, file: Path, environ: Mapping[str, str] | None) -> Document:
    unprintable = _unprintable(text, file)
    if unprintable:  # PyYAML's reader would refuse the first one when it is made
        raise ConfigError(unprintable)
    loaders = _LOADERS
    if _C_PARSER is not None:
        try:
            return _EventReader(text, file, environ).read()
        except _Limit as exc:
            raise _refusal(file, exc) from None
        except _Fallback:
            pass
        except yaml.YAMLError:
            loaders = (_Loader,)  # libyaml refuses it: PyYAML's words (the golden error texts)
    for loader_class in loaders:
        try:
            return _compose(loader_class(text), text, file, environ)
        except yaml.YAMLError as exc:
            if loader_class is not _Loader:
                continue  # read again for PyYAML's words (the golden error texts)
            raise ConfigError([_syntax_issue(file, exc)]) from None
    raise AssertionError("_Loader is the last loader")  # pragma: no cover


def _refusal(file: Path, limit: _Limit) -> ConfigError:
    return ConfigError([ConfigIssue(file, limit.line, format_loc(limit.loc), limit.message)])


def _compose(loader: Any, text: str, file: Path, environ: Mapping[str, str] | None) -> Document:
    try:
        root = loader.get_single_node()
        walker = _Walker(loader, file, environ)
        data = None
        if root is not None:
            _check_expanded(root)
            data = walker.walk(root, ())
    except _Limit as exc:
        raise _refusal(file, exc) from None
    finally:
        loader.dispose()
    lines = dict(walker.lines)
    if root is not None:
        lines[()] = root.start_mark.line + 1
    return Document(file, data, Lines(data, lines), dict(walker.templates), tuple(walker.issues))


def read_yaml(path: Path, *, environ: Mapping[str, str] | None) -> Document:
    """Parse one YAML file; raises ConfigError when it cannot be read or is not YAML.

    `environ` fills ${...} in strings; None leaves them as written (files that take none).
    """
    file = shown_path(path)
    try:
        chunks = _read_bytes(path)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(file, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(file, None, "", "is a directory, not a file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read: {exc.strerror}")]) from None
    return _document(_decode(chunks, file), file, environ)


def read_data(path: Path) -> object:
    """The data of a YAML file other than a site or a profile (a tariff calendar, a
    coefficient table, an uplink template), read within the same limits.

    OSError as from open(); any other problem is a ValueError naming the file and line.
    """
    chunks = _read_bytes(path)
    file = shown_path(path)
    try:
        doc = _document(_decode(chunks, file), file, None)
    except ConfigError as exc:
        raise ValueError("; ".join(str(issue) for issue in exc.issues)) from None
    if doc.issues:  # duplicate keys
        raise ValueError("; ".join(str(issue) for issue in doc.issues))
    return doc.data

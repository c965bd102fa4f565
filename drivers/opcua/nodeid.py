"""Node references as written in a site config: namespace URI plus identifier, or a browse path.

A server numbers its namespaces in its NamespaceArray, and the number of a namespace may
change when the server restarts or loads another model; its URI does not. So a point
names its node by URI (the `nsu=` form of OPC 10000-6 §5.3.1.10):

    nsu=urn:plant:plc;s=Tank1.Temperature     string identifier
    nsu=urn:plant:plc;i=1002                  numeric identifier (0..2^32-1)
    nsu=urn:plant:plc;g=09087e75-8e5e-499b-954f-f2a9603db28a    GUID
    nsu=urn:plant:plc;b=M/RbKBsRVkePCePcx24oRA==                 opaque (base64)
    i=2258   or  ns=0;i=2258                  namespace 0, the standard nodes

`ns=2;s=...` (an index other than 0) is refused with a hint to use `nsu=`. A browse path
walks browse names from the Objects folder instead, each name in a namespace given by URI:

    path: PLC1/Tank1/Temperature              with `namespace: urn:plant:plc`
    path: ["nsu=urn:plant:plc;PLC1", "nsu=http://x.org/UA/DI/;Name"]   mixed namespaces

This module is pure parsing; the driver turns references into asyncua NodeIds once it has
read the server's NamespaceArray.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Literal

IdKind = Literal["i", "s", "g", "b"]
UA_NAMESPACE = "http://opcfoundation.org/UA/"  # namespace 0

_PREFIX = re.compile(
    r"^(?:nsu=(?P<uri>[^;]+);|ns=(?P<index>\d+);)?(?P<kind>[isgb])=(?P<id>.*)$", re.DOTALL
)
_PATH_SEGMENT = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<name>.+)$")
MAX_UINT32 = 2**32 - 1


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node by namespace URI (None: namespace 0) and identifier."""

    namespace_uri: str | None
    kind: IdKind
    identifier: str | int

    def __str__(self) -> str:
        ns = f"nsu={self.namespace_uri};" if self.namespace_uri is not None else ""
        return f"{ns}{self.kind}={self.identifier}"


@dataclass(frozen=True, slots=True)
class BrowsePath:
    """Browse names (namespace URI, name) from the Objects folder down to a node."""

    segments: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        uris = {uri for uri, _ in self.segments}
        if len(uris) == 1:
            return "/".join(name for _, name in self.segments) + f" (nsu={uris.pop()})"
        return "/".join(f"nsu={uri};{name}" for uri, name in self.segments)


def parse_node(text: str) -> NodeRef:
    """Parse `nsu=URI;s=...`, `nsu=URI;i=...` (also g=, b=) or a namespace-0 id."""
    match = _PREFIX.match(text.strip())
    if match is None:
        raise ValueError(
            f"node {text!r} is not a node id; write nsu=<namespace URI>;s=<name> or "
            "nsu=<namespace URI>;i=<number> (`edge-agent browse` lists them)"
        )
    index, uri = match.group("index"), match.group("uri")
    if index is not None and int(index) != 0:
        raise ValueError(
            f"node {text!r} names its namespace by index ns={index}, which a server may "
            "renumber; write nsu=<namespace URI>;... instead (`edge-agent browse` shows it)"
        )
    kind: IdKind = match.group("kind")  # type: ignore[assignment]
    raw = match.group("id")
    if uri is not None and uri.strip() != uri:
        raise ValueError(f"node {text!r}: the namespace URI has leading or trailing spaces")
    if uri == UA_NAMESPACE:
        uri = None
    if raw == "":
        raise ValueError(f"node {text!r} has an empty identifier")
    identifier: str | int = raw
    if kind == "i":
        if not raw.isdigit() or int(raw) > MAX_UINT32:
            raise ValueError(f"node {text!r}: i= takes a whole number 0..{MAX_UINT32}")
        identifier = int(raw)
    elif kind == "g":
        try:
            identifier = str(uuid.UUID(raw))
        except ValueError:
            raise ValueError(f"node {text!r}: g= takes a GUID like 09087e75-8e5e-...") from None
    elif kind == "b":
        try:
            base64.b64decode(raw, validate=True)
        except ValueError:
            raise ValueError(f"node {text!r}: b= takes base64 bytes") from None
    return NodeRef(uri, kind, identifier)


def parse_path(path: str | tuple[str, ...] | list[str], namespace: str | None) -> BrowsePath:
    """Browse path segments; a bare name takes `namespace` (the point's or device's)."""
    parts = [p for p in path.split("/") if p] if isinstance(path, str) else list(path)
    if not parts:
        raise ValueError("path is empty; give browse names from the Objects folder down")
    segments: list[tuple[str, str]] = []
    for part in parts:
        match = _PATH_SEGMENT.match(part)
        if match is not None:
            segments.append((match.group("uri"), match.group("name")))
        elif part.startswith(("ns=", "nsu=")):
            raise ValueError(f"path segment {part!r}: write nsu=<namespace URI>;<browse name>")
        elif namespace is None:
            raise ValueError(
                f"path segment {part!r} needs a namespace: set namespace: <URI> on the point "
                "or device, or write nsu=<URI>;" + part
            )
        else:
            segments.append((namespace, part))
    return BrowsePath(tuple(segments))

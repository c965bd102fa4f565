"""pydantic validation errors as a plant engineer reads them, placed at their file line.

pydantic says `('devices', 2, 'modbus', 'points', 5, 'adress') Extra inputs are not
permitted`; this module turns that into

    site.yaml:41 devices[2].points[5]: unknown key 'adress' (did you mean 'address'?)

by dropping the tag pydantic inserts for a tagged union ('modbus'), looking the path up in
the document's line map, and rewording the common error types. A value produced by
${...} is shown as written, never as substituted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from drivers.config_numbers import BOOL_NOT_NUMBER
from drivers.modbus.type_names import foreign_key_hint
from drivers.names import NAME_PATTERN
from edge_agent.config.document import Document, child
from edge_agent.config.errors import ConfigIssue, Loc
from edge_agent.config.foreign_keys import driver_hint
from edge_agent.config.foreign_keys import foreign_key_hint as connection_key_hint
from edge_agent.mqtt.config import TOPIC_PREFIX

DISCRIMINATOR = "driver"  # the key that picks a device entry's model

Model = TypeVar("Model", bound=BaseModel)
Errors = list[tuple[Loc, ErrorDetails]]
"""pydantic errors, each with its loc in the document's data (tags dropped)."""


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional down to the type that matters."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(tp: Any) -> tuple[object, ...]:
    if not _is_model(tp):
        return ()
    tag_field = tp.model_fields.get(DISCRIMINATOR)
    if tag_field is None or get_origin(tag_field.annotation) is not Literal:
        return ()
    return get_args(tag_field.annotation)


def _descend(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if _is_model(tp):
        if isinstance(part, str):
            model_field = tp.model_fields.get(part)
            if model_field is not None:
                return model_field.annotation
            if part in _tags(tp):  # the tag pydantic puts in a tagged union's loc
                return tp
        return None
    origin = get_origin(tp)
    if origin in (tuple, list) and isinstance(part, int):
        return get_args(tp)[0]
    if origin in (Union, UnionType):
        for member in get_args(tp):
            if part in _tags(_unwrap(member)):
                return _unwrap(member)
    return None


def _known_keys(root: type[BaseModel], pydantic_loc: Loc) -> list[str]:
    """The keys the model at `pydantic_loc` accepts (empty when it cannot be told)."""
    tp: Any = root
    for part in pydantic_loc:
        tp = _descend(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if _is_model(tp) else []


def _data_loc(data: object, pydantic_loc: Loc) -> Loc:
    """pydantic's loc without the tags it inserts for tagged unions (devices[2].modbus.url)."""
    out: list[str | int] = []
    node = data
    tag_skipped = False
    for part in pydantic_loc:
        if isinstance(node, dict) and not tag_skipped and node.get(DISCRIMINATOR) == part:
            tag_skipped = True
        else:
            found, node = child(node, part)
            if found:
                tag_skipped = False
            out.append(part)
    return tuple(out)


def _quoted_words(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def closest(word: object, choices: Sequence[str]) -> str | None:
    """The one choice close to `word`; None when none is, or two are equally close."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, str(word), c).ratio(), c) for c in choices), reverse=True
    )
    if not scored or scored[0][0] < 0.6:
        return None
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return None  # ABDC is as near ABCD as BADC: a guess would mislead
    return scored[0][1]


def suggest(word: object, choices: Sequence[str]) -> str:
    """The hint "did you mean 'x'?" for the one close choice, else an empty string."""
    close = closest(word, choices)
    return f"did you mean {close!r}?" if close else ""


def _shown(doc: Document, loc: Loc, value: object) -> str:
    """A value for a message: as written in the file when ${...} produced it."""
    if loc in doc.templates:
        return repr(doc.templates[loc][0])
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _name_of(loc: Loc) -> str:
    """What a message calls the value at `loc`: "address", "each entry of points"."""
    if not loc:
        return "the file"
    names = [part for part in loc if isinstance(part, str)]
    if isinstance(loc[-1], int):
        return f"each entry of {names[-1]}" if names else "each entry"
    return str(loc[-1])


def _message(error: ErrorDetails, doc: Document, loc: Loc) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = _shown(doc, loc, error["input"])
    name = _name_of(loc)
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if kind == "assertion_error":
        return error["msg"].removeprefix("Assertion failed, ")
    if kind in ("enum", "literal_error"):
        expected = _quoted_words(str(ctx.get("expected", "")))
        hint = suggest(error["input"], expected)
        text = f"{name} must be one of {', '.join(expected)}; got {got}"
        return f"{text} ({hint})" if hint else text
    if kind == "union_tag_invalid":
        known = _quoted_words(str(ctx.get("expected_tags", "")))
        hint = suggest(ctx.get("tag"), known)
        text = f"unknown {DISCRIMINATOR} {_shown(doc, (*loc, DISCRIMINATOR), ctx.get('tag'))}"
        return f"{text} (known: {', '.join(known)}{'; ' + hint if hint else ''})"
    if kind == "union_tag_not_found":
        hint = driver_hint(doc.at(loc)) or "the kind of device, e.g. modbus"
        return f"missing required key {DISCRIMINATOR!r} ({hint})"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NAME_PATTERN:
            return (
                f"{name} {got} may use only letters, digits, _ . and - (and not start with . or -)"
            )
        if ctx.get("pattern") == TOPIC_PREFIX:
            return f"{name} {got} may not contain # + spaces or empty levels, nor start with $ or /"
        return f"{name} {got} does not match {ctx.get('pattern')}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{name} must be {words} {ctx.get(key)}; got {got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{name} must be a whole number; got {got}"
    if kind in ("float_parsing", "float_type"):
        return f"{name} must be a number; got {got}"
    if kind == BOOL_NOT_NUMBER:
        return f"{name} must be {ctx.get('expected')}; got {got}"
    if kind == "finite_number":
        return f"{name} must be a finite number; got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{name} must be true or false; got {got}"
    if kind == "string_type":
        return f"{name} must be text; got {got} (put it in quotes)"
    if kind in ("string_too_long", "string_too_short"):
        return f"{name} {error['msg'].removeprefix('String ')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{name} must be a mapping (key: value lines); got {got}"
    if kind in ("tuple_type", "list_type"):
        return f"{name} must be a list (lines starting with -); got {got}"
    if kind == "too_short":
        return f"{name} needs at least {ctx.get('min_length')} entry; got none"
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def _issue_from(error: ErrorDetails, doc: Document, root: type[BaseModel]) -> ConfigIssue:
    loc = _data_loc(doc.data, tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        key = loc[-1]
        known = _known_keys(root, tuple(error["loc"])[:-1])
        hint = (
            foreign_key_hint(key, doc.at(loc[:-1]))
            or connection_key_hint(key, doc.at(loc[:-1]), known, loc[:-1])
            or suggest(key, known)
            or (f"known keys: {', '.join(known)}" if known else "")
        )
        text = f"unknown key {str(key)!r}" + (f" ({hint})" if hint else "")
        return doc.issue(loc[:-1], text, line_loc=loc)
    if error["type"] == "missing":
        return doc.issue(loc[:-1], f"missing required key {str(loc[-1])!r}")
    if error["type"] == "union_tag_invalid":
        return doc.issue(loc, _message(error, doc, loc), line_loc=(*loc, DISCRIMINATOR))
    return doc.issue(loc, _message(error, doc, loc))


def issues_from(errors: Errors, doc: Document, root: type[BaseModel]) -> list[ConfigIssue]:
    """Issues for pydantic errors; a misspelt key is reported as unknown, not also missing."""
    misspelt: set[Loc] = set()
    for loc, error in errors:
        if error["type"] == "extra_forbidden":
            meant = closest(loc[-1], _known_keys(root, tuple(error["loc"])[:-1]))
            if meant is not None:
                misspelt.add((*loc[:-1], meant))
    return [
        _issue_from(error, doc, root)
        for loc, error in errors
        if not (error["type"] == "missing" and loc in misspelt)
    ]


def validate(model: type[Model], doc: Document) -> tuple[Model | None, Errors]:
    """The model, or the errors with their loc in the document's data."""
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        errors = [(_data_loc(doc.data, tuple(e["loc"])), e) for e in exc.errors()]
    # pydantic counts a list whose every item failed as empty; the item errors say it all.
    kept = [
        (loc, e)
        for loc, e in errors
        if not (e["type"] == "too_short" and isinstance(doc.at(loc), list) and doc.at(loc))
    ]
    return None, kept

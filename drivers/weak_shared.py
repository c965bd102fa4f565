"""One object per distinct key, shared by whoever asks while anyone still holds it.

Sites repeat themselves: 500 meters of one model have equal point lists and equal
register blocks. What is built from such a key and holds nothing of one device (a block
decoder, a message document, a name list) is built once and shared; kept weakly, so a
reload that drops the last holder drops it too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WeakShared(Generic[K, V]):
    """`build(key)` once per distinct key while the result is referenced elsewhere."""

    def __init__(self, build: Callable[[K], V]) -> None:
        self._build = build
        self._live: weakref.WeakValueDictionary[K, V] = weakref.WeakValueDictionary()

    def __call__(self, key: K) -> V:
        found = self._live.get(key)
        if found is None:
            found = self._live[key] = self._build(key)
        return found

"""Memory bounds in tests: the peak of Python's allocations (tracemalloc) from a mark on."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

MB = 1024 * 1024


class Allocations:
    """The peak of what was allocated after `mark()`, not counting what existed then."""

    def __init__(self) -> None:
        self.base = 0

    def mark(self) -> None:
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]

    def peak_mb(self) -> float:
        return (tracemalloc.get_traced_memory()[1] - self.base) / MB


@contextmanager
def traced() -> Iterator[Allocations]:
    """Allocations traced for the block (tracemalloc slows Python down several times)."""
    tracemalloc.start()
    try:
        yield Allocations()
    finally:
        tracemalloc.stop()

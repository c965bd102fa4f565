"""The agent's long-lived objects, kept out of the cyclic garbage collector's way.

A site's config models, read plans, drivers and encoders live as long as the agent: at 500
devices with 50 inline points each, some 200,000 objects that Python's collector walks on
every full collection, 100-600 ms on the event loop each time (a poll that much late, issue
20). Once start-up has built them, `settle` collects once and freezes whatever survives
(gc.freeze: a permanent generation that collections skip); what the agent makes later is
collected as before.

Settling also raises the youngest generation's threshold (700 -> YOUNG_THRESHOLD objects):
a full collection comes after ten middle ones, each after ten young ones, so the rest of
the heap (connections, tasks: ~33,000 objects at 500 devices, 20-30 ms to walk) is walked
about every 25 minutes instead of every two, and a young collection walks at most that
many objects, a millisecond or two.

A frozen object is still freed when its last reference goes; only garbage that holds
itself in a cycle stays. Hence when: before the first poll, when no connection exists yet.
Frozen after connecting, a connection's objects leak when it reconnects (measured: ~36
objects per reconnect, bench/RESULTS.md). A reload, which drops the lines it restarts,
thaws everything first and settles again once the new lines are built; the connections of
the lines it keeps are frozen then, so each of those lines may leave one old connection
behind if it reconnects later (bounded: one per kept line per reload).
"""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)


YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def settle() -> None:
    """Collect once, then freeze every object that survives."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    _give_back()


def _give_back() -> None:
    """Return to the system the heap memory start-up freed (the file as read, the copies
    validation made): glibc keeps it otherwise, ~4 MB at 500 devices. Not glibc: nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
    log.debug("%d long-lived objects frozen out of garbage collection", gc.get_freeze_count())


def thaw() -> None:
    """Give the frozen objects back to the collector (before dropping some of them)."""
    gc.unfreeze()

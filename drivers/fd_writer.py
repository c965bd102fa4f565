"""Writing to a non-blocking tty from an asyncio loop.

A pty, or a UART driver with a small buffer, takes only part of a frame at a time; what
it cannot take yet is kept and written when the descriptor is writable again, in order.
Serial lines of the drivers and of the simulators share this.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


class FdWriter:
    """Buffered, ordered writes to one non-blocking file descriptor."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, *, on_error: Callable[[OSError], None]
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._on_error = on_error
        self._out = bytearray()

    def write(self, data: bytes) -> None:
        """Write now what the descriptor takes; keep the rest for when it is writable."""
        if self._out:  # a write is already waiting for the tty to drain
            self._out += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._on_error(exc)
            return
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            sent = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.stop()
            self._on_error(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self._fd)

    def stop(self) -> None:
        """Drop what waits and stop watching the descriptor; idempotent."""
        if self._out and not self._loop.is_closed():
            self._loop.remove_writer(self._fd)
        self._out.clear()

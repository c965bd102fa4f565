"""A serial port on a pseudo-terminal that tolerates being configured to what it already is.

pyserial applies the port settings with tcsetattr when it opens the port, and again when
pymodbus then sets `timeout = 0` and `write_timeout = 0`; each time it asks for parity bits,
which a pty does not keep (a pty has no parity). POSIX lets tcsetattr fail with EINVAL when
none of the asked changes can be made, and Linux does: with parity E or O, the default of
Modbus RTU, the line never opened on a pty (socat bridges, virtual COM ports) while it
opens on a UART; and the first open of a fresh pty succeeded only because it changed other
settings, so the next start of the agent on the same pty failed. On a pty, EINVAL from
tcsetattr can only mean that, so it is let pass; any other error is raised.
"""

from __future__ import annotations

import errno
import termios

import serial


class PtySerial(serial.Serial):  # type: ignore[misc]  # pyserial ships no types
    """pyserial's POSIX Serial, for a path given as pty:///dev/pts/N."""

    def _reconfigure_port(self, force_update: bool = False) -> None:
        try:
            super()._reconfigure_port(force_update=force_update)
        except termios.error as exc:
            if not exc.args or exc.args[0] != errno.EINVAL:
                raise


def serial_class_for_url(url: str) -> tuple[str, type[serial.Serial]]:
    """pyserial's hook: the device path without the scheme, and the class to open it."""
    return url.removeprefix("pty://"), PtySerial

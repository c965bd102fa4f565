"""pyserial URL handlers of the serial drivers (Modbus RTU, DL/T 645).

pyserial finds `protocol_<scheme>` modules in the packages listed in
`serial.protocol_handler_packages`, its documented extension point. The drivers (and
pymodbus, for Modbus RTU) open a line with `serial.serial_for_url(line_url(path))`; for a
pseudo-terminal that is `pty://path`, opened by `protocol_pty.PtySerial`.
"""

from __future__ import annotations

import os
import stat

import serial

# The majors Linux gives pseudo-terminal slaves, /dev/pts/N (admin-guide/devices.txt).
_PTY_MAJORS = range(136, 144)

if __name__ not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append(__name__)


def is_pty(path: str) -> bool:
    """True for a pseudo-terminal (socat, ser2net and virtual COM drivers make these)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in _PTY_MAJORS


def line_url(path: str) -> str:
    """What pymodbus is given to open `path`: `pty://path` for a pseudo-terminal."""
    return f"pty://{path}" if is_pty(path) else path

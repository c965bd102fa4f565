"""A DL/T 645-2007 meter served by another vendor's stack: PyPI's `dlt645` (Apache-2.0).

    python meter_server.py tcp PORT                 the frames over TCP, as a converter
    python meter_server.py rtu DEVICE BAUD PARITY   on a serial device

Prints "listening" once it serves. The values are fixed and known to the test
(tests/e2e/test_dlt645_foreign.py). The library takes an address string in the order the
bytes go on the wire (A0 first), where the nameplate (and our config) prints A5 first: the
meter whose nameplate reads 123456781012 is set_address("121078563412") here.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime

from dlt645 import Demand, MeterServerService, disable_logging

NAMEPLATE = "123456781012"
VALUES_00 = {0x00010000: 12345.67, 0x00020000: 50.5, 0x00010100: 1234.56}
VALUES_02 = {
    0x02010100: 230.1,
    0x02010200: 229.8,
    0x02020100: 5.123,
    0x02030000: 1.2345,
    0x02800002: 50.01,
}
DEMAND = (0x01010000, 78.0, datetime(2026, 11, 30, 12, 15))


def main(argv: list[str]) -> int:
    disable_logging()
    if argv[:1] == ["tcp"] and len(argv) == 2:
        svc = MeterServerService.new_tcp_server("127.0.0.1", int(argv[1]), 3.0)
    elif argv[:1] == ["rtu"] and len(argv) == 4:
        svc = MeterServerService.new_rtu_server(argv[1], 8, 1, int(argv[2]), argv[3], 1.0)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    wire_order = "".join(reversed([NAMEPLATE[i : i + 2] for i in range(0, 12, 2)]))
    svc.set_address(wire_order)
    for di, value in VALUES_00.items():
        svc.set_00(di, value)
    for di, value in VALUES_02.items():
        svc.set_02(di, value)
    svc.set_01(DEMAND[0], Demand(DEMAND[1], DEMAND[2]))
    if not svc.server.start():
        print("the server did not start", file=sys.stderr)
        return 1
    print("listening", flush=True)
    threading.Event().wait()  # served by the library's thread until killed
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

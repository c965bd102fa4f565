"""The diagnosis subcommands of `edge-agent`: read, probe, scan, write (Modbus, no config).

They take a device URL as in a site file (tcp://, rtu:///dev/tty...?baudrate=, rtu+tcp://)
and talk to the device directly; stop the agent first on a serial line, which only one
program can open. Exit codes: 0 an answer, 1 no answer (or no match), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import sys

from drivers.modbus.addressing import Addressing, looks_modicon, parse_number, to_protocol
from drivers.modbus.codec import Order, PointType, Table
from drivers.reading import DeviceUnreachable

# The diagnosis modules load pymodbus; they are imported when a diagnosis command runs, so
# every other command (and `--version`) starts without them.

DIAGNOSE_COMMANDS = frozenset({"read", "probe", "scan", "write"})
URL_HELP = "tcp://host:port, rtu:///dev/ttyUSB0?baudrate=9600&parity=E or rtu+tcp://host:port"


# Other protocols' tools, named when a user points these Modbus commands at their devices.
OTHER_PROTOCOL_TOOLS = {
    "opc.tcp": "for OPC UA use asyncua's uaread -u URL -n NODE and uals -u URL -l -d 2 "
    "(installed with edge-agent), or a device with its point in a site file: edge-agent plan",
    "s7": "for Siemens S7 put the point in a site file and run edge-agent run "
    "(edge-agent simulate serves a test CPU)",
}


def _modbus_url(text: str) -> str:
    """The URL as typed, unless it names another protocol's device (said before the
    address is read as a register number, which an OPC UA node id is not)."""
    scheme = text.partition("://")[0].lower()
    tool = OTHER_PROTOCOL_TOOLS.get(scheme)
    if tool is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: read, probe, scan and write speak Modbus; {tool}"
        )
    return text


ADDRESS_HELP = "register address as --addressing says (default 0-based; 0x hex too)"


def _address(text: str) -> tuple[int, int | None]:
    """The number as typed (with its digit count); --addressing says what it means."""
    try:
        return parse_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _addressing_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--addressing",
        type=Addressing,
        choices=list(Addressing),
        default=Addressing.ZERO_BASED,
        help="how the address is written: zero_based (the protocol's, default), one_based "
        "(manuals, mbpoll, modpoll), modicon (40001 = holding 0, 30001 = input 0, ...)",
    )


def resolve_address(args: argparse.Namespace) -> str | None:
    """Turn args.address (as typed) and args.table into the protocol's table and 0-based
    address, as a site file's `addressing:` does; a note to print when a 0-based number
    looks like Modicon notation. ValueError when the number means nothing."""
    given: Table | None = args.table
    if args.address is None:  # scan's default: the first register, however it is written
        args.address, args.table = 0, given or Table.HOLDING
        return None
    number, digits = args.address
    table, args.address = to_protocol(args.addressing, number, given, digits=digits)
    if args.command == "probe" and table.is_bits:
        raise ValueError(f"{number} is a {table} address; probe reads registers")
    if args.command != "probe" or args.addressing is Addressing.MODICON:
        args.table = table
    if args.addressing is not Addressing.ZERO_BASED:
        return None
    meant = looks_modicon(table, number)
    if meant is None:
        return None
    return (
        f"note: {number} is read counting from 0 ({table} {number}, 0x{number:04X}); "
        f"if the manual prints Modicon numbers, --addressing modicon reads {meant[0]} {meant[1]}"
    )


def _point_type(text: str) -> PointType:
    from drivers.modbus.type_names import point_type_name

    names = ", ".join(t for t in PointType if t is not PointType.BIT)
    try:
        point_type = PointType(str(point_type_name(text)))  # FLOAT32 too; 32float: float32
    except ValueError as exc:
        message = str(exc) if "write" in str(exc) else f"unknown type {text!r} (use {names})"
        raise argparse.ArgumentTypeError(message) from exc
    if point_type is PointType.BIT:
        raise argparse.ArgumentTypeError(f"read a bit's register as uint16 (types: {names})")
    return point_type


def _order(text: str) -> str:
    from drivers.modbus.type_names import order_name

    try:
        name = str(order_name(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if name not in Order.__members__:
        raise argparse.ArgumentTypeError(f"unknown order {text!r} (use ABCD, BADC, CDAB, DCBA)")
    return name


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def _ids(text: str) -> list[int]:
    from edge_agent.diagnose.scan import parse_ids

    try:
        return parse_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_diagnose_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add read, probe and scan to the command's subparsers."""
    read = sub.add_parser("read", help="read one point once and show it in all four orders")
    read.add_argument("url", type=_modbus_url, help=URL_HELP)
    read.add_argument("address", type=_address, help=ADDRESS_HELP)
    read.add_argument(
        "--type",
        dest="point_type",
        type=_point_type,
        default=PointType.UINT16,
        metavar="TYPE",
        help="int16, uint16, int32, uint32, int64, uint64, float32, float64, string, "
        "bcd16, bcd32, bool (default uint16)",
    )
    read.add_argument("--length", type=int, default=None, help="registers of a string")
    read.add_argument("--scale", type=float, default=1.0, help="multiply by this (default 1)")
    read.add_argument(
        "--count", type=_positive_int, default=1, help="values of the type to read (default 1)"
    )
    read.add_argument(
        "--poll",
        type=_positive_float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="read again every SECONDS (default 1) until Ctrl-C",
    )
    read.add_argument("--polls", type=_positive_int, default=None, help="stop after N polls")
    _common(read, tables=True)
    _addressing_option(read)

    probe = sub.add_parser(
        "probe", help="find the type, order and scale that read a register as an expected value"
    )
    probe.add_argument("url", type=_modbus_url, help=URL_HELP)
    probe.add_argument("address", type=_address, help=ADDRESS_HELP)
    probe.add_argument("--expect", type=float, required=True, help="the value you expect, e.g. 230")
    probe.add_argument(
        "--tolerance", type=float, default=0.05, help="relative, default 0.05 (5 %%)"
    )
    probe.add_argument(
        "--table",
        type=Table,
        choices=[Table.HOLDING, Table.INPUT],
        default=None,
        help="only this table (default: holding and input)",
    )
    _common(probe, tables=False)
    _addressing_option(probe)

    scan = sub.add_parser("scan", help="find the unit ids that answer on a bus or gateway")
    scan.add_argument("url", type=_modbus_url, help=URL_HELP)
    scan.add_argument("--ids", type=_ids, default=list(range(1, 248)), help="default 1-247")
    scan.add_argument("--address", type=_address, default=None, help="register to read (default 0)")
    scan.add_argument("--table", type=Table, choices=list(Table), default=None)
    _addressing_option(scan)
    scan.add_argument(
        "--timeout", type=float, default=0.3, help="seconds to wait per id (default 0.3)"
    )
    scan.add_argument("--device-id", type=int, default=1, help=argparse.SUPPRESS)

    write = sub.add_parser("write", help="write one point once (commissioning), then read it back")
    write.add_argument("url", type=_modbus_url, help=URL_HELP)
    write.add_argument("address", type=_address, help=ADDRESS_HELP)
    write.add_argument("value", help="in engineering units: 42.5, true/false for a coil, text")
    write.add_argument(
        "--type",
        dest="point_type",
        type=_point_type,
        default=PointType.UINT16,
        metavar="TYPE",
        help="as for read; bool writes a coil (default uint16)",
    )
    write.add_argument("--order", type=_order, default="ABCD", help="ABCD (default), BADC, ...")
    write.add_argument("--length", type=int, default=None, help="registers of a string")
    write.add_argument("--scale", type=float, default=1.0, help="as the point's scale (default 1)")
    write.add_argument("--yes", action="store_true", help="write without asking")
    _common(write, tables=True)
    _addressing_option(write)


def _common(p: argparse.ArgumentParser, *, tables: bool) -> None:
    p.add_argument("--device-id", type=int, default=1, help="unit id (default 1)")
    p.add_argument("--timeout", type=float, default=1.0, help="answer timeout in s (default 1)")
    if tables:
        p.add_argument("--table", type=Table, choices=list(Table), default=None)


def run_diagnose(args: argparse.Namespace) -> int:
    """Run the parsed diagnosis subcommand; the exit code."""
    try:
        note = resolve_address(args)
    except ValueError as exc:
        print(f"edge-agent {args.command}: {exc}", file=sys.stderr)
        return 2
    if note is not None:
        print(note, file=sys.stderr)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace) -> int:
    from edge_agent.diagnose.probe import run_probe
    from edge_agent.diagnose.read import ReadFailed, run_read

    try:
        if args.command == "read":
            if args.poll is not None or args.polls is not None:
                return await _poll(args)
            lines = await run_read(
                args.url,
                args.address,
                point_type=args.point_type,
                table=args.table,
                device_id=args.device_id,
                length=args.length,
                scale=args.scale,
                timeout_s=args.timeout,
                count=args.count,
            )
            print("\n".join(lines))
            return 0
        if args.command == "probe":
            lines, found = await run_probe(
                args.url,
                args.address,
                expected=args.expect,
                tables=(args.table,) if args.table else (Table.HOLDING, Table.INPUT),
                device_id=args.device_id,
                tolerance=args.tolerance,
                timeout_s=args.timeout,
            )
            print("\n".join(lines))
            return 0 if found else 1
        if args.command == "write":
            return await _write(args)
        return await _scan(args)
    except (ReadFailed, DeviceUnreachable) as exc:
        reason = exc.reason if isinstance(exc, DeviceUnreachable) else str(exc)
        print(f"{args.url}: {reason}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a URL that does not parse
        print(f"edge-agent {args.command}: {exc}", file=sys.stderr)
        return 2


async def _write(args: argparse.Namespace) -> int:
    from edge_agent.diagnose.write import WriteNotSent, run_write

    def ask(_frame: str) -> bool:
        if not sys.stdin.isatty():
            print("not written: no terminal to confirm on; add --yes", file=sys.stderr)
            return False
        return input("write it? [y/N] ").strip().lower() in ("y", "yes")

    try:
        await run_write(
            args.url,
            args.address,
            args.value,
            point_type=args.point_type,
            table=args.table,
            order=Order(args.order),
            device_id=args.device_id,
            length=args.length,
            scale=args.scale,
            timeout_s=args.timeout,
            confirm=None if args.yes else ask,
        )
    except WriteNotSent as exc:
        print(f"edge-agent write: {exc}", file=sys.stderr)
        return 2 if str(exc) != "not written" else 1
    return 0


async def _poll(args: argparse.Namespace) -> int:
    """`read --poll`: the read again at fixed phase; a failed read is shown, polling goes on."""
    from edge_agent.diagnose.read import ReadFailed, open_line, run_read

    interval = args.poll or 1.0
    connection = open_line(args.url, timeout_s=args.timeout)
    loop = asyncio.get_running_loop()
    origin = loop.time()
    answered = polls = 0
    try:
        while args.polls is None or polls < args.polls:
            # Tick k at origin + k * interval; a read that ran over skips ticks, never queues.
            due = origin + math.ceil(max(0.0, loop.time() - origin) / interval) * interval
            if polls:
                await asyncio.sleep(max(0.0, due - loop.time()))
            polls += 1
            stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
            try:
                lines = await run_read(
                    args.url,
                    args.address,
                    point_type=args.point_type,
                    table=args.table,
                    device_id=args.device_id,
                    length=args.length,
                    scale=args.scale,
                    timeout_s=args.timeout,
                    count=args.count,
                    connection=connection,
                )
                answered += 1
            except ReadFailed as exc:
                lines = [f"{args.url}: {exc}"]
                connection.close()  # the next poll opens the line afresh
            print(f"-- poll {polls} at {stamp}", *lines, sep="\n", flush=True)
    finally:
        connection.close()
    return 0 if answered else 1


async def _scan(args: argparse.Namespace) -> int:
    from edge_agent.diagnose.scan import Hit, ProgressBar, scan_ids

    bar = ProgressBar(len(args.ids))

    def progress(done: int, device_id: int, hits: list[Hit]) -> None:
        bar.update(done, f"id {device_id}  found {len(hits)}")

    try:
        hits = await scan_ids(
            args.url,
            args.ids,
            table=args.table,
            address=args.address,
            timeout_s=args.timeout,
            progress=progress,
        )
    finally:
        bar.finish()
    if not hits:
        print(f"no unit answered on {args.url} (ids tried: {len(args.ids)})")
        return 1
    print(f"{'id':<4} answer")
    for hit in hits:
        print(f"{hit.device_id:<4} {hit.answer}")
    return 0

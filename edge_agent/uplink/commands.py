"""`edge-agent uplink manual|export`: 手工填报 from CSV, and the interval history as CSV.

    edge-agent uplink manual site.yaml entries.csv
    edge-agent uplink export site.yaml --from 2026-11-01 --to 2026-12-01 --out nov.csv

Manual entries (production output, unmetered energy) are records like measured intervals,
flagged `manual`, kept in the history and queued for every endpoint; a running agent's
senders pick them up within `idle_check_s`. CSV columns (header required):
`device,counter,kind,start,end,value,unit`; times ISO 8601, without an offset in the
`energy.timezone`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config.site import LoadedConfig
from edge_agent.energy.manual import canonical
from edge_agent.ingest.schema import NAME
from edge_agent.uplink.store import IntervalRecord, UplinkStore

MANUAL_COLUMNS = ("device", "counter", "kind", "start", "end", "value", "unit")


def add_parser(sub: Any) -> None:
    """The `uplink` subcommand."""
    u = sub.add_parser("uplink", help="能耗在线监测 platform uplink: manual entries, history")
    actions = u.add_subparsers(dest="uplink_action", required=True)
    manual = actions.add_parser("manual", help="add manual entries (手工填报) from a CSV file")
    manual.add_argument("config", type=Path)
    manual.add_argument("csv", type=Path)
    export = actions.add_parser("export", help="write the interval history of a period as CSV")
    export.add_argument("config", type=Path)
    export.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    export.add_argument("--to", dest="end", required=True, help="day after the last")
    export.add_argument("--out", type=Path, required=True)


def _time(text: str, zone: ZoneInfo) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.strip())
    return t if t.tzinfo is not None else t.replace(tzinfo=zone)


def read_manual(path: Path, *, site: str, gateway: str, zone: ZoneInfo) -> list[IntervalRecord]:
    """Records of a manual-entry CSV; ValueError naming the line of a bad row."""
    records = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = set(MANUAL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for row in reader:
            try:
                start, end = _time(row["start"], zone), _time(row["end"], zone)
                if end <= start:
                    raise ValueError("end is not after start")
                value = float(row["value"])
                if not math.isfinite(value):
                    raise ValueError(f"value {row['value']!r} is not a number")
                kind, unit = row["kind"].strip(), row["unit"].strip() or None
                for column in ("device", "counter"):
                    # Published on MQTT and stored by the ingest: its rule for names.
                    if NAME.fullmatch(row[column].strip()) is None:
                        raise ValueError(
                            f"{column} {row[column]!r} is not a name (letters, digits, _ . -)"
                        )
                if not kind:
                    raise ValueError("kind must not be empty")
                canonical(kind, unit, value)  # a unit of the wrong quantity is refused here
                records.append(
                    IntervalRecord(
                        site=site,
                        gateway=gateway,
                        device=row["device"].strip(),
                        counter=row["counter"].strip(),
                        kind=kind,
                        start=start.isoformat(),
                        end=end.isoformat(),
                        start_ms=int(start.timestamp() * 1000),
                        end_ms=int(end.timestamp() * 1000),
                        value=value,
                        unit=unit,
                        quality="good",
                        completeness=None,
                        manual=True,
                    )
                )
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{reader.line_num}: {exc}") from None
    return records


def run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Run the parsed `uplink` action."""
    site = loaded.site
    if site.uplink is None:
        print(f"{loaded.path}: no `uplink:` block", file=sys.stderr)
        return 2
    zone = ZoneInfo(site.energy.timezone)
    store = UplinkStore.of(site.uplink, base=loaded.path.parent)
    try:
        if args.uplink_action == "manual":
            try:
                records = read_manual(args.csv, site=site.site, gateway=site.gateway, zone=zone)
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
            print(f"{store.add(records)} manual entries queued")
            return 0
        start = _time(args.start, zone)
        end = _time(args.end, zone)
        n = store.export_csv(args.out, int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        print(f"{n} intervals written to {args.out}")
        return 0
    finally:
        store.close()

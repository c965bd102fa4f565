"""The ingest inside `edge-agent demo`: agent and ingest together on the embedded store.

The demo's broker is amqtt (MQTT 3.1.1 only), so the ingest uses a plain, single-worker
3.1.1 subscription there (see ingest_mqtt). Readings go to a SQLite file (a fresh
temporary one unless `--store` names one) that is kept after the demo for a look with
`sqlite3 FILE 'SELECT * FROM points LIMIT 20'`. One line of the live view's footer shows
the rows arriving; without a terminal the line is printed once a second instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path

from edge_agent.config.site import LoadedConfig
from edge_agent.ingest.embedded_store import EmbeddedStore, count_readings
from edge_agent.ingest.service import Ingest, device_profiles

REFRESH_S = 1.0


def status_line(ingest: Ingest, path: Path) -> str:
    """One line: where readings go and how many arrived."""
    stats = ingest.stats
    rejected = ingest.rejects.total
    return (
        f"ingest -> {path}: {stats.stored_points:,} readings from {stats.stored_messages:,} "
        f"messages, {rejected} rejected, {stats.unacked} unacknowledged "
        f"(MQTT {ingest.client.protocol})"
    )


async def run_demo_ingest(loaded: LoadedConfig, *, store: Path | None, footer: list[str]) -> None:
    """Run one ingest worker on the embedded store until cancelled, keeping `footer` current."""
    path = store or Path(tempfile.mkdtemp(prefix="edge-demo-")) / "edge-data.sqlite"
    # amqtt takes a v5 CONNECT with properties and never answers it: ask for 3.1.1 at once.
    ingest_config = loaded.site.ingest.model_copy(update={"protocol": "3.1.1"})
    site = loaded.site.model_copy(update={"influx": None, "ingest": ingest_config})
    demo = dataclasses.replace(loaded, site=site)
    ingest = Ingest(demo, store=EmbeddedStore(path, profiles=device_profiles(demo)), worker="demo")
    footer.insert(0, status_line(ingest, path))
    tty = sys.stdout.isatty()
    task = asyncio.create_task(ingest.run(), name="ingest")
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=REFRESH_S)
            footer[0] = status_line(ingest, path)
            if not tty:
                print("  " + footer[0], flush=True)
        task.result()
    finally:
        task.cancel()
        await asyncio.wait({task})
        rows = count_readings(path) if path.exists() else 0
        print(f"ingest: {rows:,} readings in {path}", flush=True)

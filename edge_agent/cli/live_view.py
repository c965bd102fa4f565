"""Live terminal table of the agent: devices, state, poll health and key values.

On a terminal it redraws in place once a second (ANSI codes only, no curses); when
output is piped it prints one summary line per refresh, so logs and CI stay readable.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from edge_agent.alarms.stage import AlarmStage
from edge_agent.pipeline.by_exception import ReportFilter
from edge_agent.runtime.agent import Agent
from edge_agent.runtime.poller import Unit

KEY_POINTS = (
    "voltage_a",
    "current_a",
    "power_total",
    "pf_total",
    "frequency",
    "energy_import",
)
CLEAR = "\x1b[H\x1b[2J"


def _jitter_p99_ms(unit: Unit) -> str:
    samples = unit.stats.jitter_s[-500:]
    if len(samples) < 2:
        return "-"
    return f"{statistics.quantiles(samples, n=100)[98] * 1000:.1f}"


def _key_values(unit: Unit, width: int = 4) -> str:
    poll = unit.stats.last_poll
    if poll is None:
        return ""
    shown = []
    by_name = {p.name: i for i, p in enumerate(poll.points)}
    names = [n for n in KEY_POINTS if n in by_name] or [p.name for p in poll.points[:width]]
    for name in names[: width + 2]:
        i = by_name[name]
        value = poll.values[i]
        unit_text = poll.points[i].unit or ""
        if i in poll.issues:
            shown.append(f"{name}=BAD")
        elif isinstance(value, float):
            shown.append(f"{name}={value:.6g}{unit_text}")
        else:
            shown.append(f"{name}={value}{unit_text}")
    return " ".join(shown)


def uplink_lines(agent: Agent, elapsed_s: float) -> list[str]:
    """Per device: readings published of those polled, uplink messages and kB per hour."""
    thinned = agent.uplink_filter
    counts = thinned.counts if isinstance(thinned, ReportFilter) else {}
    hours = max(elapsed_s, 1e-6) / 3600
    lines = [f"{'uplink':<14} {'sent/polled':>22} {'msgs/h':>8} {'kB/h':>8}"]
    for unit in agent.units:
        name = unit.driver.name
        encoder = agent.encoders[name]
        c = counts.get(name)
        share = (
            "every poll"
            if c is None
            else f"{c.readings_published}/{c.readings_polled} "
            f"({c.readings_published / max(1, c.readings_polled):.0%})"
        )
        messages, sent = encoder.messages, encoder.bytes
        if agent.batcher is not None and agent.batcher.batches(name):
            batched, batched_bytes = agent.batcher.sent(name)
            messages, sent = messages + batched, sent + batched_bytes
        lines.append(f"{name:<14} {share:>22} {messages / hours:>8.0f} {sent / 1000 / hours:>8.1f}")
    return lines


def render(agent: Agent, *, elapsed_s: float | None = None) -> list[str]:
    """The table as lines of text (with uplink rates when the elapsed time is given)."""
    stats = agent.sink.stats
    state = "connected" if agent.sink.connected else "DISCONNECTED"
    box = agent.outbox.stats
    age = box.oldest_age_s()
    lines = [
        f"edge-agent  site={agent.loaded.site.site} gateway={agent.loaded.site.gateway}  "
        f"mqtt {agent.loaded.site.mqtt.url} {state}  published={stats.published} "
        f"acked={stats.acked}  seq={agent.seq}",
        f"outbox: {box.messages} messages, {box.readings} readings, {box.bytes / 1024:.0f} KiB"
        f"{f', oldest {age:.0f} s' if age is not None else ''}; in flight "
        f"{agent.forwarder.inflight}, replayed {agent.forwarder.replayed}, "
        f"dropped {box.dropped}",
        f"{'device':<14} {'state':<6} {'polls':>6} {'fail':>5} {'overrun':>7} {'p99ms':>6}  values",
    ]
    for unit in agent.units:
        s = unit.stats
        st = "-" if s.up is None else ("up" if s.up else "DOWN")
        lines.append(
            f"{unit.driver.name:<14} {st:<6} {s.polls:>6} {s.failures:>5} {s.overruns:>7} "
            f"{_jitter_p99_ms(unit):>6}  {_key_values(unit) if s.up else (s.reason or '')}"
        )
    if elapsed_s is not None:
        lines.extend(uplink_lines(agent, elapsed_s))
    lines.extend(s.summary() for s in agent.stages if isinstance(s, AlarmStage))
    return lines


async def run_live_view(
    agent: Agent, *, refresh_s: float = 1.0, out: TextIO | None = None, footer: Sequence[str] = ()
) -> None:
    """Redraw the table until cancelled."""
    out = out or sys.stdout
    tty = out.isatty()
    started = time.monotonic()
    while True:
        await asyncio.sleep(refresh_s)
        lines = render(agent, elapsed_s=time.monotonic() - started)
        if tty:
            out.write(CLEAR + "\n".join([*lines, "", *footer]) + "\n")
        else:
            up = sum(1 for u in agent.units if u.stats.up)
            out.write(f"{lines[0]}  devices up {up}/{len(agent.units)}\n")
            out.write("  " + lines[1] + "\n")
            for line in lines[3:]:
                out.write("  " + line + "\n")
        out.flush()

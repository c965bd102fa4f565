"""Text for `edge-agent plan` and `edge-agent check`: the read plans of a site, or its errors.

A plan listing shows what the agent will send, per device, one line per request:

    site plant-a, gateway gw-01
    meter-1: tcp://127.0.0.1:5020 device_id 1, profile chint-dtsu666, every 1 s
      FC03 holding   start  8192 (0x2000)  count  34  voltage_a, voltage_b, ...
    total: 1 device, 20 points, 3 requests per poll, 80 registers per poll

The layout is fixed (golden tests compare it), so change it deliberately.
"""

from __future__ import annotations

from drivers.registry import plugin
from edge_agent.config.errors import ConfigError
from edge_agent.config.site import LoadedConfig


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def render_plan(loaded: LoadedConfig) -> str:
    """Every device's requests and the totals per poll of the enabled devices."""
    lines = [f"site {loaded.site.site}, gateway {loaded.site.gateway}"]
    points = requests = registers = bits = data_bytes = disabled = 0
    for setup in loaded.devices:
        device = setup.device
        summary = plugin(device.driver).plan_summary(device, setup.profile, setup.profile_name)
        lines.extend(summary.lines)
        if not device.enabled:
            disabled += 1
            continue
        points += summary.points
        requests += summary.requests
        registers += summary.registers
        bits += summary.bits
        data_bytes += summary.data_bytes
    devices = _plural(len(loaded.devices), "device")
    if disabled:
        devices += f" ({disabled} disabled)"
    total = (
        f"total: {devices}, {_plural(points, 'point')}, "
        f"{_plural(requests, 'request')} per poll, {_plural(registers, 'register')} per poll"
    )
    if bits:
        total += f", {_plural(bits, 'bit')} per poll"
    if data_bytes:
        total += f", {_plural(data_bytes, 'data byte')} per poll"
    lines.append(total)
    return "\n".join(lines) + "\n"


def render_issues(err: ConfigError) -> str:
    """One issue per line, then how many there are."""
    lines = [str(issue) for issue in err.issues]
    lines.append(f"{_plural(len(err.issues), 'error')} in {err.file}")
    return "\n".join(lines) + "\n"

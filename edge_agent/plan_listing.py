"""Text for `edge-agent plan` and `edge-agent check`: the read plans of a site, or its errors.

A plan listing shows what the agent will send, per device, one line per request:

    site plant-a, gateway gw-01
    meter-1: tcp://127.0.0.1:5020 device_id 1, profile chint-dtsu666, every 1 s
      FC03 holding   start  8192 (0x2000)  count  34  voltage_a, voltage_b, ...
    total: 1 device, 20 points, 3 requests per poll, 80 registers per poll

The layout is fixed (golden tests compare it), so change it deliberately.
"""

from __future__ import annotations

from drivers.dlt645.config import Dlt645Device, Dlt645Profile
from drivers.dlt645.driver import Dlt645Driver
from drivers.modbus.config import ModbusProfile
from drivers.modbus.plan import Request, build_plan
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.plan import describe_device, read_requests
from edge_agent.config import LoadedConfig
from edge_agent.config_errors import ConfigError


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _request_line(request: Request) -> str:
    return (
        f"  FC{request.function_code:02d} {request.table:<9} "
        f"start {request.start:5d} (0x{request.start:04X})  count {request.count:4d}  "
        + ", ".join(request.point_names)
    )


def render_plan(loaded: LoadedConfig) -> str:
    """Every device's requests and the totals per poll of the enabled devices."""
    lines = [f"site {loaded.site.site}, gateway {loaded.site.gateway}"]
    points = requests = registers = bits = disabled = 0
    for setup in loaded.devices:
        device = setup.device
        if isinstance(device, OpcUaDevice):
            lines.extend(describe_device(device))
            if not device.enabled:
                disabled += 1
                continue
            points += len(device.points)
            requests += read_requests(device)
            continue
        if isinstance(device, Dlt645Device):
            assert isinstance(setup.profile, Dlt645Profile)
            meter = Dlt645Driver(device, setup.profile).plan  # compiles only; opens nothing
            state = "" if device.enabled else ", disabled"
            lines.append(
                f"{device.name}: {device.url} address {device.address}, "
                f"profile {setup.profile_name}, every {device.interval_s:g} s{state}"
            )
            lines.extend(f"  {line}" for line in meter.describe())
            if not device.enabled:
                disabled += 1
                continue
            points += len(meter.points)
            requests += len(meter.requests)
            continue
        assert isinstance(setup.profile, ModbusProfile)
        plan = build_plan(device, setup.profile)
        state = "" if device.enabled else ", disabled"
        lines.append(
            f"{device.name}: {device.url} device_id {device.device_id}, "
            f"profile {setup.profile_name}, every {device.interval_s:g} s{state}"
        )
        lines.extend(_request_line(r) for r in plan.requests)
        if not device.enabled:
            disabled += 1
            continue
        points += len(plan.points)
        requests += len(plan.requests)
        registers += sum(r.count for r in plan.requests if not r.table.is_bits)
        bits += sum(r.count for r in plan.requests if r.table.is_bits)
    devices = _plural(len(loaded.devices), "device")
    if disabled:
        devices += f" ({disabled} disabled)"
    total = (
        f"total: {devices}, {_plural(points, 'point')}, "
        f"{_plural(requests, 'request')} per poll, {_plural(registers, 'register')} per poll"
    )
    if bits:
        total += f", {_plural(bits, 'bit')} per poll"
    lines.append(total)
    return "\n".join(lines) + "\n"


def render_issues(err: ConfigError) -> str:
    """One issue per line, then how many there are."""
    lines = [str(issue) for issue in err.issues]
    lines.append(f"{_plural(len(err.issues), 'error')} in {err.file}")
    return "\n".join(lines) + "\n"

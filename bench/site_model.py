"""The benchmark's device model: M contiguous float32 holding registers, ABCD."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.modbus.codec import PointType
from drivers.modbus.config import ModbusPoint, ModbusProfile


def bench_profile(points: int) -> ModbusProfile:
    """A profile of `points` float32 values at holding 0, 2, 4, ..."""
    return ModbusProfile(
        name="bench",
        points=tuple(
            ModbusPoint(name=f"p{i:03d}", address=2 * i, type=PointType.FLOAT32, unit="V")
            for i in range(points)
        ),
    )


def inline_site_yaml(
    urls: Sequence[str],
    points: int,
    *,
    interval_s: float = 1.0,
    mqtt_port: int = 1883,
    outbox: str = "var/outbox.sqlite",
) -> str:
    """A site file of one Modbus device per URL, each with `points` inline float32 points
    (holding 0, 2, 4, ...: what bench_profile serves), written as people write them: one
    flow mapping per point, with unit, scale and description. The shape of issue 20's
    500-device site (tests/config/test_config_bounds.py loads the same)."""
    lines = [
        "site: bench",
        "gateway: gw",
        f"mqtt: {{url: 'mqtt://127.0.0.1:{mqtt_port}', prefix: bench, qos: 1, max_inflight: 1000}}",
        f"outbox: {{path: '{outbox}'}}",
        "devices:",
    ]
    for d, url in enumerate(urls):
        lines += [
            f"  - name: meter-{d:03d}",
            "    driver: modbus",
            f"    url: {url}",
            f"    interval_s: {interval_s:g}",
            "    timeout_s: 2",
            "    points:",
        ]
        lines += [
            f"      - {{name: p{p:02d}, address: {2 * p}, type: float32, unit: kWh, "
            f'scale: 0.01, description: "point {p} of meter {d}"}}'
            for p in range(points)
        ]
    return "\n".join(lines) + "\n"

"""The read plan of an OPC UA device, compiled offline: each point's node, mode and filter.

`build_points` applies the device defaults (mode, sampling interval, queue size) to every
point and parses its node id or browse path; `describe_device` is the device's part of
`edge-agent plan`:

    plc-1: opc.tcp://127.0.0.1:4840, security SignAndEncrypt/Basic256Sha256, every 1 s
      subscribe  tank_temp            node nsu=urn:plant:plc;s=Tank1.Temperature  (sampling ...)
      poll       pump_run             node nsu=urn:plant:plc;i=1002
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.opcua.config import AcquisitionMode, Deadband, OpcUaDevice
from drivers.opcua.nodeid import BrowsePath, NodeRef


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """A point compiled from the config: where its value comes from and how it is scaled."""

    index: int
    name: str
    target: NodeRef | BrowsePath
    mode: AcquisitionMode
    sampling_ms: float
    queue_size: int
    deadband: Deadband | None
    scale: float
    offset: float
    decimals: int | None


def build_points(device: OpcUaDevice) -> tuple[PlannedPoint, ...]:
    """The device's points with defaults applied; raises ValueError like the config does."""
    sampling_s = device.sampling_interval_s
    planned: list[PlannedPoint] = []
    for i, p in enumerate(device.points):
        point_sampling = p.sampling_interval_s
        if point_sampling is None:
            point_sampling = sampling_s if sampling_s is not None else device.publishing_s
        planned.append(
            PlannedPoint(
                index=i,
                name=p.name,
                target=p.target(device.namespace),
                mode=device.point_mode(p),
                sampling_ms=point_sampling * 1000.0,
                queue_size=p.queue_size or device.queue_size,
                deadband=p.deadband,
                scale=p.scale,
                offset=p.offset,
                decimals=p.decimals,
            )
        )
    return tuple(planned)


def describe_point(point: PlannedPoint) -> str:
    """One line of `edge-agent plan` for a point."""
    where = f"node {point.target}" if isinstance(point.target, NodeRef) else f"path {point.target}"
    if point.mode is AcquisitionMode.POLL:
        return f"  poll       {point.name:<20} {where}"
    extra = f"sampling {point.sampling_ms:g} ms, queue {point.queue_size}"
    if point.deadband is not None:
        band = point.deadband
        extra += f", deadband abs {band.abs:g}" if band.abs is not None else ""
        extra += f", deadband {band.percent:g} %" if band.percent is not None else ""
    return f"  subscribe  {point.name:<20} {where}  ({extra})"


def read_requests(device: OpcUaDevice) -> int:
    """Read requests one poll sends (poll points split at max_items_per_request)."""
    polled = sum(1 for p in device.points if device.point_mode(p) is AcquisitionMode.POLL)
    return math.ceil(polled / device.max_items_per_request)


def describe_device(device: OpcUaDevice) -> list[str]:
    """The plan listing of one device: a header line, then one line per point."""
    policy = device.security.effective_policy
    security = f"{device.security.mode}/{policy}" if policy else str(device.security.mode)
    state = "" if device.enabled else ", disabled"
    header = f"{device.name}: {device.url}, security {security}, every {device.interval_s:g} s"
    subscribed = any(device.point_mode(p) is AcquisitionMode.SUBSCRIBE for p in device.points)
    if subscribed:
        header += f", publishing {device.publishing_s:g} s"
    return [header + state, *(describe_point(p) for p in build_points(device))]

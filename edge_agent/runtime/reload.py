"""What a changed site config means for the running agent (hot reload).

Lines are compared, not devices: units on one serial bus share a connection, so a change
to any of them restarts the whole line, while every other line keeps polling untouched.

    old lines   new lines        result
    A{m1}       A{m1}            keep    (same devices, same settings, same profiles)
    B{m2,m3}    B{m2,m3'}        restart (m3 changed)
    C{m4}       -                stop
    -           D{m5}            start

Settings outside `devices:` (site, gateway, mqtt, outbox, and the stages' blocks) need a
restart of the agent: the reload says which, and leaves them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config.site import DeviceSetup, LoadedConfig


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Which line keys to keep, stop and start, and which device names changed how."""

    keep: tuple[str, ...]
    stop: tuple[str, ...]
    start: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    disabled: tuple[str, ...]  # still in the file, now `enabled: false`
    needs_restart: tuple[str, ...]  # top-level settings that differ but are not reloaded

    @property
    def empty(self) -> bool:
        """Nothing to do for the pollers."""
        return not (self.stop or self.start)


def line_members(
    lines: dict[str, Sequence[str]], devices: Sequence[DeviceSetup]
) -> dict[str, tuple[DeviceSetup, ...]]:
    """Line key -> the setups of its devices, in line order."""
    by_name = {d.device.name: d for d in devices}
    return {key: tuple(by_name[n] for n in names) for key, names in lines.items()}


def plan_reload(
    old: LoadedConfig,
    new: LoadedConfig,
    *,
    old_lines: dict[str, Sequence[str]],
    new_lines: dict[str, Sequence[str]],
) -> ReloadPlan:
    """Compare two configs given the line layout (key -> device names) each one builds."""
    old_members = line_members(old_lines, old.devices)
    new_members = line_members(new_lines, new.devices)
    keep = tuple(k for k in new_members if old_members.get(k) == new_members[k])
    stop = tuple(k for k in old_members if k not in keep)
    start = tuple(k for k in new_members if k not in keep)
    old_devices = {d.device.name: d for d in old.devices}
    new_devices = {d.device.name: d for d in new.devices}
    added = tuple(n for n in new_devices if n not in old_devices)
    removed = tuple(n for n in old_devices if n not in new_devices)
    changed = tuple(n for n in new_devices if n in old_devices and old_devices[n] != new_devices[n])
    disabled = tuple(
        n for n in changed if old_devices[n].device.enabled and not new_devices[n].device.enabled
    )
    old_rest = old.site.model_dump(exclude={"devices"})
    new_rest = new.site.model_dump(exclude={"devices"})
    needs_restart = tuple(k for k in new_rest if old_rest.get(k) != new_rest[k])
    return ReloadPlan(keep, stop, start, added, removed, changed, disabled, needs_restart)

"""Load a site config: validate it and every profile it uses, and plan every device offline.

A site file names the site and gateway, the MQTT broker, and the devices; a device uses a
profile (a register map in a file of its own) or lists its points inline. `load_config`
reads the site file and the profile files it references, validates them with the drivers'
pydantic models, checks what only the whole site can tell (unique names, one device per
address) and builds every device's read plan, so a config that loads is one the agent
can run. Everything wrong is gathered in one pass into a `ConfigError` whose issues name
the file, the line and the path (`site.yaml:41 devices[2].points[5]: ...`).

Profile lookup for `profile: NAME`, first match wins:

    <site file dir>/profiles/NAME.yaml
    <profiles_dir>/NAME.yaml            (profiles_dir relative to the site file)
    <repository>/configs/profiles/NAME.yaml
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from drivers.dlt645.config import Dlt645Device, Dlt645Profile
from drivers.dlt645.driver import Dlt645Driver
from drivers.modbus.config import (
    NAME_PATTERN,
    ModbusDevice,
    ModbusPoint,
    ModbusProfile,
    Unreadable,
    point_issues,
    span_text,
)
from drivers.modbus.plan import build_plan
from drivers.opcua.config import OpcUaDevice
from drivers.options.alarms import reference_issues
from edge_agent.alarm_config import AlarmsConfig
from edge_agent.config_errors import ConfigError, ConfigIssue, Loc, shown_path
from edge_agent.config_messages import (
    DISCRIMINATOR,
    Errors,
    Model,
    issues_from,
    suggest,
    validate,
)
from edge_agent.config_yaml import Document, child, read_yaml
from edge_agent.energy_check import energy_issues
from edge_agent.energy_config import EnergyConfig
from edge_agent.health_config import HealthConfig
from edge_agent.influx_tls import influx_issues
from edge_agent.ingest_config import InfluxConfig, IngestConfig
from edge_agent.mqtt_config import MqttConfig
from edge_agent.outbox import OutboxConfig
from edge_agent.platform_uplink import uplink_issues
from edge_agent.platform_uplink_config import UplinkConfig

__all__ = [
    "REPOSITORY_PROFILES",
    "ConfigError",
    "ConfigIssue",
    "DeviceClash",
    "DeviceConfig",
    "DeviceSetup",
    "LoadedConfig",
    "SiteConfig",
    "address_clashes",
    "device_clashes",
    "duplicate_names",
    "load_config",
]

REPOSITORY_PROFILES = Path(__file__).resolve().parents[1] / "configs" / "profiles"
INLINE = "inline"  # profile_name of a device whose points are in the site file

# Further drivers join as `ModbusDevice | OpcUaDevice | ...`; pydantic picks the member by
# the `driver` key and reports errors in that member only.
AnyDevice = ModbusDevice | OpcUaDevice | Dlt645Device
DeviceConfig = Annotated[AnyDevice, Field(discriminator=DISCRIMINATOR)]

_CLASH_ERROR = "device_clash"
_DEVICE: TypeAdapter[AnyDevice] = TypeAdapter(DeviceConfig)


@dataclass(frozen=True, slots=True)
class DeviceClash:
    """A device entry that collides with an earlier one (same name, or same address)."""

    index: int
    key: str  # the key to point at: "name" or "device_id"
    message: str


def _line_key(device: ModbusDevice) -> str:
    ep = device.endpoint
    if ep.transport == "rtu":
        return f"rtu:{ep.path}"
    return f"{ep.transport}:{ep.host}:{ep.port}"


def duplicate_names(names: Sequence[tuple[int, str]]) -> list[DeviceClash]:
    """Entries (index, device name) whose name an earlier entry already has."""
    clashes: list[DeviceClash] = []
    first: dict[str, int] = {}
    for index, name in names:
        if name in first:
            message = f"device name {name!r} is already used by devices[{first[name]}]"
            clashes.append(DeviceClash(index, "name", message))
        else:
            first[name] = index
    return clashes


def address_clashes(devices: Sequence[tuple[int, ModbusDevice]]) -> list[DeviceClash]:
    """Enabled entries on the same line (host:port or serial port) with the same device_id."""
    clashes: list[DeviceClash] = []
    seen: dict[tuple[str, int], tuple[int, ModbusDevice]] = {}
    for index, device in devices:
        # A disabled entry is a spare (e.g. the old profile kept while trying a new one).
        if not device.enabled:
            continue
        address = (_line_key(device), device.device_id)
        if address not in seen:
            seen[address] = (index, device)
            continue
        first, other = seen[address]
        also = "" if other.url == device.url else f" at {other.url!r}"
        message = (
            f"device_id {device.device_id} at {device.url!r} is already used by "
            f"devices[{first}] {other.name!r}{also}"
        )
        clashes.append(DeviceClash(index, "device_id", message))
    return clashes


def _modbus_only(
    devices: Sequence[tuple[int, AnyDevice]],
) -> list[tuple[int, ModbusDevice]]:
    """The Modbus entries: only they have a line and a device_id that can clash."""
    return [(i, d) for i, d in devices if isinstance(d, ModbusDevice)]


def device_clashes(
    devices: Sequence[tuple[int, AnyDevice]],
) -> list[DeviceClash]:
    """Entries (index, device) reusing an earlier entry's name or line and device_id."""
    names = duplicate_names([(index, device.name) for index, device in devices])
    return sorted([*names, *address_clashes(_modbus_only(devices))], key=lambda c: c.index)


class SiteConfig(BaseModel):
    """A site file: which site and gateway this is, where readings go, which devices to poll."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    gateway: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    influx: InfluxConfig | None = None  # no block: the ingest writes the embedded store
    ingest: IngestConfig = IngestConfig()
    energy: EnergyConfig = EnergyConfig()  # the energy stage's clock, tariff, hierarchy
    alarms: AlarmsConfig = AlarmsConfig()  # flood/chatter thresholds of the alarm stage
    health: HealthConfig = HealthConfig()  # when /healthz fails (edge-agent run --http)
    uplink: UplinkConfig | None = None  # 能耗在线监测 platform endpoints (platform_uplink.py)
    profiles_dir: Path | None = None  # relative to the site file
    devices: Annotated[tuple[DeviceConfig, ...], Field(min_length=1)]

    @field_validator("devices")
    @classmethod
    def _distinct(cls, devices: tuple[AnyDevice, ...]) -> tuple[AnyDevice, ...]:
        clashes = device_clashes(list(enumerate(devices)))
        if clashes:
            summary = "; ".join(f"devices[{c.index}]: {c.message}" for c in clashes)
            raise PydanticCustomError(_CLASH_ERROR, "{summary}", {"summary": summary})
        return devices


@dataclass(frozen=True)
class DeviceSetup:
    """A device entry with the profile it reads through (OPC UA devices have none)."""

    device: AnyDevice
    profile: ModbusProfile | Dlt645Profile | None
    profile_name: str  # "inline" for inline points


@dataclass(frozen=True)
class LoadedConfig:
    """A validated site whose every device has a plan."""

    path: Path
    site: SiteConfig
    devices: tuple[DeviceSetup, ...]


# --- checks across points, devices and profiles ------------------------------------------


def _valid_items(doc: Document, loc: Loc, model: type[Model]) -> list[tuple[Loc, Model]]:
    """The entries of the list at `loc` that are valid on their own."""
    raw = doc.at(loc)
    if not isinstance(raw, list):
        return []
    valid: list[tuple[Loc, Model]] = []
    for index, item in enumerate(raw):
        try:
            valid.append(((*loc, index), model.model_validate(item)))
        except ValidationError:
            continue
    return valid


def _point_issues(
    doc: Document,
    points: Sequence[tuple[Loc, ModbusPoint]],
    unreadable: Sequence[tuple[Loc, Unreadable]],
) -> list[ConfigIssue]:
    """The models' point checks, each issue placed at the point it concerns."""
    issues: list[ConfigIssue] = []
    for issue in point_issues([p for _, p in points], [u for _, u in unreadable]):
        loc = points[issue.index][0]
        if issue.other is not None:
            line = doc.line_of(points[issue.other][0])
            if issue.message.startswith("duplicate"):
                text = f"{issue.message} (first at line {line})"
                issues.append(doc.issue((*loc, "name"), text))
            else:  # "... overlap 'level' (40-41)" -> "... overlap 'level' (40-41, line 8)"
                issues.append(doc.issue(loc, f"{issue.message[:-1]}, line {line})"))
        elif issue.unreadable is not None:
            line = doc.line_of(unreadable[issue.unreadable][0])
            issues.append(doc.issue(loc, f"{issue.message} (line {line})"))
    return issues


@dataclass(eq=False)  # one per file, compared by identity
class _Profile:
    """A profile file loaded once for all the devices that use it."""

    path: Path
    users: list[str] = field(default_factory=list)
    doc: Document | None = None
    profile: ModbusProfile | Dlt645Profile | None = None
    issues: list[ConfigIssue] = field(default_factory=list)
    dlt645: bool = False  # a DL/T 645 meter model (data identifiers), not a register map


def _used_by(users: Sequence[str]) -> str:
    shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
    return f"(used by device{'s' if len(users) > 1 else ''} {shown})"


def _load_profile(entry: _Profile, environ: Mapping[str, str]) -> None:
    try:
        doc = read_yaml(entry.path, environ=environ)
    except ConfigError as exc:
        entry.issues.extend(exc.issues)
        return
    entry.doc = doc
    entry.issues.extend(doc.issues)
    if doc.data is None:
        entry.issues.append(doc.issue((), "the profile is empty; it needs at least points:"))
        return
    if entry.dlt645:
        meter, meter_errors = validate(Dlt645Profile, doc)
        entry.issues.extend(issues_from(meter_errors, doc, Dlt645Profile))
        entry.issues[:] = _unshadowed(entry.issues, doc)
        if not entry.issues:
            entry.profile = meter
        return
    profile, errors = validate(ModbusProfile, doc)
    located = _point_issues(
        doc,
        _valid_items(doc, ("points",), ModbusPoint),
        _valid_items(doc, ("unreadable",), Unreadable),
    )
    entry.issues.extend(located)
    # The profile's own check of its points is already reported point by point.
    kept = [
        (loc, e) for loc, e in errors if not (located and not loc and e["type"] == "value_error")
    ]
    entry.issues.extend(issues_from(kept, doc, ModbusProfile))
    entry.issues[:] = _unshadowed(entry.issues, doc)
    if not entry.issues:
        entry.profile = profile


def _profile_dirs(site_dir: Path, profiles_dir: object) -> list[Path]:
    dirs = [site_dir / "profiles"]
    if isinstance(profiles_dir, str) and profiles_dir:
        dirs.append(site_dir / profiles_dir)
    dirs.append(REPOSITORY_PROFILES)
    unique: dict[Path, Path] = {}
    for d in dirs:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def _unknown_profile(name: str, dirs: Sequence[Path]) -> str:
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    looked = ", ".join(f"{shown_path(d)}/" for d in dirs)
    hint = suggest(name, known)
    return f"unknown profile {name!r} (looked in: {looked}{'; ' + hint if hint else ''})"


def _unreadable_covers(
    doc: Document, device_loc: Loc, device: ModbusDevice, entry: _Profile
) -> list[ConfigIssue]:
    """The device's own unreadable ranges against the points of its profile file."""
    assert isinstance(entry.profile, ModbusProfile) and entry.doc is not None
    issues: list[ConfigIssue] = []
    for k, u in enumerate(device.unreadable):
        for index, p in enumerate(entry.profile.points):
            if u.table == p.table and p.address <= u.end and u.start <= p.last_address:
                where = f"{entry.doc.file}:{entry.doc.line_of(('points', index))}"
                issues.append(
                    doc.issue(
                        (*device_loc, "unreadable", k),
                        f"unreadable {u.table} range {u.start}-{u.end} covers {p.name!r} at "
                        f"{span_text(p)} of profile {device.profile!r} ({where})",
                    )
                )
    return issues


def _site_errors(
    errors: Errors,
    doc: Document,
    inline_located: Mapping[int, Sequence[ConfigIssue]],
) -> Errors:
    """The site's pydantic errors less those `load_config` reports at a finer place."""
    kept: Errors = []
    for loc, error in errors:
        if error["type"] == _CLASH_ERROR:
            continue  # reported at each clashing device
        if (
            len(loc) == 2
            and isinstance(loc[1], int)
            and error["type"] == "value_error"
            and inline_located.get(loc[1])
        ):
            raw = doc.at(loc)
            # With exactly one of profile and points, the device's model error is its check
            # of the inline points, which is reported point by point.
            if isinstance(raw, dict) and (raw.get("profile") is None) != (
                raw.get("points") is None
            ):
                continue
        kept.append((loc, error))
    return kept


def _check_devices(
    doc: Document,
) -> tuple[list[tuple[int, AnyDevice]], list[ConfigIssue]]:
    """The device entries valid on their own, and every issue of the site file's models."""
    issues: list[ConfigIssue] = []
    raw_devices = doc.at(("devices",))
    count = len(raw_devices) if isinstance(raw_devices, list) else 0
    inline_located: dict[int, list[ConfigIssue]] = {}
    valid: list[tuple[int, AnyDevice]] = []
    for i in range(count):
        loc: Loc = ("devices", i)
        # Checked here as well as by the model, to place each issue at its point.
        inline_located[i] = (
            []
            if doc.at((*loc, DISCRIMINATOR)) in ("opcua", "dlt645")  # not registers
            else _point_issues(
                doc,
                _valid_items(doc, (*loc, "points"), ModbusPoint),
                _valid_items(doc, (*loc, "unreadable"), Unreadable),
            )
        )
        issues.extend(inline_located[i])
        try:
            valid.append((i, _DEVICE.validate_python(doc.at(loc))))
        except ValidationError:
            continue
    _, errors = validate(SiteConfig, doc)
    issues.extend(issues_from(_site_errors(errors, doc, inline_located), doc, SiteConfig))
    raw_names = [(i, doc.at(("devices", i, "name"))) for i in range(count)]
    names = [(i, name) for i, name in raw_names if isinstance(name, str)]
    for clash in [*duplicate_names(names), *address_clashes(_modbus_only(valid))]:
        key_loc: Loc = ("devices", clash.index, clash.key)
        present, _ = child(doc.at(key_loc[:-1]), clash.key)
        if present:
            issues.append(doc.issue(key_loc, clash.message))
        else:  # device_id left at its default: point at the device entry
            issues.append(doc.issue(key_loc[:-1], f"{clash.message} (device_id defaults to 1)"))
    return valid, issues


def _find_profiles(
    doc: Document, dirs: Sequence[Path], environ: Mapping[str, str]
) -> tuple[dict[int, _Profile], list[ConfigIssue]]:
    """The profile file of each device entry naming one (loaded once per file), and issues.

    Profiles of invalid device entries are loaded too: their errors belong in this pass.
    """
    issues: list[ConfigIssue] = []
    profiles: dict[Path, _Profile] = {}
    wanted: dict[int, _Profile] = {}
    raw_devices = doc.at(("devices",))
    for i in range(len(raw_devices) if isinstance(raw_devices, list) else 0):
        name = doc.at(("devices", i, "profile"))
        # A name too long for a file name is the model's error (max_length), not a lookup.
        if not isinstance(name, str) or len(name) > 64 or re.fullmatch(NAME_PATTERN, name) is None:
            continue
        found = next((d / f"{name}.yaml" for d in dirs if (d / f"{name}.yaml").is_file()), None)
        if found is None:
            issues.append(doc.issue(("devices", i, "profile"), _unknown_profile(name, dirs)))
            continue
        user = doc.at(("devices", i, "name"))
        dlt645 = doc.at(("devices", i, DISCRIMINATOR)) == "dlt645"
        entry = profiles.setdefault(found.resolve(), _Profile(found, dlt645=dlt645))
        entry.users.append(user if isinstance(user, str) else f"devices[{i}]")
        wanted[i] = entry
    for entry in profiles.values():
        _load_profile(entry, environ)
    return wanted, issues


def _meter_setup(
    doc: Document,
    index: int,
    device: Dlt645Device,
    entry: _Profile | None,
    issues: list[ConfigIssue],
) -> DeviceSetup | None:
    """A DL/T 645 meter with its identifiers, or None after recording why not."""
    if device.profile is None:
        profile, name = device.inline_profile(), INLINE
    elif entry is None or not isinstance(entry.profile, Dlt645Profile):
        if entry is not None and entry.profile is not None:
            issues.append(
                doc.issue(
                    ("devices", index, "profile"),
                    f"{device.profile!r} is not a DL/T 645 "
                    "profile (its points need di:, not address:)",
                )
            )
        return None
    else:
        profile, name = entry.profile, device.profile
    try:
        Dlt645Driver(device, profile)  # compiles the plan; opens nothing
    except ValueError as exc:
        issues.append(doc.issue(("devices", index), str(exc)))
        return None
    return DeviceSetup(device, profile, name)


def _line_sharing_issues(
    doc: Document, valid: Sequence[tuple[int, AnyDevice]]
) -> list[ConfigIssue]:
    """Meters on one line need distinct addresses; a serial path speaks one protocol."""
    issues: list[ConfigIssue] = []
    meters: dict[str, list[tuple[int, Dlt645Device]]] = {}
    modbus_lines = {
        d.endpoint.bus_key for _, d in valid if isinstance(d, ModbusDevice) and d.enabled
    }
    for i, d in valid:
        if isinstance(d, Dlt645Device) and d.enabled:
            meters.setdefault(d.endpoint.bus_key, []).append((i, d))
    for key, on_line in meters.items():
        if key in modbus_lines:
            issues.append(
                doc.issue(
                    ("devices", on_line[0][0], "url"),
                    f"{key} is also a Modbus line; one serial line speaks one protocol",
                )
            )
        seen: dict[str, int] = {}
        for i, d in on_line:
            if d.address in seen:
                issues.append(
                    doc.issue(
                        ("devices", i, "address"),
                        f"address {d.address} is already used on {key} by "
                        f"devices[{seen[d.address]}]",
                    )
                )
            seen.setdefault(d.address, i)
            if "AA" in d.address and len(on_line) > 1:
                issues.append(
                    doc.issue(
                        ("devices", i, "address"),
                        f"wildcard address {d.address} on {key}, which has "
                        f"{len(on_line)} meters: every meter would answer",
                    )
                )
    return issues


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, validate and plan a site file; raises ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    doc = read_yaml(path, environ=env)
    if doc.data is None:
        raise ConfigError([doc.issue((), "the file is empty; a site needs site, gateway, devices")])
    site, _ = validate(SiteConfig, doc)
    valid, device_issues = _check_devices(doc)
    issues = [*doc.issues, *device_issues, *_line_sharing_issues(doc, valid)]

    site_dir = path.parent
    profiles_dir = doc.at(("profiles_dir",))
    if isinstance(profiles_dir, str) and profiles_dir and not (site_dir / profiles_dir).is_dir():
        shown = shown_path(site_dir / profiles_dir)
        issues.append(doc.issue(("profiles_dir",), f"profiles_dir {shown}/ is not a directory"))
    wanted, lookup_issues = _find_profiles(doc, _profile_dirs(site_dir, profiles_dir), env)
    issues.extend(lookup_issues)

    setups: list[DeviceSetup] = []
    for i, device in valid:
        if isinstance(device, OpcUaDevice):
            # Certificate paths are relative to the site file; the driver gets them absolute.
            setups.append(DeviceSetup(device.resolved(site_dir.resolve()), None, INLINE))
            continue
        if isinstance(device, Dlt645Device):
            meter = _meter_setup(doc, i, device, wanted.get(i), issues)
            if meter is not None:
                setups.append(meter)
            continue
        if device.profile is None:
            profile, profile_name = device.inline_profile(), INLINE
        else:
            entry = wanted.get(i)
            if entry is None or entry.profile is None:
                continue
            if not isinstance(entry.profile, ModbusProfile):
                issues.append(
                    doc.issue(
                        ("devices", i, "profile"),
                        f"{device.profile!r} is a DL/T 645 profile, not a Modbus register map",
                    )
                )
                continue
            covers = _unreadable_covers(doc, ("devices", i), device, entry)
            if covers:
                issues.extend(covers)
                continue
            profile, profile_name = entry.profile, device.profile
        try:
            build_plan(device, profile)
        except ValueError as exc:
            issues.append(doc.issue(("devices", i), str(exc)))
            continue
        inline = profile_name == INLINE
        for loc, message in reference_issues(
            profile.points, profile.alarms, device.alarms, inline=inline
        ):
            issues.append(doc.issue(("devices", i, *loc), message))  # alarms naming no point
        setups.append(DeviceSetup(device, profile, profile_name))

    if site is not None and not issues and not any(e.issues for e in wanted.values()):
        issues.extend(energy_issues(doc, site.energy, setups, site=site.site, base=site_dir))
        if site.uplink is not None:
            issues.extend(uplink_issues(doc, site.uplink, base=site_dir))
        if site.influx is not None:
            issues.extend(influx_issues(doc, site.influx, base=site_dir))
    profile_issues = [
        ConfigIssue(x.file, x.line, x.path, f"{x.message} {_used_by(entry.users)}")
        for entry in dict.fromkeys(wanted.values())
        for x in entry.issues
    ]
    ordered = _ordered([*_unshadowed(issues, doc), *profile_issues], first=doc.file)
    if site is None and not ordered:  # cannot happen: every dropped error is reported otherwise
        ordered = [doc.issue((), "invalid site config")]
    if ordered or site is None:
        raise ConfigError(ordered, file=doc.file)
    return LoadedConfig(path, site, tuple(setups))


def _unshadowed(issues: Sequence[ConfigIssue], doc: Document) -> list[ConfigIssue]:
    """Drop issues at a path where reading the file already found one.

    A value whose ${...} was left out (unset variable) is bound to fail validation too;
    the variable is the thing to fix.
    """
    hidden = {x.path for x in doc.issues}
    return [x for x in issues if x in doc.issues or x.path not in hidden]


def _ordered(issues: Sequence[ConfigIssue], *, first: Path) -> list[ConfigIssue]:
    """Site file first, then profile files in order of first use; by line within a file."""
    rank: dict[Path, int] = {first: 0}
    for issue in issues:
        rank.setdefault(issue.file, len(rank))
    unique = list(dict.fromkeys(issues))
    return sorted(
        unique,
        key=lambda x: (rank[x.file], x.line if x.line is not None else 0, x.path),
    )

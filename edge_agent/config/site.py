"""Load a site config: validate it and every profile it uses, and plan every device offline.

A site file names the site and gateway, the MQTT broker, and the devices; a device uses a
profile (a register map in a file of its own) or lists its points inline. `load_config`
reads the site file and the profile files it references, validates them with the drivers'
pydantic models, checks what only the whole site can tell (unique names, one device per
address) and builds every device's read plan, so a config that loads is one the agent
can run. Everything wrong is gathered in one pass into a `ConfigError` whose issues name
the file, the line and the path (`site.yaml:41 devices[2].points[5]: ...`).

Profiles are found by name through the catalog (edge_agent/catalog), first match wins:

    <site file dir>/profiles/NAME.yaml
    <profiles_dir>/NAME.yaml            (profiles_dir relative to the site file)
    $EDGE_AGENT_DATA/profiles/NAME.yaml (default /etc/edge-agent)
    the shipped profiles                (edge_agent/catalog/profiles/)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from drivers.contract import DeviceEntry, PointChecks, ProfileEntry
from drivers.names import NAME_PATTERN
from drivers.options.alarms import reference_issues
from drivers.registry import PROTOCOLS, plugin, plugins
from edge_agent.alarms.config import AlarmsConfig
from edge_agent.catalog import Folder, Kind, find, folders, known
from edge_agent.commands.config import WritesConfig
from edge_agent.config.document import Document, child, read_yaml
from edge_agent.config.errors import ConfigError, ConfigIssue, Loc, shown_path
from edge_agent.config.messages import (
    DISCRIMINATOR,
    Errors,
    Model,
    issues_from,
    suggest,
    validate,
)
from edge_agent.delivery.outbox import OutboxConfig
from edge_agent.energy.check import energy_issues
from edge_agent.energy.config import EnergyConfig
from edge_agent.ingest.config import InfluxConfig, IngestConfig
from edge_agent.ingest.influx_tls import influx_issues
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.tls import tls_issues
from edge_agent.ops.health_config import HealthConfig
from edge_agent.runtime.poll_slots import PollingConfig
from edge_agent.sparkplug.config import SparkplugConfig
from edge_agent.uplink.config import UplinkConfig
from edge_agent.uplink.platform import uplink_issues

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DeviceClash",
    "DeviceConfig",
    "DeviceSetup",
    "LoadedConfig",
    "SiteConfig",
    "device_clashes",
    "duplicate_names",
    "load_config",
    "protocol_clashes",
]

INLINE = "inline"  # profile_name of a device whose points are in the site file

# Every protocol's device model, in the registry's order: pydantic picks the member by the
# `driver` key and reports errors in that member only. The core reads the fields all of
# them share (DeviceEntry); what differs by protocol goes through its plugin.
if TYPE_CHECKING:
    AnyDevice = DeviceEntry
    DeviceConfig = DeviceEntry
else:
    AnyDevice = Union[tuple(p.device_model for p in plugins())]  # noqa: UP007
    DeviceConfig = Annotated[AnyDevice, Field(discriminator=DISCRIMINATOR)]

_CLASH_ERROR = "device_clash"
_WITH_PROFILES = [p.name for p in plugins() if p.profile_model is not None]
_DEVICE: TypeAdapter[AnyDevice] = TypeAdapter(DeviceConfig)


@dataclass(frozen=True, slots=True)
class DeviceClash:
    """A device entry that collides with an earlier one (same name, or same address)."""

    index: int
    key: str  # the key to point at: "name" or "device_id"
    message: str


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


def protocol_clashes(devices: Sequence[tuple[int, AnyDevice]]) -> list[DeviceClash]:
    """Entries clashing with an earlier one of their protocol (same line and address)."""
    by_protocol: dict[str, list[tuple[int, AnyDevice]]] = {}
    for index, device in devices:
        by_protocol.setdefault(device.driver, []).append((index, device))
    return [
        DeviceClash(index, key, message)
        for name, entries in by_protocol.items()
        for index, key, message in plugin(name).site_issues(entries)
    ]


def device_clashes(
    devices: Sequence[tuple[int, AnyDevice]],
) -> list[DeviceClash]:
    """Entries (index, device) reusing an earlier entry's name or line and address."""
    names = duplicate_names([(index, device.name) for index, device in devices])
    return sorted([*names, *protocol_clashes(devices)], key=lambda c: c.index)


class SiteConfig(BaseModel):
    """A site file: which site and gateway this is, where readings go, which devices to poll."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    gateway: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    polling: PollingConfig = PollingConfig()  # poll slots (runtime/poll_slots.py)
    influx: InfluxConfig | None = None  # no block: the ingest writes the embedded store
    ingest: IngestConfig = IngestConfig()
    energy: EnergyConfig = EnergyConfig()  # the energy stage's clock, tariff, hierarchy
    alarms: AlarmsConfig = AlarmsConfig()  # flood/chatter thresholds of the alarm stage
    health: HealthConfig = HealthConfig()  # when /healthz fails (edge-agent run --http)
    uplink: UplinkConfig | None = None  # 能耗在线监测 platform endpoints (platform_uplink.py)
    sparkplug: SparkplugConfig | None = None  # Sparkplug B edge node (edge_agent/sparkplug)
    writes: WritesConfig = WritesConfig()  # commands to points with `write:` (edge_agent/commands)
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
    profile: ProfileEntry | None
    profile_name: str  # "inline" for inline points


@dataclass(frozen=True)
class LoadedConfig:
    """A validated site whose every device has a plan."""

    path: Path
    site: SiteConfig
    devices: tuple[DeviceSetup, ...]
    notes: tuple[ConfigIssue, ...] = ()  # this machine's issues, let pass by `portable`
    # Not errors: `check` prints them, `run` logs them once (a Modicon-looking 0-based map).
    warnings: tuple[ConfigIssue, ...] = ()


# --- checks across points, devices and profiles ------------------------------------------


def _valid_items(
    doc: Document, loc: Loc, model: type[Model], inherited: Mapping[str, object]
) -> list[tuple[Loc, Model]]:
    """The entries of the list at `loc` that are valid on their own, each given the keys
    its map hands down (a Modbus map's `addressing`) unless it sets them itself."""
    raw = doc.at(loc)
    if not isinstance(raw, list):
        return []
    valid: list[tuple[Loc, Model]] = []
    for index, item in enumerate(raw):
        if inherited and isinstance(item, dict):
            item = {**inherited, **item}
        try:
            valid.append(((*loc, index), model.model_validate(item)))
        except ValidationError:
            continue
    return valid


_INHERITED = ("addressing",)  # keys of a map its points and ranges take as their default


def _point_issues(doc: Document, loc: Loc, checks: PointChecks | None) -> list[ConfigIssue]:
    """The protocol's checks across the points (and unreadable ranges) listed at `loc`,
    each issue placed at the point it concerns."""
    if checks is None:
        return []
    container = doc.at(loc)
    inherited = {
        key: container[key]
        for key in _INHERITED
        if isinstance(container, dict) and key in container
    }
    points = _valid_items(doc, (*loc, "points"), checks.point_model, inherited)
    unreadable = _valid_items(doc, (*loc, "unreadable"), checks.unreadable_model, inherited)
    issues: list[ConfigIssue] = []
    for issue in checks.check([p for _, p in points], [u for _, u in unreadable]):
        at = points[issue.index][0]
        if issue.other is not None:
            line = doc.line_of(points[issue.other][0])
            if issue.message.startswith("duplicate"):
                text = f"{issue.message} (first at line {line})"
                issues.append(doc.issue((*at, "name"), text))
            else:  # "... overlap 'level' (40-41)" -> "... overlap 'level' (40-41, line 8)"
                issues.append(doc.issue(at, f"{issue.message[:-1]}, line {line})"))
        elif issue.unreadable is not None:
            line = doc.line_of(unreadable[issue.unreadable][0])
            issues.append(doc.issue(at, f"{issue.message} (line {line})"))
    return issues


def _checks_at(doc: Document, loc: Loc) -> PointChecks | None:
    """The point checks of the protocol the entry at `loc` names, if it names a known one."""
    name = doc.at((*loc, DISCRIMINATOR))
    return plugin(name).point_checks if isinstance(name, str) and name in PROTOCOLS else None


@dataclass(eq=False)  # one per file, compared by identity
class _Profile:
    """A profile file loaded once for all the devices that use it."""

    path: Path
    protocol: str  # whose profile model it is read with: its first user's
    users: list[str] = field(default_factory=list)
    doc: Document | None = None
    profile: Any = None  # the model of `protocol`'s profiles, once valid
    issues: list[ConfigIssue] = field(default_factory=list)


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
    model = plugin(entry.protocol).profile_model
    assert model is not None  # _find_profiles reads profiles of profile-using protocols only
    checks = plugin(entry.protocol).point_checks
    profile, errors = validate(model, doc)
    located = _point_issues(doc, (), checks)
    entry.issues.extend(located)
    # The profile's own check of its points is already reported point by point.
    kept = [
        (loc, e) for loc, e in errors if not (located and not loc and e["type"] == "value_error")
    ]
    entry.issues.extend(issues_from(kept, doc, model))
    entry.issues[:] = _unshadowed(entry.issues, doc)
    if not entry.issues:
        entry.profile = profile


def _profile_dirs(site_dir: Path, profiles_dir: object, environ: Mapping[str, str]) -> list[Folder]:
    extra = Path(profiles_dir) if isinstance(profiles_dir, str) and profiles_dir else None
    return folders(Kind.PROFILES, site_dir, profiles_dir=extra, environ=environ)


def _unknown_profile(name: str, dirs: Sequence[Folder]) -> str:
    looked = ", ".join(d.shown for d in dirs)
    hint = suggest(name, known(dirs))
    return f"unknown profile {name!r} (looked in: {looked}{'; ' + hint if hint else ''})"


def _unreadable_covers(
    doc: Document, device_loc: Loc, device: AnyDevice, entry: _Profile, checks: PointChecks
) -> list[ConfigIssue]:
    """The device's own unreadable ranges against the points of its profile file."""
    assert entry.doc is not None
    issues: list[ConfigIssue] = []
    for k, j, message in checks.covers(device, entry.profile):
        where = f"{entry.doc.file}:{entry.doc.line_of(('points', j))}"
        issues.append(doc.issue((*device_loc, "unreadable", k), f"{message} ({where})"))
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
    doc: Document, site: SiteConfig | None, errors: Errors
) -> tuple[list[tuple[int, AnyDevice]], list[ConfigIssue]]:
    """The device entries valid on their own, and every issue of the site file's models
    (`site` and `errors`: the whole file validated once)."""
    issues: list[ConfigIssue] = []
    raw_devices = doc.at(("devices",))
    count = len(raw_devices) if isinstance(raw_devices, list) else 0
    inline_located: dict[int, list[ConfigIssue]] = {}
    valid: list[tuple[int, AnyDevice]] = []
    for i in range(count if site is None else 0):
        loc: Loc = ("devices", i)
        try:
            valid.append((i, _DEVICE.validate_python(doc.at(loc))))
            # A valid entry passed the model's own point checks: nothing to place.
            inline_located[i] = []
        except ValidationError:
            # Checked here as well as by the model, to place each issue at its point.
            inline_located[i] = _point_issues(doc, loc, _checks_at(doc, loc))
            issues.extend(inline_located[i])
    if site is not None:  # the whole file is valid: so is every entry, points included
        valid = list(enumerate(site.devices))
    issues.extend(issues_from(_site_errors(errors, doc, inline_located), doc, SiteConfig))
    raw_names = [(i, doc.at(("devices", i, "name"))) for i in range(count)]
    names = [(i, name) for i, name in raw_names if isinstance(name, str)]
    for clash in [*duplicate_names(names), *protocol_clashes(valid)]:
        issues.append(_clash_issue(doc, clash.index, clash.key, clash.message))
    return valid, issues


def _clash_issue(doc: Document, index: int, key: str, message: str) -> ConfigIssue:
    key_loc: Loc = ("devices", index, key)
    present, _ = child(doc.at(key_loc[:-1]), key)
    if present:
        return doc.issue(key_loc, message)
    # device_id left at its default: point at the device entry
    return doc.issue(key_loc[:-1], f"{message} (device_id defaults to 1)")


@runtime_checkable
class _MapClashes(Protocol):
    """A protocol that compares entries once their maps are loaded (Modbus: entries on one
    unit reading a register in common, when a profile is involved)."""

    def map_clashes(
        self, entries: Sequence[tuple[int, Any, Any]]
    ) -> list[tuple[int, str, str]]: ...


def _map_clash_issues(doc: Document, placed: Sequence[tuple[int, Any, Any]]) -> list[ConfigIssue]:
    by_protocol: dict[str, list[tuple[int, Any, Any]]] = {}
    for entry in placed:
        by_protocol.setdefault(entry[1].driver, []).append(entry)
    issues: list[ConfigIssue] = []
    for name, entries in by_protocol.items():
        protocol = plugin(name)
        if isinstance(protocol, _MapClashes):
            for index, key, message in protocol.map_clashes(entries):
                issues.append(_clash_issue(doc, index, key, message))
    return issues


def _find_profiles(
    doc: Document, dirs: Sequence[Folder], environ: Mapping[str, str]
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
        found = find(name, dirs)
        if found is None:
            issues.append(doc.issue(("devices", i, "profile"), _unknown_profile(name, dirs)))
            continue
        user = doc.at(("devices", i, "name"))
        driver = doc.at(("devices", i, DISCRIMINATOR))
        protocol = driver if isinstance(driver, str) and driver in _WITH_PROFILES else None
        # An entry whose driver is missing or wrong still gets its profile read (its errors
        # belong in this pass), as the registry's first protocol with profiles reads them.
        entry = profiles.setdefault(found.resolve(), _Profile(found, protocol or _WITH_PROFILES[0]))
        entry.users.append(user if isinstance(user, str) else f"devices[{i}]")
        wanted[i] = entry
    for entry in profiles.values():
        _load_profile(entry, environ)
    return wanted, issues


def _line_sharing_issues(
    doc: Document, valid: Sequence[tuple[int, AnyDevice]]
) -> list[ConfigIssue]:
    """A serial line speaks one protocol: later protocols on a line are told the first."""
    first: dict[str, str] = {}  # serial line -> the protocol that has it (table order)
    told: set[tuple[str, str]] = set()
    issues: list[ConfigIssue] = []
    ordered = sorted(valid, key=lambda e: list(PROTOCOLS).index(e[1].driver))
    for i, d in ordered:
        path = plugin(d.driver).serial_path(d) if d.enabled else None
        if path is None:
            continue
        owner = first.setdefault(path, d.driver)
        if owner != d.driver and (path, d.driver) not in told:
            told.add((path, d.driver))
            issues.append(
                doc.issue(
                    ("devices", i, "url"),
                    f"{path} is also a {plugin(owner).title} line; one serial line speaks "
                    "one protocol",
                )
            )
    return issues


def load_config(
    path: Path, *, environ: Mapping[str, str] | None = None, portable: bool = False
) -> LoadedConfig:
    """Read, validate and plan a site file; raises ConfigError listing every problem.

    `portable`: the problems of this machine rather than of the file (an unset ${VAR}, a
    certificate that is not here) become the result's `notes` instead of errors: how a site
    file kept in git is checked in CI, where the gateway's secrets and files are not.
    """
    env = os.environ if environ is None else environ
    doc = read_yaml(path, environ=env)
    if doc.data is None:
        raise ConfigError([doc.issue((), "the file is empty; a site needs site, gateway, devices")])
    sets = _FieldsSets()
    site, site_errors, dropped = _validate_site(doc, sets)
    if site is None and dropped:  # the errors need the file's data as it was
        doc = read_yaml(path, environ=env)
        site, site_errors = validate(SiteConfig, doc)
    valid, device_issues = _check_devices(doc, site, site_errors)
    issues = [*doc.issues, *device_issues, *_line_sharing_issues(doc, valid)]

    site_dir = path.parent
    profiles_dir = doc.at(("profiles_dir",))
    if isinstance(profiles_dir, str) and profiles_dir and not (site_dir / profiles_dir).is_dir():
        shown = shown_path(site_dir / profiles_dir)
        issues.append(doc.issue(("profiles_dir",), f"profiles_dir {shown}/ is not a directory"))
    wanted, lookup_issues = _find_profiles(doc, _profile_dirs(site_dir, profiles_dir, env), env)
    issues.extend(lookup_issues)

    setups: list[DeviceSetup] = []
    placed: list[tuple[int, Any, Any]] = []  # (index, device, profile) of every setup
    for i, device in valid:
        protocol = plugin(device.driver)
        device = protocol.resolved(device, site_dir.resolve())
        if protocol.profile_model is None:
            profile, profile_name = None, INLINE
        elif device.profile is None:
            profile, profile_name = device.inline_profile(), INLINE
        else:
            entry = wanted.get(i)
            if entry is None or entry.profile is None:
                continue
            if not isinstance(entry.profile, protocol.profile_model):
                issues.append(
                    doc.issue(("devices", i, "profile"), protocol.wrong_profile(device.profile))
                )
                continue
            checks = protocol.point_checks
            covers = (
                []
                if checks is None
                else _unreadable_covers(doc, ("devices", i), device, entry, checks)
            )
            if covers:
                issues.extend(covers)
                continue
            profile, profile_name = entry.profile, device.profile
        try:
            protocol.compile(device, profile)
        except ValueError as exc:
            issues.append(doc.issue(("devices", i), str(exc)))
            continue
        setups.append(DeviceSetup(device, profile, profile_name))
        placed.append((i, device, profile))

    issues.extend(_map_clash_issues(doc, placed))
    issues.extend(_alarm_references(doc, valid, setups))
    file_issues = [x for x in issues if not x.local]
    if site is not None and not file_issues and not any(e.issues for e in wanted.values()):
        issues.extend(energy_issues(doc, site.energy, setups, site=site.site, base=site_dir))
        if site.uplink is not None:
            issues.extend(uplink_issues(doc, site.uplink, base=site_dir))
        if site.influx is not None:
            issues.extend(influx_issues(doc, site.influx, base=site_dir))
        if site.mqtt.tls is not None:
            issues.extend(tls_issues(doc, site.mqtt.tls.resolved(site_dir)))
    profile_issues = [
        ConfigIssue(x.file, x.line, x.path, f"{x.message} {_used_by(entry.users)}")
        for entry in dict.fromkeys(wanted.values())
        for x in entry.issues
    ]
    ordered = _ordered([*_unshadowed(issues, doc), *profile_issues], first=doc.file)
    if site is None and not ordered:  # cannot happen: every dropped error is reported otherwise
        ordered = [doc.issue((), "invalid site config")]
    notes = [x for x in ordered if x.local] if portable else []
    ordered = [x for x in ordered if x not in notes]
    if ordered or site is None:
        raise ConfigError(ordered or [doc.issue((), "invalid site config")], file=doc.file)
    if site.mqtt.tls is not None:
        mqtt = site.mqtt.model_copy(update={"tls": site.mqtt.tls.resolved(site_dir)})
        site = site.model_copy(update={"mqtt": mqtt})
    warnings = _map_warnings(doc, valid, wanted)
    sets.share([site, *(e.profile for e in wanted.values())])
    return LoadedConfig(path, site, tuple(setups), tuple(notes), tuple(warnings))


class _FieldsSets:
    """One set of the keys a model was given, for all frozen models given the same keys.

    pydantic keeps a set of the fields given per model (`model_fields_set`): 728 bytes for
    a point of six keys, more than half of what the point costs; at 500 devices with 50
    inline points, 17 MB for 25,000 copies of a few sets. A frozen model never changes
    its set (model_copy copies it before adding to it), so equal sets can be one object.
    """

    def __init__(self) -> None:
        self.shared: dict[frozenset[str], set[str]] = {}

    def share(self, models: Sequence[object]) -> None:
        """Every frozen model in `models` (and in their fields) takes the shared set."""
        shared = self.shared
        seen: set[int] = set()
        stack = list(models)
        while stack:
            model = stack.pop()
            if isinstance(model, tuple | list):
                stack.extend(model)
                continue
            if not isinstance(model, BaseModel) or id(model) in seen:
                continue
            seen.add(id(model))
            stack.extend(
                v for v in model.__dict__.values() if isinstance(v, BaseModel | tuple | list)
            )
            if not model.model_config.get("frozen"):
                continue
            given = model.__pydantic_fields_set__
            one = shared.setdefault(frozenset(given), given)
            if one is not given:
                object.__setattr__(model, "__pydantic_fields_set__", one)


def _validate_site(doc: Document, sets: _FieldsSets) -> tuple[SiteConfig | None, Errors, bool]:
    """The site model, or the errors of the whole file (as `validate` gives them), and
    whether the document's data lost points on the way (then it must be read again).

    A valid file is validated one device entry at a time. Each entry's models share their
    field sets at once, and its points leave the document's data: only their lines are
    read from here on. So the copies of the sets, the points as read and the points as
    models are never all alive together, which at 25,000 inline points keeps about 30 MB
    off the peak of loading (and off the agent's RSS, which keeps its peak). Any invalid
    entry: the whole file is validated, for the errors as they were.
    """
    data = doc.data
    raw = data.get("devices") if isinstance(data, dict) else None
    dropped = False
    if isinstance(raw, list) and raw:
        devices: list[AnyDevice] = []
        try:
            for item in raw:
                device = _DEVICE.validate_python(item)
                sets.share([device])
                devices.append(device)
                if isinstance(item, dict) and item.pop("points", None) is not None:
                    dropped = True
            assert isinstance(data, dict)
            return SiteConfig.model_validate({**data, "devices": devices}), [], dropped
        except ValidationError:
            pass
    if dropped:
        return None, [], True
    site, errors = validate(SiteConfig, doc)
    return site, errors, False


@runtime_checkable
class _Warned(Protocol):
    def notation_warnings(self) -> list[tuple[int, str]]: ...


def _map_warnings(
    doc: Document, valid: Sequence[tuple[int, AnyDevice]], wanted: Mapping[int, _Profile]
) -> list[ConfigIssue]:
    """Maps that may not mean what they say (Modbus: 40001 on a 0-based map), each once:
    at the profile file's point, or at the inline point of the site file."""
    warnings: list[ConfigIssue] = []
    told: set[int] = set()
    for i, device in valid:
        entry = wanted.get(i)
        if entry is not None:
            if id(entry) in told or entry.doc is None or not isinstance(entry.profile, _Warned):
                continue
            told.add(id(entry))
            for j, message in entry.profile.notation_warnings():
                issue = entry.doc.issue(("points", j, "address"), message)
                warnings.append(
                    ConfigIssue(
                        issue.file, issue.line, issue.path, f"{message} {_used_by(entry.users)}"
                    )
                )
        elif isinstance(device, _Warned):
            for j, message in device.notation_warnings():
                warnings.append(doc.issue(("devices", i, "points", j, "address"), message))
    return warnings


def _alarm_references(
    doc: Document, valid: Sequence[tuple[int, AnyDevice]], setups: Sequence[DeviceSetup]
) -> list[ConfigIssue]:
    """Alarm rules and set-points naming points their device does not have, every driver."""
    index_of = {d.name: i for i, d in valid}
    issues: list[ConfigIssue] = []
    for setup in setups:
        device, profile = setup.device, setup.profile
        points = profile.points if profile is not None else device.points or ()
        profile_rules = profile.alarms if profile is not None else ()
        found = reference_issues(
            points, profile_rules, device.alarms, inline=setup.profile_name == INLINE
        )
        for loc, message in found:
            issues.append(doc.issue(("devices", index_of[device.name], *loc), message))
    return issues


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

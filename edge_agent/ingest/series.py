"""The series the ingest writes: configured ones, or explicitly allowed (its cardinality promise).

Every tag value of a stored reading is a site, gateway, device or point name, so the
number of series is the number of names the ingest accepts. It accepts:

- the site file it was started with: its `site`, `gateway`, every device (enabled or
  not) and each device's points (profile or inline) with the point's configured unit (a
  unit is a tag too: the same point in another unit would be another series);
- what those derive on `{prefix}/{site}/{gateway}/energy`: for a device, `{span}.{point}`
  and `{span}.{point}.{suffix}` with span interval, day, month or demand and suffix a
  tariff period (sharp, peak, flat, valley) or completeness, tce, co2, month_max,
  demand_max, load_factor, plus `day.pf`, `month.pf`, `demand.meter`, `demand.meter_max`;
  for a hierarchy node, a virtual meter or the site (energy: hierarchy), the same with an
  energy kind (electricity, reactive, water, ...) in place of the point;
- the gateway's own health series (`_gateway`, gateway_health.py);
- manual entries of its gateway (`manual.{counter}` of any device on the energy topic):
  they are the operator's own, typed in with `edge-agent uplink manual`;
- alarm transitions of the alarms the file configures;
- write audits (ingest/audits.py) of the devices it accepts, the point a tag only when
  it is one of the device's points;
- anything matching `ingest.allow`: `site/gateway/device/point` patterns, a name or a
  glob (`*`, `?`, `[...]`) per level, for gateways described by other files (a central
  ingest). For an energy series the point level is the derived name; an alarm on a point
  is allowed with its point, a device alarm (comm_loss) by a pattern whose point level
  matches "*".
  A pattern with wildcards trusts those gateways to keep their own names bounded.

A data message's points that are not accepted are taken out of it (the rest is stored)
and the message goes to the dead-letter topic as `not_configured`, naming them; a message
with no accepted point, or from a site, gateway or device not accepted, is not stored at
all. Decisions on allowed names are cached (bounded), so the check is a set lookup per
point in the steady state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate

from drivers.registry import plugin
from edge_agent.alarms.stage import build_watches
from edge_agent.config.site import LoadedConfig
from edge_agent.delivery.outbox import OutboxStats
from edge_agent.energy.coefficients import CANONICAL
from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.tariffs import PERIODS
from edge_agent.ingest.alarms import AlarmMessage
from edge_agent.ingest.schema import DataMessage, Source
from edge_agent.ops.gateway_health import GATEWAY_DEVICE, gateway_doc

SPANS = ("interval.", "day.", "month.", "demand.")
SUFFIXES = frozenset(
    {*PERIODS, "completeness", "tce", "co2", "month_max", "demand_max", "load_factor"}
)
# Names of a span that do not name a counter.
SPAN_EXTRAS: Mapping[str, frozenset[str]] = {
    "interval.": frozenset(),
    "day.": frozenset({"pf"}),
    "month.": frozenset({"pf"}),
    "demand.": frozenset({"meter", "meter_max"}),
}
_CACHE_LIMIT = 100_000  # allow-pattern decisions remembered
_ABSENT = object()  # not a unit: a point the device does not have
MANUAL = "manual."  # manual entries on the energy topic (platform_uplink.manual_doc)
# The health pseudo-device's points and units, from the document it publishes.
GATEWAY_POINTS: Mapping[str, str | None] = {
    name: entry["unit"]
    for name, entry in gateway_doc(OutboxStats(), mqtt_connected=True, devices_up=0, devices=0)[
        "points"
    ].items()
}


@dataclass(frozen=True, slots=True)
class Gateway:
    """What one site file configures: its devices' points, energy nodes, alarm ids."""

    site: str
    gateway: str
    points: Mapping[str, Mapping[str, str | None]]  # device -> point name -> unit
    nodes: frozenset[str]  # hierarchy nodes, virtual meters, the site (energy series)
    alarms: frozenset[str]  # alarm ids


def configured_gateway(loaded: LoadedConfig) -> Gateway:
    """The names a site file configures (see the module docstring)."""
    site = loaded.site
    points: dict[str, Mapping[str, str | None]] = {GATEWAY_DEVICE: GATEWAY_POINTS}
    for setup in loaded.devices:
        device = setup.device
        # The points and units the device's polls carry, as its protocol publishes them.
        specs = plugin(device.driver).point_specs(device, setup.profile)
        points[device.name] = {p.name: p.unit for p in specs}
    energy: EnergyConfig | None = site.energy
    nodes: set[str] = set()
    if energy is not None:
        nodes.update(n.name for n in energy.hierarchy)
        nodes.update(v.name for v in energy.virtual_meters)
        if energy.hierarchy:
            nodes.add(site.site)  # the site's own series sums the top nodes
    alarms = {
        alarm.id
        for watch in build_watches(loaded)
        for alarm in [*watch.comm_loss, *(a for group in watch.by_point.values() for a in group)]
    }
    return Gateway(site.site, site.gateway, points, frozenset(nodes), frozenset(alarms))


class KnownSeries:
    """Decides which names get series: a configured gateway plus `allow` patterns."""

    def __init__(self, gateways: Sequence[Gateway], allow: Iterable[str] = ()) -> None:
        self._points: dict[tuple[str, str, str], Mapping[str, str | None]] = {}
        self._nodes: set[tuple[str, str, str]] = set()
        self._alarms: set[tuple[str, str, str]] = set()
        self._gateways = {(g.site, g.gateway) for g in gateways}
        for g in gateways:
            for device, names in g.points.items():
                self._points[(g.site, g.gateway, device)] = names
            self._nodes.update((g.site, g.gateway, node) for node in g.nodes)
            self._alarms.update((g.site, g.gateway, alarm) for alarm in g.alarms)
        self.allow = tuple(allow)
        self._allow = (
            re.compile("|".join(f"(?:{_pattern(p)})" for p in self.allow)) if self.allow else None
        )
        self._decided: dict[str, bool] = {}

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> KnownSeries:
        """The site file's own names plus its `ingest.allow`."""
        return cls([configured_gateway(loaded)], loaded.site.ingest.allow)

    def allowed(self, site: str, gateway: str, device: str, point: str) -> bool:
        """Whether an `ingest.allow` pattern matches."""
        if self._allow is None:
            return False
        key = f"{site}/{gateway}/{device}/{point}"
        decided = self._decided.get(key)
        if decided is None:
            decided = self._allow.fullmatch(key) is not None
            if len(self._decided) < _CACHE_LIMIT:
                self._decided[key] = decided
        return decided

    def admit(self, message: DataMessage, *, energy: bool) -> list[str]:
        """Take the points without a series of their own out of `message`; returns their names."""
        source = message.source
        known = self._points.get((source.site, source.gateway, source.device))
        points = message.points
        if not energy and known is not None:
            get = known.get
            if all(get(p[0], _ABSENT) == p[2] for p in points):
                return []  # the steady state: a configured device's own points and units
        keep = [
            self._energy_name(source, known, p[0])
            if energy
            else self._data_name(source, known, p[0], p[2])
            for p in points
        ]
        if all(keep):
            return []
        dropped = [p[0] for p, k in zip(points, keep, strict=True) if not k]
        point_ts = message.point_ts
        if point_ts is not None:
            moved: dict[int, int] = {}
            at = 0
            for i, k in enumerate(keep):
                if k:
                    if i in point_ts:
                        moved[at] = point_ts[i]
                    at += 1
            message.point_ts = moved or None
        message.points = [p for p, k in zip(points, keep, strict=True) if k]
        return dropped

    def _data_name(
        self, source: Source, known: Mapping[str, str | None] | None, name: str, unit: str | None
    ) -> bool:
        if known is not None and name in known:
            return known[name] == unit  # configured: in its configured unit only
        return self.allowed(source.site, source.gateway, source.device, name)

    def _energy_name(
        self, source: Source, known: Mapping[str, str | None] | None, name: str
    ) -> bool:
        counters: Iterable[str] | None = known
        if counters is None and (source.site, source.gateway, source.device) in self._nodes:
            counters = CANONICAL  # a node's series are per energy kind
        if counters is not None and _derived(name, counters):
            return True
        if name.startswith(MANUAL) and (source.site, source.gateway) in self._gateways:
            return True
        return self.allowed(source.site, source.gateway, source.device, name)

    def alarm(self, message: AlarmMessage) -> bool:
        """Whether an alarm transition gets series: a configured or allowed alarm."""
        source = message.source
        if (source.site, source.gateway, message.id) in self._alarms:
            return True
        return self.allowed(source.site, source.gateway, source.device, message.point or "*")

    def command(self, source: Source, point: str) -> bool | None:
        """For a write audit of `point` on `source`'s device: None when the device gets no
        series (not configured, not allowed); else whether `point` is one of its points
        (configured or allowed), so a tag, or a name a request made up."""
        known = self._points.get((source.site, source.gateway, source.device))
        if known is not None:
            return point in known or self.allowed(source.site, source.gateway, source.device, point)
        if not self.allowed(source.site, source.gateway, source.device, "*"):
            return None
        return self.allowed(source.site, source.gateway, source.device, point)


def _derived(name: str, counters: Iterable[str]) -> bool:
    """Whether `name` is an energy series of one of `counters` (module docstring)."""
    for span in SPANS:
        if not name.startswith(span):
            continue
        rest = name[len(span) :]
        if rest in counters or rest in SPAN_EXTRAS[span]:
            return True
        counter, dot, suffix = rest.rpartition(".")
        return bool(dot) and suffix in SUFFIXES and counter in counters
    return False


def _pattern(allow: str) -> str:
    """One `site/gateway/device/point` glob as a regular expression of the joined names."""
    # fnmatch's `*` matches '/', but names have none: each level still matches one name,
    # since both sides have exactly three separators.
    return "/".join(
        translate(level).removeprefix("(?s:").removesuffix(")\\Z") for level in allow.split("/")
    )

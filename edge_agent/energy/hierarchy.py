"""Site -> area (workshop) -> line -> meter, and virtual meters, per interval and energy kind.

    counter intervals (device, point) ──► collected by interval start
        when every counter the tree uses has delivered that interval (or it is too old):
            virtual meter  = Σ sign x meter            (formula "a - b - c")
            node           = Σ its meters, or Σ its child nodes when it names none
            site           = Σ top-level nodes
        ──► one Interval per (series, kind), series being a node or virtual meter name

A meter reference names a device (its consumption counters: role counter, direction
import or none, one per kind) or `device.point`, or a virtual meter. Values are summed per
kind (electricity with electricity, water with water). Completeness of a sum is the lowest
completeness of its terms; a term that never delivered its interval counts as 0 complete
and is named in the flags (`missing:device.point`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.energy.config import EnergyConfig, formula_terms
from edge_agent.energy.intervals import Interval, sum_periods

CounterKey = tuple[str, str]  # (device, point)
MAX_PENDING = 8  # interval starts held while a term is late


@dataclass(frozen=True, slots=True)
class CounterInfo:
    """What the tree needs to know of a counter."""

    key: CounterKey
    kind: str
    direction: str | None
    role: str = "counter"

    @property
    def consumption(self) -> bool:
        """A counter of what is consumed (import, or a medium without direction)."""
        return self.role == "counter" and self.direction in (None, "import")


@dataclass(frozen=True, slots=True)
class Series:
    """A node or virtual meter of the tree, as published."""

    name: str
    level: str  # site, area, line, virtual
    parent: str | None
    terms: tuple[tuple[int, str], ...]  # (sign, meter or node name)
    description: str


class Hierarchy:
    """Computes the tree's series from counter intervals."""

    def __init__(self, config: EnergyConfig, site: str, counters: Sequence[CounterInfo]) -> None:
        self.site = site
        by_device: dict[str, list[CounterInfo]] = {}
        for c in counters:
            if c.consumption:
                by_device.setdefault(c.key[0], []).append(c)
        by_key = {f"{c.key[0]}.{c.key[1]}": c for c in counters}
        virtual_names = {v.name for v in config.virtual_meters}
        node_names = {n.name for n in config.hierarchy}
        # meter name -> counters it stands for
        self._meters: dict[str, list[CounterInfo]] = {}

        def resolve(ref: str, where: str) -> None:
            if ref in self._meters or ref in virtual_names:
                return
            if ref in by_key:
                self._meters[ref] = [by_key[ref]]
            elif ref in by_device:
                kinds = [c.kind for c in by_device[ref]]
                doubled = {k for k in kinds if kinds.count(k) > 1}
                if doubled:
                    raise ValueError(
                        f"{where}: device {ref!r} has several {sorted(doubled)[0]} consumption "
                        "counters; name one as device.point"
                    )
                self._meters[ref] = by_device[ref]
            else:
                raise ValueError(f"{where}: {ref!r} is not a device with energy counters")

        self.series: list[Series] = []
        for v in config.virtual_meters:
            terms = formula_terms(v.formula)
            for _, ref in terms:
                if ref in node_names:
                    raise ValueError(f"virtual meter {v.name}: {ref!r} is a node, not a meter")
                resolve(ref, f"virtual meter {v.name}")
            self.series.append(Series(v.name, "virtual", None, tuple(terms), v.formula))
        children: dict[str | None, list[str]] = {}
        for n in config.hierarchy:
            children.setdefault(n.parent, []).append(n.name)
        nodes = []
        for n in config.hierarchy:
            for ref in n.meters:
                resolve(ref, f"hierarchy {n.name}")
            refs = n.meters or tuple(children.get(n.name, ()))
            if not refs:
                raise ValueError(f"hierarchy {n.name}: no meters and no child nodes")
            what = " + ".join(refs)
            nodes.append(
                Series(n.name, n.level, n.parent or site, tuple((1, r) for r in refs), what)
            )
        # Children before parents, so one pass computes the tree.
        depth = {n.name: self._depth(config, n.name) for n in config.hierarchy}
        self.series.extend(sorted(nodes, key=lambda s: -depth[s.name]))
        if config.hierarchy:
            top = tuple((1, name) for name in children.get(None, []))
            self.series.append(Series(site, "site", None, top, " + ".join(n for _, n in top)))
        self.needed: set[CounterKey] = {c.key for cs in self._meters.values() for c in cs}
        self._pending: dict[int, dict[CounterKey, Interval]] = {}

    @staticmethod
    def _depth(config: EnergyConfig, name: str) -> int:
        depth, at = 0, next(n for n in config.hierarchy if n.name == name).parent
        while at is not None:
            depth += 1
            at = next(n for n in config.hierarchy if n.name == at).parent
        return depth

    def add(self, key: CounterKey, interval: Interval) -> list[tuple[Series, dict[str, Interval]]]:
        """Take one counter interval; the series computed for every start now complete."""
        if key not in self.needed:
            return []
        self._pending.setdefault(interval.start_ms, {})[key] = interval
        done: list[tuple[Series, dict[str, Interval]]] = []
        for start in sorted(self._pending):
            got = self._pending[start]
            if len(got) < len(self.needed) and len(self._pending) <= MAX_PENDING:
                break  # later starts wait for this one: output stays in time order
            del self._pending[start]
            done.extend(self._compute(got))
        return done

    def flush(self) -> list[tuple[Series, dict[str, Interval]]]:
        """Every start still waiting for a late term, computed now (missing terms flagged).

        For a replay that has reached the end of its data (the report): live, a start waits
        for up to MAX_PENDING intervals, which is longer than the report reads past its end.
        """
        done: list[tuple[Series, dict[str, Interval]]] = []
        for start in sorted(self._pending):
            done.extend(self._compute(self._pending.pop(start)))
        return done

    def _compute(
        self, got: Mapping[CounterKey, Interval]
    ) -> list[tuple[Series, dict[str, Interval]]]:
        sample = next(iter(got.values()))
        values: dict[str, dict[str, Interval]] = {}  # meter/series name -> kind -> interval
        for name, counters in self._meters.items():
            per_kind: dict[str, Interval] = {}
            for c in counters:
                found = got.get(c.key)
                if found is None:
                    found = _empty(sample)
                    found.flags.add(f"missing:{c.key[0]}.{c.key[1]}")
                per_kind[c.kind] = found
            values[name] = per_kind
        out: list[tuple[Series, dict[str, Interval]]] = []
        for series in self.series:
            combined: dict[str, Interval] = {}
            for sign, ref in series.terms:
                for kind, iv in values.get(ref, {}).items():
                    acc = combined.get(kind)
                    if acc is None:
                        acc = combined[kind] = _empty(iv, completeness=1.0)
                    _accumulate(acc, iv, sign)
            values[series.name] = combined
            out.append((series, combined))
        return out


def _empty(like: Interval, *, completeness: float = 0.0) -> Interval:
    return Interval(
        like.start_ms,
        like.end_ms,
        like.day,
        0.0,
        None if like.periods is None else {},
        like.tariff,
        completeness,
        1.0,
    )


def _accumulate(acc: Interval, iv: Interval, sign: int) -> None:
    acc.energy += sign * iv.energy
    if iv.periods is not None:
        signed = {k: sign * v for k, v in iv.periods.items()}
        acc.periods = sum_periods(acc.periods if acc.periods is not None else {}, signed)
    acc.readings = min(acc.readings, iv.completeness)
    acc.flags |= iv.flags


def outside_meters(config: EnergyConfig, counters: Sequence[CounterInfo]) -> list[CounterKey]:
    """Consumption counters no hierarchy node reaches (directly or through a virtual
    meter it names): not part of the site series. Empty without a hierarchy."""
    if not config.hierarchy:
        return []
    formulas = {v.name: [ref for _, ref in formula_terms(v.formula)] for v in config.virtual_meters}
    reached: set[str] = set()
    refs = [r for n in config.hierarchy for r in n.meters]
    while refs:
        ref = refs.pop()
        if ref not in reached:
            reached.add(ref)
            refs.extend(formulas.get(ref, ()))
    return [
        c.key
        for c in counters
        if c.consumption and c.key[0] not in reached and f"{c.key[0]}.{c.key[1]}" not in reached
    ]

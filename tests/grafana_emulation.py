"""What Grafana sends to a Prometheus data source for a panel of a generated dashboard.

No Grafana runs here (runtime.md: none can), so its part is done the way Grafana does it:

- the panel's time range: the dashboard's (`now-24h`, `now/M` ...) or the panel's own
  `timeFrom` (`now/d`: from today's 00:00 to now), in the dashboard's time zone;
- template variables (frontend, Prometheus data source): `${area:text}` the option's text,
  a single-value variable its value (backslashes and quotes escaped), a multi-value one
  `(a|b|c)` with each value's regex metacharacters escaped, "All" as every option;
- built-in variables (backend, pkg/promlib/models/query.go): `$__interval` the step,
  `${__range_ms}` the range in ms; the step is the range over max data points rounded as
  Grafana rounds it (gtime), at least the target's `interval` (else the data source's
  scrape interval, 15 s), at least range / 11000;
- an instant query is evaluated at the range's end; a range query steps from its start and
  end rounded down to a multiple of the step in the dashboard's time zone
  (`utcOffsetSec`, AlignTimeRange);
- a `label_values(selector, label)` variable asks /api/v1/label/<label>/values with the
  selector as `match[]` over the dashboard's range.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

SAFE_RESOLUTION = 11_000
DEFAULT_SCRAPE_MS = 15_000
# gtime.RoundInterval: (upper bound, rounded), ms.
_ROUND = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (172800000, 86400000), (604800000, 86400000), (1814400000, 604800000),
)  # fmt: skip
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def round_interval(ms: int) -> int:
    for bound, rounded in _ROUND:
        if ms <= bound:
            return rounded
    return 2_592_000_000 if ms < 3_628_800_000 else 31_536_000_000


def format_interval(ms: int) -> str:
    """gtime.FormatInterval: the largest whole unit."""
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    for unit, size in (("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{max(ms, 1)}ms"


def duration_ms(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(ms|[smhdw])", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def relative(text: str, now_ms: int, zone: ZoneInfo, *, end: bool = False) -> int:
    """`now`, `now-24h`, `now/d`, `now/M`: a time in ms (a rounded `to` rounds up)."""
    match = re.fullmatch(r"now(?:-(\d+)([smhdw]))?(?:/([dM]))?", text)
    assert match, text
    when = dt.datetime.fromtimestamp(now_ms / 1000, zone)
    if match.group(1):
        when -= dt.timedelta(milliseconds=int(match.group(1)) * _UNITS[match.group(2)])
    if match.group(3):
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
        if match.group(3) == "M":
            start = start.replace(day=1)
        if end:
            nxt = (
                (start + dt.timedelta(days=32)).replace(day=1)
                if match.group(3) == "M"
                else (start + dt.timedelta(days=1))
            )
            return int(nxt.timestamp() * 1000) - 1
        when = start
    return int(when.timestamp() * 1000)


@dataclass
class View:
    """Where a user looks: the dashboard at a moment, with the variables picked."""

    now_ms: int
    site: str
    area: str  # the option's text: the site or an area
    devices: Sequence[str] | None = None  # picked devices; None: All
    max_data_points: int = 1000
    time_from: str | None = None  # the dashboard's range, if the user changed it
    time_to: str | None = None
    all_devices: list[str] = field(default_factory=list)  # the device variable's options


@dataclass(frozen=True)
class Request:
    """One request to the data source."""

    path: str
    params: dict[str, str]
    step_ms: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None


def _regular_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _special_escape(value: str) -> str:
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


class Grafana:
    """One dashboard as Grafana would query it."""

    def __init__(self, board: Mapping[str, Any]) -> None:
        self.board = board
        self.zone = ZoneInfo(board["timezone"])
        self.variables = {v["name"]: v for v in board["templating"]["list"]}

    def time_range(self, view: View, panel: Mapping[str, Any] | None = None) -> tuple[int, int]:
        """The panel's [from, to] in ms."""
        time = self.board["time"]
        start = view.time_from or time["from"]
        stop = view.time_to or time["to"]
        if panel is not None and panel.get("timeFrom"):
            start = panel["timeFrom"]
        return (
            relative(start, view.now_ms, self.zone),
            relative(stop, view.now_ms, self.zone, end=True),
        )

    def _values(self, view: View) -> dict[str, tuple[str, list[str], bool]]:
        """variable -> (text, values, multi)."""
        area = next(o for o in self.variables["area"]["options"] if o["text"] == view.area)
        found = {
            "site": (view.site, [view.site], False),
            "area": (area["text"], [area["value"]], False),
            "device": (
                "All" if view.devices is None else ",".join(view.devices),
                list(view.all_devices if view.devices is None else view.devices),
                True,
            ),
        }
        for name, v in self.variables.items():
            if v["type"] == "constant":
                found[name] = (v["query"], [v["query"]], False)
        return found

    def interpolate(self, text: str, view: View) -> str:
        """The frontend's template variables (not the `__` built-ins)."""
        values = self._values(view)

        def one(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(3)
            if name.startswith("__"):
                return match.group(0)
            shown, picked, multi = values[name]
            if match.group(2) == "text":
                return shown
            if multi:
                return "(" + "|".join(_special_escape(v) for v in picked) + ")"
            return _regular_escape(picked[0])

        return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", one, text)

    def request(self, panel: Mapping[str, Any], target: Mapping[str, Any], view: View) -> Request:
        """The request Grafana's backend sends for one target."""
        start, stop = self.time_range(view, panel)
        span = stop - start
        minimum = duration_ms(target["interval"]) if target.get("interval") else DEFAULT_SCRAPE_MS
        calculated = span // view.max_data_points
        step = minimum if calculated < minimum else round_interval(calculated)
        step = max(step, round_interval(span // SAFE_RESOLUTION))
        expr = self.interpolate(target["expr"], view)
        for name, value in (
            ("__interval_ms", str(step)),
            ("__interval", format_interval(step)),
            ("__range_ms", str(span)),
            ("__range_s", str(round(span / 1000))),
            ("__range", f"{round(span / 1000)}s"),
        ):
            expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
        assert "$" not in expr.replace("$1", ""), expr
        if target["instant"]:
            return Request("/api/v1/query", {"query": expr, "time": f"{stop / 1000:.3f}"})
        offset = int(dt.datetime.fromtimestamp(stop / 1000, self.zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        offset_ms = offset * 1000
        first = (start + offset_ms) // step * step - offset_ms
        last = (stop + offset_ms) // step * step - offset_ms
        params = {
            "query": expr,
            "start": f"{first / 1000:.3f}",
            "end": f"{last / 1000:.3f}",
            "step": f"{step / 1000:g}",
        }
        return Request("/api/v1/query_range", params, step, first, last)

    def variable_request(self, name: str, view: View) -> Request:
        """The request behind a `label_values(selector, label)` variable."""
        query = self.interpolate(self.variables[name]["query"], view)
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, query
        start, stop = self.time_range(view)
        params = {
            "match[]": match.group(1),
            "start": f"{start / 1000:.3f}",
            "end": f"{stop / 1000:.3f}",
        }
        return Request(f"/api/v1/label/{match.group(2)}/values", params)


def ask(url: str, request: Request) -> Any:
    """POST the request (as Grafana does, form-encoded) and return `data`; fails on an error."""
    body = urllib.parse.urlencode(request.params).encode()
    if request.path.startswith("/api/v1/label/"):  # GET only (Grafana's client says so)
        address = f"{url}{request.path}?{body.decode()}"
        http = urllib.request.Request(address)
    else:
        http = urllib.request.Request(
            f"{url}{request.path}",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    with urllib.request.urlopen(http, timeout=30) as answer:
        doc = orjson.loads(answer.read())
    assert doc["status"] == "success", (request.params, doc)
    return doc["data"]


def series(data: Any) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
    """Result series by their sorted labels -> [(ts_ms, value)] (one pair for an instant)."""
    out = {}
    for s in data["result"]:
        key = tuple(sorted(s["metric"].items()))
        pairs = s["values"] if "values" in s else [s["value"]]
        out[key] = [(round(float(t) * 1000), float(v)) for t, v in pairs]
    return out

"""Where the report reads counter readings: the `ReadingSource` protocol and the embedded store.

The report recomputes every number from stored counter readings with the same code the
agent runs (energy_stage), rather than trusting derived series: an auditor can rerun it
over the raw data, and a correction to a coefficient table or tariff calendar applies to
past periods by running the report again.

    ReadingSource.readings(device, points, start_ms, end_ms)
        -> [(ts_ms, {point: value or None (not good)})] in time order, one entry per poll

`EmbeddedSource` reads the ingest's SQLite file (edge_agent/ingest/embedded_store.py, the
`readings` and `series` tables), read-only; `VictoriaSource` the time-series server the
ingest writes when the site has an `influx:` block (VictoriaMetrics' export API), over
https with the same `influx.ca_file` / `influx.verify_tls` as the ingest.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_agent.ingest.influx_tls import certificate_problem, ssl_context, warn_unverified

if TYPE_CHECKING:
    from edge_agent.config.site import LoadedConfig

logger = logging.getLogger(__name__)
PollRow = tuple[int, dict[str, float | None]]


class ReadingSource(Protocol):
    """Counter readings of a period, per device, grouped by poll."""

    def readings(
        self, device: str, points: Sequence[str], start_ms: int, end_ms: int
    ) -> list[PollRow]:
        """Polls of `device` with start_ms <= ts < end_ms carrying any of `points`."""
        ...


class EmbeddedSource:
    """Readings from the embedded SQLite store of the ingest service."""

    def __init__(self, path: Path, *, site: str, gateway: str | None = None) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no embedded store at {path}")
        self.path = path
        self.site = site
        self.gateway = gateway

    def readings(
        self, device: str, points: Sequence[str], start_ms: int, end_ms: int
    ) -> list[PollRow]:
        """See ReadingSource; bad readings come back as None."""
        if not points:
            return []
        marks = ",".join("?" * len(points))
        sql = (
            "SELECT r.ts_ms, s.point, r.value, r.quality FROM readings r "
            "JOIN series s ON s.id = r.series "
            f"WHERE s.site = ? AND s.device = ? AND s.point IN ({marks}) "
            "AND r.ts_ms >= ? AND r.ts_ms < ?"
        )
        args: list[object] = [self.site, device, *points, start_ms, end_ms]
        if self.gateway is not None:
            sql += " AND s.gateway = ?"
            args.append(self.gateway)
        sql += " ORDER BY r.ts_ms"
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            polls: list[PollRow] = []
            for ts, point, value, quality in db.execute(sql, args):
                if not polls or polls[-1][0] != ts:
                    polls.append((ts, {}))
                polls[-1][1][point] = float(value) if quality == 0 and value is not None else None
            return polls
        finally:
            db.close()


class VictoriaSource:
    """Readings from VictoriaMetrics (the `influx:` server), through its /api/v1/export.

    The ingest writes `{measurement}_value` and `{measurement}_quality` series labelled
    site, gateway, device, point (ingest_schema); a reading is used when its quality is 0
    (good). InfluxDB has no such export: with InfluxDB, report from the embedded store.
    """

    def __init__(
        self,
        url: str,
        *,
        site: str,
        measurement: str = "edge",
        token: str | None = None,
        timeout_s: float = 30.0,
        ca_file: Path | None = None,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.site = site
        self.measurement = measurement
        self.token = token
        self.timeout_s = timeout_s
        self.ca_file = ca_file  # as given: of_site resolves it against the site file
        # Built now: a CA file that cannot be used fails before any reading (ValueError).
        self._ssl = ssl_context(ca_file, verify=verify_tls)
        warn_unverified(url, verify=verify_tls, logger=logger, user="the report")

    @classmethod
    def of_site(cls, loaded: LoadedConfig) -> VictoriaSource:
        """The `influx:` server of a site config, with its token and TLS settings."""
        site = loaded.site
        if site.influx is None:
            raise ValueError(f"{loaded.path}: no influx: block")
        influx = site.influx.resolved(loaded.path.parent)
        return cls(
            influx.url,
            site=site.site,
            measurement=site.ingest.measurement,
            token=influx.token.get_secret_value() if influx.token else None,
            ca_file=influx.ca_file,
            verify_tls=influx.verify_tls,
        )

    def _export(self, selector: str, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        import urllib.error
        import urllib.parse
        import urllib.request

        import orjson

        query = urllib.parse.urlencode(
            {"match[]": selector, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}"}
        )
        request = urllib.request.Request(f"{self.url}/api/v1/export?{query}")
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self._ssl
            ) as answer:
                body: bytes = answer.read()
        except urllib.error.URLError as exc:
            problem = certificate_problem(exc.reason, self.ca_file)
            if problem is None:
                raise
            raise OSError(f"{self.url}: TLS certificate {problem}") from exc
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]

    def readings(
        self, device: str, points: Sequence[str], start_ms: int, end_ms: int
    ) -> list[PollRow]:
        """See ReadingSource; the export's end is inclusive, so the last ms is cut here."""
        if not points:
            return []
        names = "|".join(re.escape(p) for p in points)
        labels = f'site="{self.site}",device="{device}",point=~"{names}"'
        m = self.measurement
        values: dict[tuple[str, int], float] = {}
        quality: dict[tuple[str, int], float] = {}
        for series in self._export(
            f'{{__name__=~"{m}_value|{m}_quality",{labels}}}', start_ms, end_ms
        ):
            metric = series["metric"]
            assert isinstance(metric, dict)
            target = values if metric["__name__"] == f"{m}_value" else quality
            point = str(metric["point"])
            for ts, v in zip(series["timestamps"], series["values"], strict=True):  # type: ignore[call-overload]
                if start_ms <= ts < end_ms:
                    target[(point, int(ts))] = float(v)
        polls: dict[int, dict[str, float | None]] = {}
        for (point, ts), q in quality.items():
            v = values.get((point, ts))
            polls.setdefault(ts, {})[point] = v if q == 0 and v is not None else None
        return sorted(polls.items())

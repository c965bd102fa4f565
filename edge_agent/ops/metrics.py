"""Prometheus metrics of a running agent, served on `/metrics` by `edge-agent run --http`.

Most numbers already live in the agent as plain counters (`UnitStats` per device,
`OutboxStats`, `MqttStats`, the alarm stage's counters); `AgentCollector` reads them when
`/metrics` is scraped, so the hot path pays nothing for them. What no counter holds (how
long each read took, why each failed poll failed, how many bytes crossed the wire) is
observed by `MeteredDriver`, a thin wrapper `AgentMetrics.instrument` puts around each
unit's driver:

    run_line ─► MeteredDriver.read ─► driver.read          (one call per poll)
                   │ latency, start jitter (the sample the poller just recorded),
                   │ failed polls by reason, bad points by reason, wire bytes (from the plan)
                   ▼
              histograms, counters ──┐
    agent.units, outbox, forwarder,  ├─► registry ─► /metrics (text format 0.0.4)
    sink, alarm stage, platform       │
    uplink senders (AgentCollector) ──┘

Reason labels are cut at the first ':' ("cannot open line: [Errno 2] ..." becomes
"cannot open line") so a changing error text cannot grow the number of series.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from drivers.contract import PolledDriver, WireEstimate
from drivers.reading import DeviceUnreachable, PointSpec, Poll
from drivers.registry import PROTOCOLS, plugin
from edge_agent import __version__
from edge_agent.alarms.stage import AlarmStage
from edge_agent.pipeline.by_exception import ReportFilter
from edge_agent.runtime.poller import Unit, UnitStats
from edge_agent.uplink.platform import PlatformUplink

if TYPE_CHECKING:
    from edge_agent.ingest.service import Ingest
    from edge_agent.runtime.agent import Agent

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JITTER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REASON_MAX = 48


def reason_label(reason: str) -> str:
    """A bounded label for a failure reason: the text before the first ':'."""
    return reason.split(":", 1)[0].strip()[:REASON_MAX] or "unknown"


def wire_estimate(driver: PolledDriver) -> WireEstimate | None:
    """Bytes one poll of `driver` puts on the wire, where its protocol can tell."""
    if driver.protocol not in PROTOCOLS:  # a stand-in driver of a test or a benchmark
        return None
    return plugin(driver.protocol).wire_estimate(driver)


class MeteredDriver:
    """A unit's driver with each read timed and its outcome counted; otherwise the same."""

    def __init__(self, inner: PolledDriver, stats: UnitStats, metrics: AgentMetrics) -> None:
        self.inner = inner
        self.name = inner.name
        self.protocol = inner.protocol
        self.points: tuple[PointSpec, ...] = inner.points
        self._stats = stats
        self._metrics = metrics
        self._wire = wire_estimate(inner)
        # Children looked up once: a labels() call per poll would cost more than the read.
        name = self.name
        self._latency = metrics.latency.labels(name)
        self._jitter = metrics.jitter.labels(name)
        self._tx = metrics.wire_bytes.labels(name, "tx")
        self._rx = metrics.wire_bytes.labels(name, "rx")

    async def read(self) -> Poll:
        """Read through the inner driver and record what happened."""
        jitter = self._stats.jitter_s
        if jitter:
            # run_line records the start lateness of this poll just before it calls read().
            self._jitter.observe(max(0.0, jitter[-1]))
        wire = self._wire
        began = time.perf_counter()
        try:
            poll = await self.inner.read()
        except DeviceUnreachable as exc:
            self._latency.observe(time.perf_counter() - began)
            self._metrics.count(self._metrics.poll_errors, self.name, reason_label(exc.reason))
            if wire is not None and exc.reason == "timeout":
                self._tx.inc(wire.first_request_bytes)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            self._latency.observe(time.perf_counter() - began)
            self._metrics.count(self._metrics.poll_errors, self.name, "driver error")
            raise
        self._latency.observe(time.perf_counter() - began)
        if wire is not None:
            self._tx.inc(wire.request_bytes)
            self._rx.inc(wire.response_bytes)
        if poll.issues:
            counts: dict[tuple[str, str], int] = {}
            for quality, reason in poll.issues.values():
                key = (str(quality), reason_label(reason))
                counts[key] = counts.get(key, 0) + 1
            for (quality_label, reason), n in counts.items():
                self._metrics.count(
                    self._metrics.point_issues, self.name, quality_label, reason, n=n
                )
        return poll

    async def close(self) -> None:
        """Close the inner driver."""
        await self.inner.close()


class AgentMetrics:
    """The registry of one agent: event metrics plus the scrape-time collector."""

    def __init__(self, agent: Agent, *, uplink_down_for: Callable[[], float | None]) -> None:
        self.agent = agent
        # `_created` series double the counters' lines and nothing here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "edge_agent_poll_latency_seconds",
            "Duration of one poll (every request of the device's plan), failed polls included.",
            ["device"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jitter = Histogram(
            "edge_agent_poll_jitter_seconds",
            "How late a poll started against its fixed-phase tick.",
            ["device"],
            buckets=JITTER_BUCKETS,
            registry=r,
        )
        self.poll_errors = Counter(
            "edge_agent_poll_errors",
            "Polls the device did not answer, by reason (timeout, connection refused, ...).",
            ["device", "reason"],
            registry=r,
        )
        self.point_issues = Counter(
            "edge_agent_point_issues",
            "Points of answered polls that were not good, by quality and reason.",
            ["device", "quality", "reason"],
            registry=r,
        )
        self.wire_bytes = Counter(
            "edge_agent_wire_bytes",
            "Estimated bytes on the device line (Modbus framing included), from the read plan.",
            ["device", "direction"],
            registry=r,
        )
        r.register(AgentCollector(agent, uplink_down_for=uplink_down_for, clock=_loop_clock()))
        ProcessCollector(registry=r)
        # Label sets in use per device, so a device that leaves takes its series along.
        self._series: dict[str, set[tuple[Counter | Histogram, tuple[str, ...]]]] = {}
        self.instrument()

    def count(self, metric: Counter, device: str, *labels: str, n: int = 1) -> None:
        """Add n to a per-device counter whose other labels vary (reasons)."""
        key = (device, *labels)
        metric.labels(*key).inc(n)
        self._series.setdefault(device, set()).add((metric, key))

    def instrument(self, units: Sequence[Unit] | None = None) -> int:
        """Wrap the drivers of units not wrapped yet (all of the agent's by default).

        Idempotent; called at start, on every scrape, and by whoever replaces units (a
        config reload) so new devices are measured from their first poll. Returns how many
        drivers it wrapped. Series of devices that left the agent are removed.
        """
        units = self.agent.units if units is None else units
        wrapped = 0
        for unit in units:
            if not isinstance(unit.driver, MeteredDriver):
                unit.driver = MeteredDriver(unit.driver, unit.stats, self)
                name = unit.driver.name
                series = self._series.setdefault(name, set())
                series.update({(self.latency, (name,)), (self.jitter, (name,))})
                series.update({(self.wire_bytes, (name, "tx")), (self.wire_bytes, (name, "rx"))})
                wrapped += 1
        present = {u.driver.name for u in self.agent.units}
        for gone in set(self._series) - present:
            for metric, labels in self._series.pop(gone):
                with contextlib.suppress(KeyError):  # never observed
                    metric.remove(*labels)
        return wrapped

    def render(self) -> bytes:
        """The text exposition of every metric.

        Safe to call from a worker thread (the HTTP route does, so a large gateway's
        scrape does not hold up its pollers): it only reads the agent's state.
        """
        return generate_latest(self.registry)


class AgentCollector(Collector):
    """Reads the agent's own counters at scrape time (from any thread)."""

    def __init__(
        self,
        agent: Agent,
        *,
        uplink_down_for: Callable[[], float | None],
        clock: Callable[[], float],
    ) -> None:
        self.agent = agent
        self.uplink_down_for = uplink_down_for
        self.clock = clock  # the agent loop's clock, which Unit.down_since is on

    def collect(self) -> Iterable[Metric]:
        """Every family; see the README's metrics table."""
        yield from self._agent()
        yield from self._devices()
        yield from self._outbox()
        yield from self._mqtt()
        yield from self._alarms()
        yield from self._writes()
        yield from self._uplink()
        yield from self._platform_uplink()
        yield from self._stages()

    def _stages(self) -> Iterator[Metric]:
        """Failures of stages (observe or timers), each costing only its stage."""
        failures = CounterMetricFamily(
            "edge_agent_stage_failures",
            "Exceptions raised by a stage (alarms, energy, uplink, ...); the others went on.",
            labels=["stage"],
        )
        for stage in self.agent.stages:
            failures.add_metric([stage.name], self.agent.stage_failures.get(stage.name, 0))
        yield failures

    def _uplink(self) -> Iterator[Metric]:
        """Readings polled against published, and uplink messages and bytes, per device."""
        agent = self.agent
        thinned = agent.uplink_filter
        counts = thinned.counts if isinstance(thinned, ReportFilter) else {}
        families = {
            "polled": CounterMetricFamily(
                "edge_agent_uplink_readings_polled", "Readings polled.", labels=["device"]
            ),
            "published": CounterMetricFamily(
                "edge_agent_uplink_readings_published",
                "Readings sent up in data messages (report by exception thins them).",
                labels=["device"],
            ),
            "messages": CounterMetricFamily(
                "edge_agent_uplink_messages", "Data messages encoded.", labels=["device"]
            ),
            "bytes": CounterMetricFamily(
                "edge_agent_uplink_bytes", "Data message payload bytes.", labels=["device"]
            ),
        }
        for unit in agent.units:
            name = unit.driver.name
            encoder = agent.encoders.get(name)
            if encoder is None:
                continue
            c = counts.get(name)
            readings = unit.stats.good_polls * len(unit.driver.points)
            messages, sent = encoder.messages, encoder.bytes
            if agent.batcher is not None and agent.batcher.batches(name):
                batched, batched_bytes = agent.batcher.sent(name)
                messages, sent = messages + batched, sent + batched_bytes
            families["polled"].add_metric([name], c.readings_polled if c else readings)
            families["published"].add_metric([name], c.readings_published if c else readings)
            families["messages"].add_metric([name], messages)
            families["bytes"].add_metric([name], sent)
        yield from families.values()

    def _agent(self) -> Iterator[Metric]:
        site = self.agent.loaded.site
        info = GaugeMetricFamily(
            "edge_agent_info",
            "Version and identity of this agent.",
            labels=["version", "site", "gateway"],
        )
        info.add_metric([__version__, site.site, site.gateway], 1)
        yield info

    def _devices(self) -> Iterator[Metric]:
        units = self.agent.units
        now = self.clock()
        families = {
            "polls": CounterMetricFamily("edge_agent_polls", "Polls attempted.", labels=["device"]),
            "answered": CounterMetricFamily(
                "edge_agent_polls_answered", "Polls the device answered.", labels=["device"]
            ),
            "failures": CounterMetricFamily(
                "edge_agent_polls_failed", "Polls with no answer.", labels=["device"]
            ),
            "overruns": CounterMetricFamily(
                "edge_agent_poll_overruns",
                "Ticks skipped because a poll ran into them.",
                labels=["device"],
            ),
            "backoff": CounterMetricFamily(
                "edge_agent_poll_backoff_skips",
                "Ticks skipped while backing off a device that does not answer.",
                labels=["device"],
            ),
        }
        up = GaugeMetricFamily(
            "edge_agent_device_up",
            "1 when the device answered its last poll, 0 when not (absent before the first).",
            labels=["device"],
        )
        down = GaugeMetricFamily(
            "edge_agent_device_down_seconds",
            "How long the device has not answered; 0 while it answers.",
            labels=["device"],
        )
        fault = GaugeMetricFamily(
            "edge_agent_device_fault",
            "1 while the device answers with every point bad (status `fault`), else 0.",
            labels=["device"],
        )
        bad_answers = CounterMetricFamily(
            "edge_agent_bad_answers",
            "Modbus answers refused: malformed, incomplete, or not matching the request.",
            labels=["device"],
        )
        for unit in units:
            name = unit.driver.name
            s = unit.stats
            driver = unit.driver.inner if isinstance(unit.driver, MeteredDriver) else unit.driver
            refused = (
                plugin(driver.protocol).bad_answers(driver)
                if driver.protocol in PROTOCOLS
                else None
            )
            if refused is not None:
                bad_answers.add_metric([name], refused)
            families["polls"].add_metric([name], s.polls)
            families["answered"].add_metric([name], s.good_polls)
            families["failures"].add_metric([name], s.failures)
            families["overruns"].add_metric([name], s.overruns)
            families["backoff"].add_metric([name], s.skipped_backoff)
            if s.up is not None:
                up.add_metric([name], 1 if s.up else 0)
                gone = 0.0 if s.up else max(0.0, now - unit.down_since)
                down.add_metric([name], gone)
                fault.add_metric([name], 1 if s.up and s.fault is not None else 0)
        yield from families.values()
        yield up
        yield down
        yield fault
        yield bad_answers

    def _outbox(self) -> Iterator[Metric]:
        box = self.agent.outbox.stats
        forwarder = self.agent.forwarder
        gauges = [
            ("edge_agent_outbox_messages", "Messages stored, not yet acknowledged.", box.messages),
            ("edge_agent_outbox_readings", "Readings in the stored messages.", box.readings),
            ("edge_agent_outbox_bytes", "Payload bytes stored.", box.bytes),
            (
                "edge_agent_outbox_inflight",
                "Messages sent, not yet acknowledged.",
                forwarder.inflight,
            ),
        ]
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)
        age = box.oldest_age_s()
        yield GaugeMetricFamily(
            "edge_agent_outbox_oldest_age_seconds",
            "Age of the oldest stored message; 0 when the outbox is empty.",
            value=age or 0.0,
        )
        counters = [
            ("edge_agent_outbox_appended", "Messages accepted into the outbox.", box.appended),
            ("edge_agent_outbox_acked", "Messages acknowledged and deleted.", box.deleted),
            (
                "edge_agent_outbox_dropped",
                "Messages removed by a limit or a full disk.",
                box.dropped,
            ),
            (
                "edge_agent_outbox_dropped_readings",
                "Readings in dropped messages.",
                box.dropped_readings,
            ),
            ("edge_agent_outbox_expired", "Messages removed for age.", box.expired),
            ("edge_agent_outbox_thinned", "Messages removed by thinning.", box.thinned),
            ("edge_agent_outbox_disk_full", "Messages that could not be stored.", box.disk_full),
            (
                "edge_agent_outbox_disk_full_readings",
                "Readings in messages that could not be stored.",
                box.disk_full_readings,
            ),
            (
                "edge_agent_outbox_replayed",
                "Stored messages replayed after an outage.",
                forwarder.replayed,
            ),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)

    def _mqtt(self) -> Iterator[Metric]:
        sink = self.agent.sink
        s = sink.stats
        yield GaugeMetricFamily(
            "edge_agent_mqtt_connected",
            "1 while the broker connection is up.",
            value=1 if sink.connected else 0,
        )
        yield GaugeMetricFamily(
            "edge_agent_mqtt_down_seconds",
            "How long the broker connection has been down; 0 while it is up.",
            value=self.uplink_down_for() or 0.0,
        )
        yield GaugeMetricFamily(
            "edge_agent_mqtt_pending", "QoS>0 messages queued or in flight.", value=s.pending
        )
        counters = [
            ("edge_agent_mqtt_published", "Messages accepted by the sink.", s.published),
            ("edge_agent_mqtt_acked", "Messages acknowledged by the broker.", s.acked),
            ("edge_agent_mqtt_refused", "Messages refused: too many pending.", s.refused),
            ("edge_agent_mqtt_dropped", "QoS 0 messages dropped while disconnected.", s.dropped),
            ("edge_agent_mqtt_rejected", "Messages the broker refused (MQTT 5).", s.rejected),
            ("edge_agent_mqtt_connects", "Connections the broker accepted.", s.connects),
            ("edge_agent_mqtt_reconnects", "Connections after the first.", s.reconnects),
            ("edge_agent_mqtt_failed_connects", "Connect attempts that failed.", s.failed_connects),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)

    def _writes(self) -> Iterator[Metric]:
        """Write requests (edge_agent/commands) and what became of them."""
        c = self.agent.commands.counters
        yield CounterMetricFamily(
            "edge_agent_write_requests", "Write requests received.", value=c.requests
        )
        results = CounterMetricFamily(
            "edge_agent_write_results",
            "Answers to write requests: done, failed, or rejected with its code.",
            labels=["result", "code"],
        )
        for (result, code), n in sorted(c.results.items()):
            results.add_metric([result, code], n)
        yield results
        read_backs = CounterMetricFamily(
            "edge_agent_write_read_backs",
            "Read-backs of written points: at_once (a read after the write) or poll "
            "(the device's next poll, on a busy shared line).",
            labels=["source"],
        )
        for source in ("at_once", "poll"):
            read_backs.add_metric([source], c.read_backs[source])
        yield read_backs

    def _alarms(self) -> Iterator[Metric]:
        stage = alarm_stage(self.agent)
        if stage is None:
            return  # no device has an alarm rule
        c = stage.counters
        doc = stage.active_doc()
        active = GaugeMetricFamily(
            "edge_agent_alarms_active",
            "Active alarms (not shelved or out of service), by priority (1 highest).",
            labels=["priority"],
        )
        for priority, n in sorted(doc["active_by_priority"].items()):
            active.add_metric([priority], n)
        yield active
        unacked = sum(1 for a in doc["alarms"] if not a["acked"])
        yield GaugeMetricFamily(
            "edge_agent_alarms_unacked", "Alarms waiting for an acknowledgement.", value=unacked
        )
        yield GaugeMetricFamily(
            "edge_agent_alarm_flood", "1 during an alarm flood.", value=1 if c.flood else 0
        )
        yield GaugeMetricFamily(
            "edge_agent_alarms_chattering", "Alarms chattering now.", value=len(c.chattering)
        )
        counters = [
            ("edge_agent_alarms_raised", "Alarm activations annunciated.", c.raised),
            ("edge_agent_alarms_cleared", "Alarms that returned to normal.", c.cleared),
            ("edge_agent_alarms_acked", "Alarm acknowledgements.", c.acked),
            ("edge_agent_alarm_commands", "Operator commands received.", c.commands),
            ("edge_agent_alarm_commands_refused", "Commands answered with an error.", c.refused),
            ("edge_agent_alarm_floods", "Alarm flood episodes.", c.floods),
            ("edge_agent_alarm_chatter_episodes", "Chattering episodes.", c.chatter_episodes),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        refusals = CounterMetricFamily(
            "edge_agent_alarm_command_refusals",
            "Commands answered with an error, by reason (alarm_commands.REFUSAL_REASONS).",
            labels=["reason"],
        )
        for reason, n in sorted(stage.refusals.counts.items()):
            refusals.add_metric([reason], n)
        yield refusals
        yield CounterMetricFamily(
            "edge_agent_alarm_command_replies_dropped",
            "Replies to refused commands not sent because the MQTT queue was backed up.",
            value=stage.replies_dropped,
        )

    def _platform_uplink(self) -> Iterator[Metric]:
        """Per endpoint of the 能耗在线监测 uplink: backlog, requests, acknowledgements."""
        uplink = platform_uplink(self.agent)
        if uplink is None:
            return  # no `uplink:` block
        now = self.clock()
        label = ["endpoint"]
        depth = GaugeMetricFamily(
            "edge_agent_platform_uplink_queue_depth",
            "Records queued for the endpoint, not yet acknowledged.",
            labels=label,
        )
        requests = CounterMetricFamily(
            "edge_agent_platform_uplink_requests",
            "Requests posted to the endpoint, acknowledged or not.",
            labels=label,
        )
        acked = CounterMetricFamily(
            "edge_agent_platform_uplink_acked_records",
            "Records the endpoint acknowledged.",
            labels=label,
        )
        failures = CounterMetricFamily(
            "edge_agent_platform_uplink_failures",
            "Requests not acknowledged: refused, HTTP error, negative answer, timeout.",
            labels=label,
        )
        failing = GaugeMetricFamily(
            "edge_agent_platform_uplink_failing",
            "1 while the endpoint's last request was not acknowledged.",
            labels=label,
        )
        age = GaugeMetricFamily(
            "edge_agent_platform_uplink_last_ack_age_seconds",
            "Seconds since the endpoint last acknowledged; before its first acknowledgement, "
            "since it started failing (absent before either).",
            labels=label,
        )
        for sender in uplink.senders:
            name = sender.endpoint.name
            s = sender.stats
            depth.add_metric([name], uplink.store.depth(name))
            requests.add_metric([name], s.sent_requests)
            acked.add_metric([name], s.acked_records)
            failures.add_metric([name], s.failures)
            failing.add_metric([name], 1 if s.failing else 0)
            since = s.last_ack_at if s.last_ack_at is not None else s.failing_since
            if since is not None:
                age.add_metric([name], max(0.0, now - since))
        yield from (depth, requests, acked, failures, failing, age)


def alarm_stage(agent: Agent) -> AlarmStage | None:
    """The agent's alarm stage, when any device has an alarm rule."""
    return next((s for s in agent.stages if isinstance(s, AlarmStage)), None)


def platform_uplink(agent: Agent) -> PlatformUplink | None:
    """The agent's 能耗在线监测 uplink stage, when the site has an `uplink:` block."""
    return next((s for s in agent.stages if isinstance(s, PlatformUplink)), None)


def _loop_clock() -> Callable[[], float]:
    """The running loop's clock (callable from other threads), or the monotonic clock."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return time.monotonic


class IngestCollector(Collector):
    """The counters of one ingest worker (`edge-agent ingest --http`), read at scrape time."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterable[Metric]:
        """Every family; see the README's Ingest section."""
        s = self.ingest.stats
        counters = [
            ("edge_ingest_received", "Deliveries, redeliveries included.", s.received),
            ("edge_ingest_stored_messages", "Data messages written.", s.stored_messages),
            ("edge_ingest_stored_points", "Readings and transitions written.", s.stored_points),
            ("edge_ingest_deadlettered", "Dead letters the broker acknowledged.", s.deadlettered),
            (
                "edge_ingest_unconfigured_points",
                "Points given no series: not configured nor allowed (ingest.allow).",
                s.unconfigured_points,
            ),
            ("edge_ingest_write_failures", "Store writes retried.", s.write_failures),
            ("edge_ingest_stored_audits", "Write audit messages written.", s.stored_audits),
            (
                "edge_ingest_audit_who_folded",
                "Write audits stored with who=_other (over the distinct `who` tags).",
                self.ingest.who_tags.folded,
            ),
            (
                "edge_ingest_without_metadata",
                "Compact messages read with the device's latest metadata, or dead-lettered "
                "as no_metadata, after ingest.meta_wait_s without their own.",
                s.without_meta,
            ),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        rejected = CounterMetricFamily(
            "edge_ingest_rejected",
            "Messages dead-lettered, by kind (ingest_schema.REJECT_KINDS).",
            labels=["kind"],
        )
        for kind, n in sorted(self.ingest.rejects.counts.items()):
            rejected.add_metric([kind], n)
        yield rejected
        yield GaugeMetricFamily(
            "edge_ingest_unacked", "Messages received, not acknowledged yet.", value=s.unacked
        )
        yield GaugeMetricFamily(
            "edge_ingest_waiting_for_metadata",
            "Compact messages held until their device's metadata arrives.",
            value=s.waiting_for_meta,
        )


def ingest_registry(ingest: Ingest) -> CollectorRegistry:
    """A registry of one ingest worker's counters and its process."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingest))
    ProcessCollector(registry=registry)
    return registry

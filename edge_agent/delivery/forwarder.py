"""Moves messages from the outbox to the MQTT sink: live first, the backlog behind it.

Rows are split by id at `live_from`, set when the broker (re)connects:

    ids:  [ backlog: stored before the connection came up ][ live: committed since ]
            replayed oldest first, historical=true,          sent as soon as committed
            rate-limited, never more than its share
            of the in-flight window

At most `window` messages are handed to the sink unacknowledged; a quarter of it is kept
for live data, so a long catch-up after an outage never delays what is read now. Messages
in flight when the connection drops are re-sent by paho after the reconnect (it keeps
them, marked DUP), so they are skipped by the replay. Delivery is at least once: a crash
after the broker got a message but before its PUBACK arrived sends it again; `seq` lets
a subscriber drop the duplicate.

When to commit: while the forwarder is idle (connected, and every live message of the
last commit acknowledged) the messages accepted in one loop turn are committed in one
transaction at its end and published right away, so at 1 s polls a message reaches the
broker within a millisecond or two, and the devices of one poll slot
(runtime/poll_slots.py) that answered together share a commit and a write to the broker.
While the last commit's messages are still in flight (many devices, saturation) or the
broker is away, commits are grouped: staged rows wait for those acks
or for `flush_interval_s`, whichever comes first, so the commit rate follows the broker's
round trip instead of the poll rate (one batch outstanding, as Nagle's algorithm). The
deletions of acknowledged rows never ask for a commit of their own while rows keep
coming: they ride in the next insert's transaction, or go alone after DELETE_DELAY_S
when no insert came (the outbox's depth counts an acknowledged message gone at once). No
timer runs while nothing is staged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from edge_agent.delivery.outbox import Outbox, Row
from edge_agent.mqtt.sink import MqttSink

log = logging.getLogger(__name__)

DELETE_DELAY_S = 1.0  # the longest an acknowledged row waits for an insert to ride with
LIVE_LIMIT = 10_000  # committed-but-unsent live rows held in memory before they turn backlog


class Forwarder:
    """The pump between the outbox and the sink; runs on the agent's loop."""

    def __init__(
        self,
        outbox: Outbox,
        sink: MqttSink,
        *,
        window: int,
        flush_interval_s: float,
        replay_max_per_s: float = 0.0,
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.window = max(2, window)
        self.live_reserve = max(1, self.window // 4)
        self.flush_interval_s = flush_interval_s
        # A deletion alone waits longer than an insert: a crash in between only sends the
        # acknowledged message again (at least once, `seq` tells), nothing is lost.
        self._delete_delay_s = max(flush_interval_s, DELETE_DELAY_S)
        self.replay_max_per_s = replay_max_per_s
        self._on_acked = on_acked  # observers (metrics, benchmarks) of each acknowledged seq
        self.replayed = 0
        self.live_sent = 0
        self._live: deque[Row] = deque()
        self._inflight: set[int] = set()
        self._last_batch: set[int] = set()  # live rows of the last commit not acked yet
        # Told of the connection by on_connection, not by sink.connected: the sink is up
        # from its CONNACK on, a loop turn or more before on_connection splits backlog from
        # live; a row sent live in between would dodge the replay's historical flag.
        self._up = False
        self._live_from = 1
        self._cursor = 0
        self._backlog_left = True
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._commit_handle: asyncio.Handle | None = None
        self._delete_handle: asyncio.TimerHandle | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Bind to the running loop; everything stored so far is backlog."""
        self._loop = asyncio.get_running_loop()
        self._live_from = self.outbox.reserve_id()
        self._cursor = 0
        self._backlog_left = self.outbox.stats.messages > 0

    def close(self) -> None:
        """Store what is staged, stop the timers and close the outbox; idempotent."""
        handles = (self._flush_handle, self._commit_handle, self._delete_handle, self._pump_handle)
        for handle in handles:
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._commit_handle = self._delete_handle = self._pump_handle = None
        self._loop = None  # no more timers from late acks
        self.outbox.close()

    # -- from the agent ----------------------------------------------------------------------

    def next_seq(self) -> int:
        """The sequence number the next submitted message must carry."""
        return self.outbox.reserve_id()

    def submit(self, seq: int, topic: str, payload: bytes, *, device: str, readings: int) -> None:
        """Accept a message; it is stored at the next flush, then sent."""
        self.outbox.append(seq, topic, payload, device=device, readings=readings)
        self._commit_soon()

    def hold(self, device: str, topic: str, part: bytes, *, readings: int, ts_ms: int) -> int:
        """Keep a poll that waits in a batch (Outbox.hold), committed at the next flush."""
        hold_id = self.outbox.hold(device, topic, part, readings=readings, ts_ms=ts_ms)
        self._commit_soon()
        return hold_id

    def release(self, hold_ids: list[int]) -> None:
        """The held polls went up in the message submitted just before (Outbox.release)."""
        self.outbox.release(hold_ids)

    def _commit_soon(self) -> None:
        """Idle: commit at the end of this loop turn (every message of the turn in one
        transaction). Busy or disconnected: group with the next flush."""
        loop = self._loop
        if loop is None:
            return
        if self._last_batch or not self._sending():
            self._flush_later()
        elif self._commit_handle is None:
            self._commit_handle = loop.call_soon(self.flush)

    def _flush_later(self) -> None:
        # Staged writes are committed together, at most one flush interval later.
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self.flush_interval_s, self.flush)

    def flush(self) -> None:
        """Commit what is staged (and acked deletions), then send what may go."""
        for handle in (self._flush_handle, self._commit_handle, self._delete_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._commit_handle = self._delete_handle = None
        rows = self.outbox.flush()
        if rows and self._sending():
            self._last_batch = {row.id for row in rows}
            self._live.extend(rows)
            if len(self._live) > LIVE_LIMIT:
                # The broker cannot keep up: what waits in memory becomes backlog.
                self._live.clear()
                self._live_from = self.outbox.reserve_id()
                self._backlog_left = True
        self._pump()

    # -- from the sink -----------------------------------------------------------------------

    def _sending(self) -> bool:
        return self._up and self.sink.connected

    def on_connection(self, up: bool) -> None:
        """The sink's connection came up or went down."""
        if not up:
            self._up = False
            return
        # What was accepted while down is backlog, also what waits for its commit now.
        self.flush()
        self._up = True
        # Everything stored and not in flight now is backlog; newer rows are live.
        waiting = self.outbox.stats.messages - len(self._inflight)
        if waiting > 0:
            age = self.outbox.stats.oldest_age_s() or 0.0
            log.info("outbox: replaying %d stored messages (oldest %.0f s)", waiting, age)
        self._live.clear()
        self._last_batch.clear()  # what is left of it is backlog now
        self._live_from = self.outbox.first_unflushed_id()
        self._cursor = 0
        self._backlog_left = True
        self._schedule_pump()

    def _on_ack(self, msg_id: int, readings: int | None = None, size: int | None = None) -> None:
        self._inflight.discard(msg_id)
        self._last_batch.discard(msg_id)
        if self._loop is None:
            return  # closed: the row stays and is sent again after a restart
        self.outbox.ack(msg_id, readings=readings, size=size)
        if self._on_acked is not None:
            self._on_acked(msg_id)
        if not self._last_batch and self.outbox.staged:
            # Rows waited for the last commit's acks: commit them (and this deletion) now.
            self._commit_soon()
        elif self._delete_handle is None and self._loop is not None:
            # The deletion rides in the next insert's transaction, or goes on its own
            # when no insert came for a while (the depth counts it gone already).
            self._delete_handle = self._loop.call_later(self._delete_delay_s, self.flush)
        if self._live or self._backlog_left:
            self._schedule_pump()

    # -- pumping -----------------------------------------------------------------------------

    def _schedule_pump(self) -> None:
        if self._pump_handle is None and self._loop is not None:
            self._pump_handle = self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_handle = None
        if not self._sending():
            return
        with self.sink.corked():  # what this pump sends goes out in one write, now
            self._pump_window()

    def _pump_window(self) -> None:
        free = self.window - len(self._inflight)
        live = self._live
        while live and free > 0:
            self._send(live.popleft(), historical=False)
            self.live_sent += 1
            free -= 1
        if not self._backlog_left:
            return
        share = free - (self.live_reserve if not live else 0)
        share = min(share, self.window - self.live_reserve)
        share = min(share, self._replay_budget())
        if share <= 0:
            return
        rows = self.outbox.rows_after(
            self._cursor, before_id=self._live_from, limit=share + len(self._inflight)
        )
        sent = 0
        for row in rows:
            self._cursor = row.id
            if row.id in self._inflight or self.outbox.is_acked(row.id):
                continue  # paho re-sends it, or it was acked and waits for its deletion
            self._send(row, historical=True)
            sent += 1
            if sent >= share:
                break
        else:
            if len(rows) < share + len(self._inflight):
                self._backlog_left = False
                if self.replayed + sent:
                    log.info("outbox: backlog replayed (%d messages so far)", self.replayed + sent)
        self.replayed += sent
        self._tokens -= sent

    def _replay_budget(self) -> int:
        if not self.replay_max_per_s:
            return self.window
        now = time.monotonic()
        rate = self.replay_max_per_s
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1 and self._loop is not None:
            self._loop.call_later((1 - self._tokens) / rate, self._schedule_pump)
        return int(self._tokens)

    def _send(self, row: Row, *, historical: bool) -> None:
        payload = row.payload
        if historical:
            # The top-level key comes before "points" in every message we encode, so the
            # first match is the flag itself.
            payload = payload.replace(b'"historical":false', b'"historical":true', 1)
        self._inflight.add(row.id)
        self.sink.publish(
            row.topic,
            payload,
            on_ack=partial(self._on_ack, row.id, row.readings, len(row.payload)),
        )

    @property
    def inflight(self) -> int:
        """Messages handed to the sink and not yet acknowledged."""
        return len(self._inflight)

    @property
    def backlog_pending(self) -> bool:
        """Whether stored messages from before the connection still wait to be replayed."""
        return self._backlog_left

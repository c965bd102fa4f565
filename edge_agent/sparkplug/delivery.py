"""Sparkplug messages from the node's outbox to the broker: the Forwarder, sent as Sparkplug.

The outbox, its live/backlog split, the in-flight window and the replay budget are the
JSON path's (edge_agent/delivery/forwarder.py); what differs is how a row goes out:

- only while the node's session is `ready` (connected, births sent, primary host online);
- at QoS 0, as the specification requires of NDATA/DDATA/DBIRTH/DDEATH, with the send time
  and the session's seq stamped on the stored body when it is sent (payload.stamp);
- a row sent from the backlog carries is_historical on every metric; a stored DBIRTH goes
  as the DDATA of its values, a stored DDEATH not at all (the births of the session that
  replays them say what is alive now);
- QoS 0 has no PUBACK, so a row is acknowledged (deleted) once a broker round trip sent
  after it has come back (MqttSink.fence): the broker has then handled the message. A
  connection that drops first leaves the rows stored; the next session replays them.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Protocol

from edge_agent.delivery.forwarder import Forwarder
from edge_agent.delivery.outbox import Outbox, Row
from edge_agent.mqtt.sink import MqttSink
from edge_agent.sparkplug.payload import historical, stamp
from edge_agent.sparkplug.topics import message_type


class Session(Protocol):
    """What the forwarder asks of the edge node."""

    @property
    def ready(self) -> bool:
        """Births are out and data may flow."""

    def next_seq(self) -> int:
        """The seq of the next message of the node."""


class SparkplugForwarder(Forwarder):
    """The outbox pump of the edge node (overrides Forwarder's send, pump and connection)."""

    def __init__(
        self,
        outbox: Outbox,
        sink: MqttSink,
        *,
        session: Session,
        window: int,
        flush_interval_s: float,
        replay_max_per_s: float = 0.0,
    ) -> None:
        super().__init__(
            outbox,
            sink,
            window=window,
            flush_interval_s=flush_interval_s,
            replay_max_per_s=replay_max_per_s,
        )
        self._session = session
        self._unfenced: list[int] = []
        self.fences = 0  # round trips that acknowledged rows

    def on_connection(self, up: bool) -> None:
        """The session became ready (births sent) or stopped being so."""
        if up:
            super().on_connection(True)
            return
        # QoS 0 rows in flight are not re-sent by paho: they go with the next replay.
        self._inflight.clear()
        self._unfenced.clear()

    def _pump(self) -> None:
        if not self._session.ready:
            self._pump_handle = None
            return
        super()._pump()
        if self._unfenced:
            rows, self._unfenced = self._unfenced, []
            self.sink.fence(partial(self._fenced, rows))

    def _fenced(self, rows: list[int]) -> None:
        self.fences += 1
        for row_id in rows:
            self._on_ack(row_id)

    def _send(self, row: Row, *, historical: bool) -> None:
        topic = row.topic
        body = row.payload
        if historical:
            kind = message_type(topic)
            if kind == "DDEATH":
                self._on_ack(row.id)  # the session's own births tell what is dead now
                return
            if kind == "DBIRTH":
                topic = topic.replace("/DBIRTH/", "/DDATA/", 1)
            body = _historical(body)
        self._inflight.add(row.id)
        payload = stamp(body, ts_ms=time.time_ns() // 1_000_000, seq=self._session.next_seq())
        self.sink.publish(topic, payload, qos=0)
        self._unfenced.append(row.id)


def _historical(body: bytes) -> bytes:
    return historical(body) if body else body

"""Batching by size and time, retries and the translation of store answers.

Real Mosquitto; the store is the real embedded one, wrapped where a test needs a store that
refuses writes for a while (a fake of the failure shape, not of a library).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_agent.ingest.embedded_store import EmbeddedStore, count_readings
from edge_agent.ingest.influx import _translated
from edge_agent.ingest.schema import DataMessage
from edge_agent.ingest.service import Ingest, store_path
from edge_agent.ingest.store import StoreBatch, StoreRejected, StoreUnavailable
from tests.fixtures.mosquitto import Mosquitto
from tests.ingest_support import make_messages, publish, running, unique_site, until, write_site

pytestmark = pytest.mark.timeout(60)


async def test_a_full_batch_goes_without_waiting_for_its_flush_time(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    # 6 points per message: a batch is full at its second message; the timer is 30 s away.
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{batch_size: 12, flush_interval_s: 30}",
    )
    sizes: list[int] = []

    def record(batch: Sequence[DataMessage]) -> None:
        sizes.append(len(batch))

    ingest = Ingest(loaded, worker="size", on_written=record)
    began = time.monotonic()
    async with running(ingest):
        await publish(mosquitto.url, make_messages(unique_prefix, site, seqs=range(1, 11)))
        await until(lambda: ingest.stats.stored_messages == 10, "10 messages in full batches")
    assert time.monotonic() - began < 15
    assert sizes == [2] * 5


async def test_a_lone_message_goes_after_the_flush_interval(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{batch_size: 100000, flush_interval_s: 0.3}",
    )
    ingest = Ingest(loaded, worker="time")
    async with running(ingest):
        published = time.monotonic()  # the batch cannot start before this
        await publish(mosquitto.url, make_messages(unique_prefix, site, seqs=[1]))
        await until(lambda: ingest.stats.stored_messages == 1, "the timed flush")
        waited = time.monotonic() - published
    assert 0.3 <= waited < 5


class RefusingStore:
    """The embedded store behind `failures` answers of HTTP 503 with a Retry-After."""

    def __init__(self, inner: EmbeddedStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    @property
    def description(self) -> str:
        return "refusing " + self.inner.description

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, batch: StoreBatch) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreUnavailable("HTTP 503: busy", retry_after_s=0.05)
        await self.inner.write(batch)

    async def close(self) -> None:
        await self.inner.close()


async def test_unavailable_answers_are_retried_and_nothing_is_acked_before(
    tmp_path: Path, mosquitto: Mosquitto, unique_prefix: str
) -> None:
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=mosquitto.url,
        prefix=unique_prefix,
        site=site,
        ingest="{backoff_max_s: 0.2, flush_interval_s: 0.05, write_concurrency: 1}",
    )
    store = RefusingStore(EmbeddedStore(store_path(loaded)), failures=3)
    ingest = Ingest(loaded, worker="retry", store=store)
    async with running(ingest):
        await publish(mosquitto.url, make_messages(unique_prefix, site, seqs=range(1, 6)))
        await until(lambda: store.attempts >= 2, "a second attempt")
        assert ingest.client.stats.acked == 0
        assert ingest.stats.store_up is False
        await until(lambda: ingest.client.stats.acked == 5, "all acknowledged after retries")
    assert ingest.stats.write_failures == 3
    assert ingest.stats.store_up is True
    assert count_readings(store_path(loaded)) == 5 * 6


class Answer:
    """An HTTP answer as influxdb-client's exceptions read it."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = "reason"
        self.data = body
        self._headers = headers

    def getheaders(self) -> dict[str, str]:
        return self._headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name, default)


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (503, {}, StoreUnavailable, None),
        (500, {"Retry-After": "3"}, StoreUnavailable, 3.0),
        (429, {"Retry-After": "7"}, StoreUnavailable, 7.0),
        (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, StoreUnavailable, None),
        (401, {}, StoreRejected, None),
        (400, {}, StoreRejected, None),
        (422, {}, StoreRejected, None),
        (413, {}, StoreRejected, None),
    ],
)
def test_http_answers_map_to_retry_or_stop(
    status: int, headers: dict[str, str], kind: type[Exception], retry_after: float | None
) -> None:
    from influxdb_client.rest import ApiException

    error = _translated(
        ApiException(http_resp=Answer(status, b'{"message": "why"}', headers))  # type: ignore[no-untyped-call]
    )
    assert type(error) is kind
    assert str(error) == f"HTTP {status}: why"
    if isinstance(error, StoreUnavailable):
        assert error.retry_after_s == retry_after

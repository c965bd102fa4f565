"""The ingest's session across a Mosquitto restart (persistence on, SIGTERM: the broker saves).

What gateways publish while the worker is away is queued in its session, and a restart of
the broker must not lose it: not what was queued before the restart, nor what comes up
after it and before the worker is back. Mosquitto 2.0.11 writes a plain subscription to its
persistence file and restores it with the session; it does not write a shared one
(`$share/...`), so after a restart it drops, unqueued, what arrives before a worker of the
group subscribes again, although it acknowledged it to the publisher. The default
(`shared: false`) is lossless; the shared case pins the limitation README documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.ingest.embedded_store import read_points
from edge_agent.ingest.service import Ingest, store_path
from tests.fixtures.mosquitto import Mosquitto
from tests.ingest_support import make_messages, publish, running, unique_site, until, write_site

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[2]


def _stored_seqs(path: Path, ts_to_seq: dict[int, int]) -> list[int]:
    rows = read_points(path, device="meter-1", point="voltage_a")
    return sorted(ts_to_seq[r.ts_ms] for r in rows)


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared"])
async def test_what_goes_up_while_the_worker_and_the_broker_are_away_reaches_the_store(
    shared: bool, tmp_path: Path, mosquitto_fresh: Mosquitto, unique_prefix: str
) -> None:
    broker = mosquitto_fresh
    site = unique_site()
    loaded = write_site(
        tmp_path / "site.yaml",
        broker_url=broker.url,
        prefix=unique_prefix,
        site=site,
        ingest=f"{{flush_interval_s: 0.05, shared: {str(shared).lower()}}}",
    )
    messages = make_messages(unique_prefix, site, seqs=range(1, 41))
    ts_to_seq = {m.ts_ms: m.seq for m in messages}
    path = store_path(loaded)

    first = Ingest(loaded, worker="restart")
    async with running(first):
        await publish(broker.url, messages[:10])
        await until(lambda: first.client.stats.acked == 10, "1-10 stored and acknowledged")
    await publish(broker.url, messages[10:20])  # queued in the worker's session
    broker.restart()
    await publish(broker.url, messages[20:30])  # the broker restored the session; no worker
    back = Ingest(loaded, worker="restart")
    async with running(back):
        assert back.client.stats.sessions_resumed == 1
        await publish(broker.url, messages[30:])
        expected = [*range(11, 21), *([] if shared else range(21, 31)), *range(31, 41)]
        await until(
            lambda: back.client.stats.acked == len(expected) and back.stats.unacked == 0,
            f"{len(expected)} messages acknowledged",
        )
        assert back.stats.received == len(expected)  # nothing else comes
    if shared:
        # Mosquitto 2.0.11: the shared subscription was not in the persistence file, so
        # 21-30 matched no subscription (acknowledged to the publisher all the same).
        assert _stored_seqs(path, ts_to_seq) == [*range(1, 21), *range(31, 41)]
    else:
        assert _stored_seqs(path, ts_to_seq) == list(range(1, 41))


async def test_a_worker_that_stops_sharing_gets_each_message_once(
    tmp_path: Path, mosquitto_fresh: Mosquitto, unique_prefix: str
) -> None:
    """Its resumed session still holds the shared subscription: unsubscribed, or Mosquitto
    sends every message once per matching subscription."""
    broker = mosquitto_fresh
    site = unique_site()
    messages = make_messages(unique_prefix, site, seqs=range(1, 21))
    for shared, batch in ((True, messages[:10]), (False, messages[10:])):
        loaded = write_site(
            tmp_path / "site.yaml",
            broker_url=broker.url,
            prefix=unique_prefix,
            site=site,
            ingest=f"{{flush_interval_s: 0.05, shared: {str(shared).lower()}}}",
        )
        ingest = Ingest(loaded, worker="switch")
        async with running(ingest):
            assert ingest.client.topic_filters[0].startswith("$share/") is shared
            await publish(broker.url, batch)
            await until(lambda i=ingest: i.client.stats.acked >= 10, "10 acknowledged")
            # The sentinel: after it, a second copy of any of the 10 would have come.
            await publish(broker.url, make_messages(unique_prefix, site, seqs=[99]))
            await until(lambda i=ingest: i.stats.unacked == 0 and i.client.stats.acked >= 11, "99")
            assert ingest.stats.received == 11


def _deploy_lines(*keys: str) -> list[str]:
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text().splitlines()
    return [line for line in conf if line.split(" ", 1)[0] in keys]


async def test_the_shipped_broker_config_queues_a_long_store_outage_for_the_worker(
    tmp_path: Path, unique_prefix: str
) -> None:
    """Mosquitto's default queues 1000 messages per session and drops the rest after
    acknowledging them to the gateway; deploy/mosquitto.conf lifts the limit."""
    lines = _deploy_lines("max_queued_messages", "max_queued_bytes")
    assert lines == ["max_queued_messages 0"]
    broker = Mosquitto(tmp_path / "mosquitto", persistent=True, listeners="\n".join(lines))
    broker.start()
    try:
        site = unique_site()
        loaded = write_site(
            tmp_path / "site.yaml",
            broker_url=broker.url,
            prefix=unique_prefix,
            site=site,
            ingest="{flush_interval_s: 0.05, max_inflight: 100}",
        )
        messages = make_messages(unique_prefix, site, seqs=range(1, 1501))
        ts_to_seq = {m.ts_ms: m.seq for m in messages}
        ingest = Ingest(loaded, worker="queue")
        async with running(ingest):
            pass  # the session and its subscription exist; the worker goes away
        await publish(broker.url, messages)
        again = Ingest(loaded, worker="queue")
        async with running(again):
            await until(
                lambda: again.client.stats.acked == 1500 and again.stats.unacked == 0,
                "1500 messages acknowledged",
                timeout_s=30,
            )
        assert _stored_seqs(store_path(loaded), ts_to_seq) == list(range(1, 1501))
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "autosave",
    ["", "autosave_on_changes true\nautosave_interval 1"],
    ids=["default", "every-change"],
)
async def test_a_killed_broker_keeps_only_what_it_saved(
    autosave: str, tmp_path: Path, unique_prefix: str
) -> None:
    """Mosquitto writes mosquitto.db at shutdown and every autosave_interval (1800 s by
    default): SIGKILL (OOM killer, power cut) loses what it acknowledged since."""
    broker = Mosquitto(tmp_path / "mosquitto", persistent=True, listeners=autosave)
    broker.start()
    try:
        site = unique_site()
        loaded = write_site(
            tmp_path / "site.yaml",
            broker_url=broker.url,
            prefix=unique_prefix,
            site=site,
            ingest="{flush_interval_s: 0.05}",
        )
        messages = make_messages(unique_prefix, site, seqs=range(1, 11))
        ts_to_seq = {m.ts_ms: m.seq for m in messages}
        ingest = Ingest(loaded, worker="killed")
        async with running(ingest):
            pass  # the session and its subscription exist; the worker goes away
        if not autosave:
            broker.stop()  # saved at shutdown: the session is on file, not what follows
            broker.start()
        await publish(broker.url, messages)  # acknowledged, queued for the worker
        if autosave:
            # Saved in the broker's loop iteration after the PUBACK: a kill in between
            # would lose the last one still.
            db = broker.workdir / "mosquitto.db"
            await until(
                lambda: db.exists() and messages[-1].payload in db.read_bytes(),
                "the last message saved",
            )
        assert broker.process is not None
        broker.process.kill()
        broker.process.wait(5)
        broker.start()
        again = Ingest(loaded, worker="killed")
        async with running(again):
            assert again.client.stats.sessions_resumed == 1
            sentinel = make_messages(unique_prefix, site, seqs=[99])
            await publish(broker.url, sentinel)
            # The session's queue comes first: once the sentinel is acknowledged, whatever
            # the broker kept has come.
            kept = list(range(1, 11)) if autosave else []
            await until(
                lambda: again.client.stats.acked == len(kept) + 1 and again.stats.unacked == 0,
                "the kept messages and the sentinel acknowledged",
            )
            assert again.stats.received == len(kept) + 1
        ts_to_seq[sentinel[0].ts_ms] = 99
        assert _stored_seqs(store_path(loaded), ts_to_seq) == [*kept, 99]
    finally:
        broker.stop()

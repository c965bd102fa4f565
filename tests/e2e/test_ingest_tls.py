"""`influx.ca_file` / `influx.verify_tls`: the ingest and the report over https.

A real VictoriaMetrics serves https (`-tls`) with a self-signed certificate for 127.0.0.1
(the `victoria_tls` fixture); gateways' messages go through real Mosquitto. The site file
names the certificate relative to its own folder, as a plant's would.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest

from edge_agent.cli.main import main
from edge_agent.config.site import ConfigError, LoadedConfig, load_config
from edge_agent.energy.report.source import EmbeddedSource, VictoriaSource
from edge_agent.ingest.config import InfluxConfig
from edge_agent.ingest.embedded_store import EmbeddedStore
from edge_agent.ingest.influx import InfluxStore
from edge_agent.ingest.schema import DataMessage, Source, decode_messages, parse_topic
from edge_agent.ingest.service import Ingest
from edge_agent.ingest.store import StoreBatch, StoreUnavailable
from simulators.platform.receiver import self_signed
from tests.energy_reference import History, local_ms, simulate
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.victoria import Victoria
from tests.ingest_support import (
    Sent,
    make_messages,
    publish,
    running,
    unique_site,
    until,
    write_site,
)

pytestmark = pytest.mark.timeout(60)

INSECURE = "INSECURE: influx.verify_tls is false"


def _tls_site(
    folder: Path,
    *,
    mosquitto: Mosquitto,
    prefix: str,
    site: str,
    influx_url: str,
    tls: str = "",
    ingest: str = "{backoff_max_s: 0.5, flush_interval_s: 0.05}",
) -> LoadedConfig:
    """write_site's file, with `tls` (YAML flow keys) added to its `influx:` block."""
    path = folder / "site.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    write_site(
        path,
        broker_url=mosquitto.url,
        prefix=prefix,
        site=site,
        influx_url=influx_url,
        ingest=ingest,
    )
    if tls:
        text = path.read_text()
        assert text.count("bucket: edge}") == 1
        path.write_text(text.replace("bucket: edge}", f"bucket: edge, {tls}}}"))
    return load_config(path, environ={"INFLUX_TOKEN": "test-token"})


def _with_ca(folder: Path, victoria: Victoria) -> str:
    """The server's certificate copied to `folder/certs/influx-ca.pem`; the relative key."""
    (folder / "certs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(victoria.ca_file, folder / "certs" / "influx-ca.pem")
    return "ca_file: certs/influx-ca.pem"


def _voltage(site: str) -> str:
    return f'{{site="{site}",point="voltage_a",__name__="edge_value"}}'


def _check_voltage(victoria: Victoria, site: str, sent: list[Sent]) -> None:
    """The store holds exactly one sample per message, with its time and value."""
    series = victoria.wait_for_samples(_voltage(site), len(sent))
    assert len(series) == 1
    assert series[0]["timestamps"] == [m.ts_ms for m in sent]
    assert series[0]["values"] == [float(m.values[0]) for m in sent]
    tags = {k: v for k, v in series[0]["metric"].items() if k != "__name__"}
    assert tags == {
        "site": site,
        "gateway": "gw-01",
        "device": "meter-1",
        "point": "voltage_a",
        "unit": "V",
        "profile": "chint-dtsu666",
    }


async def test_the_ingest_writes_over_https_trusting_the_ca_file(
    tmp_path: Path, mosquitto: Mosquitto, victoria_tls: Victoria, unique_prefix: str
) -> None:
    site = unique_site()
    folder = tmp_path / "plant"  # not the working directory: ca_file is relative to it
    loaded = _tls_site(
        folder,
        mosquitto=mosquitto,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_tls.url,
        tls=_with_ca(folder, victoria_tls),
    )
    assert victoria_tls.url.startswith("https://127.0.0.1:")
    messages = make_messages(unique_prefix, site, seqs=range(1, 21))
    ingest = Ingest(loaded, worker="tls")
    async with running(ingest):
        await publish(mosquitto.url, messages)
        await until(lambda: ingest.stats.stored_messages == 20, "20 messages stored")
        await until(lambda: ingest.client.stats.acked == 20, "20 acknowledgements")
    assert ingest.stats.write_failures == 0
    _check_voltage(victoria_tls, site, messages)


async def test_an_untrusted_certificate_holds_the_messages_until_the_ca_file_is_set(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria_tls: Victoria,
    unique_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = unique_site()
    messages = make_messages(unique_prefix, site, seqs=range(1, 6))
    system_cas = _tls_site(
        tmp_path / "system",
        mosquitto=mosquitto,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_tls.url,
    )
    ingest = Ingest(system_cas, worker="untrusted")
    with caplog.at_level(logging.WARNING, logger="edge_agent.ingest.service"):
        async with running(ingest):
            await publish(mosquitto.url, messages)
            await until(
                lambda: ingest.stats.write_failures >= 2 and ingest.stats.unacked == 5,
                "the 5 messages held unacknowledged while the certificate is refused",
            )
            assert ingest.client.stats.acked == 0
            assert ingest.stats.stored_messages == 0
            assert ingest.stats.store_up is False
    host = victoria_tls.url.removeprefix("https://")
    reason = (
        f"TLS certificate of {host} not accepted (self-signed certificate) checked against "
        "the system's CAs; set influx.ca_file to the server's CA (or its self-signed "
        "certificate)"
    )
    assert ingest.stats.last_error == reason
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # the same reason again is not logged again
    assert reason in warnings[0] and "holding 5 messages unacknowledged" in warnings[0]
    assert victoria_tls.export(_voltage(site)) == []

    # The same worker trusting the certificate: the broker kept the 5 for its session.
    folder = tmp_path / "trusted"
    trusted = _tls_site(
        folder,
        mosquitto=mosquitto,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_tls.url,
        tls=_with_ca(folder, victoria_tls),
    )
    again = Ingest(trusted, worker="untrusted")
    assert again.client_id == ingest.client_id
    async with running(again):
        await until(lambda: again.client.stats.acked == 5, "the kept messages written")
    assert again.stats.write_failures == 0
    _check_voltage(victoria_tls, site, messages)


async def test_a_ca_file_that_did_not_sign_the_certificate_is_named(
    tmp_path: Path, victoria_tls: Victoria
) -> None:
    other, _ = self_signed(tmp_path / "other")
    store = InfluxStore(InfluxConfig(url=victoria_tls.url, org="o", bucket="b", ca_file=other))
    message = make_messages("f", unique_site(), seqs=[1])[0]
    try:
        with pytest.raises(StoreUnavailable) as failed:
            await store.write(_batch(message))
    finally:
        await store.close()
    host = victoria_tls.url.removeprefix("https://")
    assert failed.value.reason == (
        f"TLS certificate of {host} not accepted (self-signed certificate) "
        f"checked against influx.ca_file {other}"
    )


def _batch(sent: Sent) -> StoreBatch:
    source = parse_topic(sent.topic, "f")
    assert source is not None
    decoded = decode_messages(source, sent.payload, now_ms=sent.ts_ms, max_future_ms=0)
    return StoreBatch(messages=decoded, points=sum(len(m.points) for m in decoded))


async def test_verify_tls_false_writes_and_warns_once_at_start(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria_tls: Victoria,
    unique_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = unique_site()
    loaded = _tls_site(
        tmp_path,
        mosquitto=mosquitto,
        prefix=unique_prefix,
        site=site,
        influx_url=victoria_tls.url,
        tls="verify_tls: false",
    )
    messages = make_messages(unique_prefix, site, seqs=range(1, 11))
    ingest = Ingest(loaded, worker="insecure")
    with caplog.at_level(logging.WARNING, logger="edge_agent.ingest.influx"):
        async with running(ingest):
            # Two batches, one after the other: two writes, still one warning.
            await publish(mosquitto.url, messages[:5])
            await until(lambda: ingest.client.stats.acked == 5, "first 5 acknowledged")
            await publish(mosquitto.url, messages[5:])
            await until(lambda: ingest.client.stats.acked == 10, "all 10 acknowledged")
    assert ingest.stats.batches >= 2
    insecure = [r for r in caplog.records if INSECURE in r.getMessage()]
    assert len(insecure) == 1
    assert insecure[0].levelno == logging.WARNING
    assert (
        insecure[0]
        .getMessage()
        .startswith(f"{INSECURE}: the ingest does not check the certificate of {victoria_tls.url};")
    )
    _check_voltage(victoria_tls, site, messages)


# -- edge-agent check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ca_file", "url", "message"),
    [
        (
            "certs/missing.pem",
            "https://127.0.0.1:8428",
            "@DIR@/certs/missing.pem: No such file or directory",
        ),
        (
            "certs/not.pem",
            "https://127.0.0.1:8428",
            "@DIR@/certs/not.pem: not a PEM CA bundle (NO_CERTIFICATE_OR_CRL_FOUND)",
        ),
        (
            "certs/ca.pem",
            "http://127.0.0.1:8428",
            "is only used over https, and influx.url is 'http://127.0.0.1:8428'",
        ),
    ],
)
def test_check_names_an_unusable_ca_file_with_its_line(
    tmp_path: Path, ca_file: str, url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = self_signed(tmp_path / "certs")
    shutil.copyfile(cert, tmp_path / "certs" / "ca.pem")
    (tmp_path / "certs" / "not.pem").write_text("not a certificate\n")
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: plant\n"
        "gateway: gw-01\n"
        "influx:\n"
        f"  url: {url}\n"
        "  org: o\n"
        "  bucket: b\n"
        f"  ca_file: {ca_file}\n"
        "devices:\n"
        "  - {name: m, driver: modbus, url: 'tcp://127.0.0.1:1', profile: chint-dtsu666}\n"
    )
    expected = f"{path}:7 influx.ca_file: {message.replace('@DIR@', str(tmp_path))}"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines()[0] == expected
    assert main(["check", str(path)]) == 2
    assert expected in capsys.readouterr().err
    # The good file over https passes.
    path.write_text(path.read_text().replace(f"ca_file: {ca_file}", "ca_file: certs/ca.pem"))
    path.write_text(path.read_text().replace("http://", "https://"))
    assert load_config(path).site.influx.ca_file == Path("certs/ca.pem")  # type: ignore[union-attr]


# -- edge-agent report ----------------------------------------------------------------------

REPORT_SITE = """\
site: @SITE@
gateway: gw-01
@STORE@
energy: {tariff: example-tou}
devices:
  - name: incomer
    driver: modbus
    url: tcp://127.0.0.1:1502
    interval_s: 300
    points:
      - {name: energy_import, address: 0, type: uint32, scale: 0.01, unit: kWh,
         energy: {kind: electricity, direction: import}}
"""


def _report_messages(history: History, site: str) -> list[DataMessage]:
    source = Source(f"f/{site}/gw-01/incomer/data", site, "gw-01", "incomer")
    return [
        DataMessage(source, seq, t, False, [("energy_import", v, "kWh", 0, None)])
        for seq, (t, v) in enumerate(zip(history.ts, history.register, strict=True), 1)
    ]


async def test_the_report_reads_victoriametrics_over_https_with_the_ca_file(
    tmp_path: Path, victoria_tls: Victoria, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    start, end = local_ms(2026, 11, 9, 23, 0), local_ms(2026, 11, 11, 1, 0)
    history = simulate(
        seed=41, start_ms=start, end_ms=end, poll_s=300.0, resolution=0.01, drop_share=0.02
    )
    messages = _report_messages(history, site)
    # Written over https by the ingest's writer, trusting the certificate.
    writer = InfluxStore(
        InfluxConfig(url=victoria_tls.url, org="o", bucket="b", ca_file=victoria_tls.ca_file)
    )
    try:
        await writer.write(StoreBatch(messages=messages, points=len(messages)))
    finally:
        await writer.close()
    victoria_tls.wait_for_samples(f'{{__name__="edge_value",site="{site}"}}', len(messages))
    EmbeddedStore(tmp_path / "store.sqlite").write_sync(messages)

    folder = tmp_path / "vm"
    tls = _with_ca(folder, victoria_tls)
    store = f'influx: {{url: "{victoria_tls.url}", org: o, bucket: b, {tls}}}'
    (folder / "site.yaml").write_text(REPORT_SITE.replace("@SITE@", site).replace("@STORE@", store))
    (tmp_path / "site.yaml").write_text(
        REPORT_SITE.replace("@SITE@", site).replace("@STORE@", "ingest: {store: store.sqlite}")
    )
    # The source itself: the same polls as the embedded store, value for value.
    a, b = local_ms(2026, 11, 10), local_ms(2026, 11, 11)
    https = VictoriaSource.of_site(load_config(folder / "site.yaml"))
    embedded = EmbeddedSource(tmp_path / "store.sqlite", site=site)
    polls = https.readings("incomer", ["energy_import"], a, b)
    # The registers are multiples of 0.01 with binary noise (1558.3400000000001), which
    # VictoriaMetrics' decimal storage drops: exact to the register's resolution.
    assert polls == [
        (t, {"energy_import": round(v, 2)})
        for t, v in zip(history.ts, history.register, strict=True)
        if a <= t < b
    ]
    assert len(polls) > 250  # a day of 5-minute polls, a few dropped
    assert polls == [
        (t, {p: round(v, 2) for p, v in values.items() if v is not None})
        for t, values in embedded.readings("incomer", ["energy_import"], a, b)
    ]

    period = ["--from", "2026-11-10", "--to", "2026-11-11"]
    assert main(["report", str(folder / "site.yaml"), *period, "--out", str(tmp_path / "r1")]) == 0
    assert f"reading {victoria_tls.url}" in capsys.readouterr().err
    assert (
        main(["report", str(tmp_path / "site.yaml"), *period, "--out", str(tmp_path / "r2")]) == 0
    )
    for name in ("daily_energy.csv", "totals.csv", "completeness.csv"):
        over_https = (tmp_path / "r1" / name).read_text()
        assert over_https == (tmp_path / "r2" / name).read_text(), name
        assert len(over_https.splitlines()) > 1, name
    with (tmp_path / "r1" / "daily_energy.csv").open(encoding="utf-8-sig") as f:
        row = next(r for r in csv.DictReader(f) if r["series"] == "incomer")
    assert float(row["energy"]) == pytest.approx(history.energy(a, b), abs=1e-4)

    # Without the ca_file (system CAs): refused, saying why, nothing written.
    text = (folder / "site.yaml").read_text()
    (folder / "site.yaml").write_text(text.replace(", ca_file: certs/influx-ca.pem", ""))
    assert main(["report", str(folder / "site.yaml"), *period, "--out", str(tmp_path / "r3")]) == 1
    err = capsys.readouterr().err
    assert (
        f"report: {victoria_tls.url}: TLS certificate not accepted (self-signed certificate) "
        "checked against the system's CAs; set influx.ca_file" in err
    )
    assert not (tmp_path / "r3" / "report.html").exists()

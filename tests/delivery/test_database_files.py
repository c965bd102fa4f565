"""The agent's database files: only its own are opened (or moved aside), all are private.

A path that names another kind of file (a YAML file, another program's database, another
of the agent's stores, an empty file, a folder) is refused by `check` and `run` with
file:line and exit 2, and by the stores themselves: the file is never renamed, moved or
written. A read-only location is a clear error at start, not corruption. Files from
before the application ids still open. Every file is 0600 under umask 022, -wal and -shm
included.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.alarms.state import AlarmStatus
from edge_agent.alarms.store import AlarmStore
from edge_agent.cli.main import main
from edge_agent.delivery.outbox import _SCHEMA as OUTBOX_SCHEMA
from edge_agent.delivery.outbox import Outbox, OutboxConfig
from edge_agent.delivery.sqlite_file import (
    ALARMS,
    ENERGY,
    OUTBOX,
    UPLINK,
    DatabaseFileError,
    file_problem,
)
from edge_agent.energy.state import EnergyStateFile
from edge_agent.ingest.embedded_store import EmbeddedStore
from edge_agent.ingest.schema import decode_data, parse_topic
from edge_agent.uplink.store import UplinkStore
from tests.filesystems import mounted_tmpfs, remount_read_only

SITE = """\
site: plant-a
gateway: gw-01
outbox: {{path: {outbox}}}
devices:
  - {{name: m1, driver: modbus, url: 'tcp://127.0.0.1:1502', profile: chint-dtsu666}}
"""


def _site(tmp_path: Path, outbox: Path | str) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(outbox=outbox))
    return site


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.name: None if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_check_and_run_refuse_an_outbox_path_naming_another_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.yaml"
    victim.write_text("site: precious\n")
    site = _site(tmp_path, "victim.yaml")
    before = _snapshot(tmp_path)
    code, err = _cli(capsys, "check", str(site))
    assert code == 2
    assert err.splitlines()[0] == (
        f"{site}:3 outbox.path: outbox {victim} is not a SQLite database: not a file of the agent"
    )
    assert _cli(capsys, "run", str(site)) == (2, err)  # the same message, before anything
    assert _snapshot(tmp_path) == before  # not renamed, not written, nothing created
    with pytest.raises(DatabaseFileError, match="not a SQLite database"):
        Outbox(victim, OutboxConfig()).open()
    assert _snapshot(tmp_path) == before


UPLINK_SITE = """\
site: plant-a
gateway: gw-01
devices:
  - {name: m1, driver: modbus, url: 'tcp://127.0.0.1:1502', profile: chint-dtsu666}
energy: {}
uplink:
  path: victim.yaml
  endpoints:
    - {name: prov, url: 'http://127.0.0.1:9/', template: example-province}
"""


@pytest.mark.parametrize(
    "command",
    [
        ("uplink", "export", "--from", "2026-12-01", "--to", "2026-12-02", "--out", "x.csv"),
        ("uplink", "manual"),
    ],
    ids=["export", "manual"],
)
def test_uplink_commands_refuse_a_foreign_store_path_like_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    (tmp_path / "victim.yaml").write_text("site: precious\n")
    (tmp_path / "m.csv").write_text("device,counter,kind,unit,start,end,value\n")
    site = tmp_path / "site.yaml"
    site.write_text(UPLINK_SITE)
    before = _snapshot(tmp_path)
    code, err = _cli(capsys, "check", str(site))
    assert code == 2
    assert "uplink.path: uplink store" in err.splitlines()[0]
    args = [*command, str(site)] + ([str(tmp_path / "m.csv")] if command[-1] == "manual" else [])
    assert _cli(capsys, *args) == (2, err)  # no traceback: check's message, exit 2
    assert _snapshot(tmp_path) == before


def _other_program(path: Path, *, application_id: int = 0) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA application_id = {application_id}")
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('alice')")
    db.close()


def _uplink_store(path: Path) -> None:
    UplinkStore(path, ["platform"]).close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b""), "is an empty file, not a database of the agent"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (
            _other_program,
            "is a SQLite database without the outbox's tables: not a file of the agent",
        ),
        (
            lambda p: _other_program(p, application_id=0x12345678),
            "is another program's SQLite database (application_id 0x12345678)",
        ),
        (_uplink_store, "is the agent's uplink store, not its outbox"),
    ],
    ids=["empty", "folder", "sqlite", "sqlite-with-id", "uplink-store"],
)
def test_the_outbox_never_touches_a_file_that_is_not_its_own(
    tmp_path: Path, make: object, says: str
) -> None:
    path = tmp_path / "outbox.sqlite"
    make(path)  # type: ignore[operator]
    before = _snapshot(tmp_path)
    assert file_problem(path, OUTBOX) == says
    with pytest.raises(DatabaseFileError) as refused:
        Outbox(path, OutboxConfig()).open()
    assert str(refused.value) == f"outbox {path} {says}"
    assert _snapshot(tmp_path) == before


def test_other_stores_refuse_foreign_files_too(tmp_path: Path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me\n" * 50)
    with pytest.raises(DatabaseFileError, match=r"energy state .* not a SQLite database"):
        EnergyStateFile(victim)
    with pytest.raises(DatabaseFileError, match=r"alarm store .* not a SQLite database"):
        AlarmStore(victim).open()
    with pytest.raises(DatabaseFileError, match=r"uplink store .* not a SQLite database"):
        UplinkStore(victim, ["platform"])
    assert victim.read_text() == "keep me\n" * 50
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_database_from_before_application_ids_still_opens_and_is_marked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path, isolation_level=None)  # as versions before the ids made it
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(OUTBOX_SCHEMA)
    old.executemany(
        "INSERT INTO outbox (id, topic, payload, device, readings, created_ms) "
        "VALUES (?, 't', x'00', 'm1', 5, 0)",
        [(1,), (2,), (3,)],
    )
    old.close()
    path.chmod(0o644)
    assert file_problem(path, OUTBOX) is None
    box = Outbox(path, OutboxConfig())
    box.open()
    assert (box.stats.messages, box.stats.readings, box.reserve_id()) == (3, 15, 4)
    assert box._require().execute("PRAGMA application_id").fetchone()[0] == OUTBOX.application_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    box.close()
    assert path.read_bytes()[68:72] == OUTBOX.application_id.to_bytes(4, "big")
    # The same file is not any other store's.
    assert file_problem(path, ALARMS) == "is the agent's outbox, not its alarm store"


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "ro") as fs:
        yield fs


def test_a_read_only_location_is_a_clear_error_and_nothing_is_declared_corrupt(
    tmp_path: Path, read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    energy = read_only / "outbox.energy.sqlite"
    EnergyStateFile(energy).close()  # a state of ours from an earlier run
    remount_read_only(read_only)
    before = _snapshot(read_only)
    site = _site(tmp_path, read_only / "outbox.sqlite")
    code, err = _cli(capsys, "check", str(site))
    assert code == 2
    assert err.splitlines()[:2] == [
        f"{site}:3 outbox.path: outbox {read_only / 'outbox.sqlite'} cannot be created: "
        f"{read_only} is on a read-only file system",
        f"{site}:3 outbox.path: energy state {energy} cannot be written: "
        "on a read-only file system",
    ]
    assert _cli(capsys, "run", str(site)) == (2, err)
    assert _snapshot(read_only) == before  # the energy state is not "moved aside"
    with pytest.raises(DatabaseFileError, match="read-only file system"):
        EnergyStateFile(energy)
    with pytest.raises(DatabaseFileError, match="read-only file system"):
        Outbox(read_only / "outbox.sqlite", OutboxConfig()).open()
    assert _snapshot(read_only) == before


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(path: Path) -> dict[str, int]:
    parts = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in parts}


def _private(path: Path) -> dict[str, int]:
    return {p: 0o600 for p in (path.name, f"{path.name}-wal", f"{path.name}-shm")}


def test_every_database_the_agent_creates_is_private(tmp_path: Path, umask_022: None) -> None:
    outbox = Outbox(tmp_path / "var" / "outbox.sqlite", OutboxConfig())
    outbox.open()
    msg_id = outbox.reserve_id()
    outbox.append(msg_id, "t", b"{}", device="m1", readings=1)
    outbox.flush()
    assert _modes(outbox.path) == _private(outbox.path)

    alarms = AlarmStore(tmp_path / "var" / "outbox.alarms.sqlite")
    alarms.open()
    alarms.save([("m1/p/high", AlarmStatus(), None)])
    assert _modes(alarms.path) == _private(alarms.path)

    energy = EnergyStateFile(tmp_path / "var" / "outbox.energy.sqlite")
    energy.save({"m1/p": ("fp", {"total": 1.0})})
    assert _modes(energy.path) == _private(energy.path)

    uplink = UplinkStore(tmp_path / "var" / "uplink.sqlite", ["platform"])
    uplink.db.execute("INSERT INTO announce (record) VALUES ('{}')")
    assert _modes(uplink.path) == _private(uplink.path)

    store = EmbeddedStore(tmp_path / "data" / "edge-data.sqlite")
    source = parse_topic("edge/plant-a/gw-01/m1/data", "edge")
    assert source is not None
    message = decode_data(
        source,
        b'{"schema_version":1,"gateway":"gw-01","device":"m1","seq":1,"ts_ms":1767225600000,'
        b'"historical":false,"points":{"p":{"value":1.5,"unit":"V","quality":"good"}}}',
        now_ms=1767225600000,
        max_future_ms=0,
    )
    assert store.write_sync([message]) == 1
    assert _modes(store.path) == _private(store.path)
    store.close_sync()

    for path, kind in ((outbox.path, OUTBOX), (alarms.path, ALARMS), (energy.path, ENERGY)):
        assert file_problem(path, kind) is None
    assert file_problem(uplink.path, UPLINK) is None
    leftovers = [p.name for p in tmp_path.rglob(".*.new*")]
    assert leftovers == []  # the temporary files of creation are gone
    outbox.close()
    alarms.close()
    energy.close()
    uplink.close()


def test_an_older_world_readable_file_of_ours_is_made_private_at_open(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "outbox.alarms.sqlite"
    store = AlarmStore(path)
    store.open()
    store.save([("m1/p/high", AlarmStatus(), None)])
    for part in _modes(path):
        (tmp_path / part).chmod(0o644)
    store.close()
    again = AlarmStore(path)
    again.open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(mode == 0o600 for mode in _modes(path).values())
    again.close()

"""Whole-server targets (``databases = "*"``) on a dedicated PostgreSQL 15 server: every
database backed up under ``<target>/<database>/`` and restored with stock ``pg_restore``, the
globals once per run (0600, no passwords), a new database picked up, a dropped one's backups
kept by retention and reported by ``pgwarden check``; excluded and template databases never
backed up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from pgwarden.backup.server import ServerBackupOutcome, take_server_backup
from pgwarden.backup.take import BackupRequest
from pgwarden.catalog import open_catalog
from pgwarden.catalog.models import Backup
from pgwarden.commands.check_server import server_checks
from pgwarden.config import Config, parse
from pgwarden.config.serverwide import select_databases
from pgwarden.errors import ConfigError, NotFoundError
from pgwarden.retention.lastprune import PruneRecords, recorded_prune
from pgwarden.retention.subtargets import next_drill, prune_units, stale_globals
from pgwarden.service.daemon import Daemon
from pgwarden.storage import manifest_name
from pgwarden.storage.locks import BackupLocks
from tests.helpers import Env, make_config, open_env
from tests.pgservers import PgServer, free_port, start_pg15, temp_base
from tests.sampledata import make_sample_db, table_fingerprints
from tests.test_daemon_jobs import SteppingClock
from tests.test_daemon_jobs import _run as run_daemon

APPS = ("app1", "app2", "app3")


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    """A server of our own: ``databases = "*"`` must see only this test's databases."""
    base = temp_base("pgwarden-wholeserver-")
    server = start_pg15(base)
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _config(workdir: Path, server: PgServer, **extra: object) -> Config:
    doc = {
        "name": "vps1",
        "dsn": server.uri("postgres"),
        "bin_dir": str(server.bin_dir),
        "databases": "*",
        "exclude_databases": ["scratch"],
        "backup": {"retries": 0},
        "retention": {"keep_days": 2, "min_keep": 1},
        **extra,
    }
    return make_config(workdir, [doc])


def _run(config: Config, env: Env) -> ServerBackupOutcome:
    return take_server_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))


def _artifacts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.endswith(".manifest.json"))


def _age(env: Env, backup_id: str, days: float) -> None:
    """Move a backup's recorded start ``days`` back (catalog row and manifest)."""
    started = datetime.now(UTC) - timedelta(days=days)
    with Session(env.catalog.engine) as session, session.begin():
        row = session.get_one(Backup, backup_id)
        row.started_at, row.finished_at = started, started + timedelta(seconds=30)
        target, path = row.target, row.path
    assert path
    name = manifest_name(path)
    data = json.loads((env.storage.target_dir(target) / name).read_text())
    data["started_at"] = started.isoformat()
    data["finished_at"] = (started + timedelta(seconds=30)).isoformat()
    env.storage.write_manifest_atomic(target, name, json.dumps(data).encode())


def test_selection_rules() -> None:
    found = ["postgres", "app", "scratch", "b"]
    assert select_databases(found, ("*",), ("scratch",)) == ("app", "b", "postgres")
    assert select_databases(found, ("app", "gone"), ()) == ("app",)
    assert select_databases(found, None, ()) == ()
    base = {"name": "vps1", "dsn": "postgresql://u@localhost/postgres"}
    for bad, message in [
        ({"databases": []}, 'targets[0].databases: must be "*" or a non-empty array'),
        ({"databases": "all"}, 'targets[0].databases: must be "*"'),
        ({"databases": ["a", "a"]}, "targets[0].databases: database 'a' is listed more"),
        ({"databases": ["-x"]}, "targets[0].databases: database name must start"),
        ({"exclude_databases": ["a"]}, "targets[0].exclude_databases: needs databases"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse({"targets": [{**base, **bad}]}, Path("x.toml"))
        assert message in str(caught.value)
    config = parse({"targets": [{**base, "databases": "*"}]}, Path("x.toml"))
    sub = config.target("vps1/app")
    assert (sub.name, sub.databases, sub.backup.dump_globals) == ("vps1/app", None, False)
    assert "dbname=app" in sub.dsn
    with pytest.raises(NotFoundError):
        config.target("vps1/-x")
    plain = parse({"targets": [base]}, Path("x.toml"))
    with pytest.raises(NotFoundError):
        plain.target("vps1/app")


def test_every_database_backed_up_restored_and_kept(server: PgServer, workdir: Path) -> None:
    for name in APPS:
        make_sample_db(server, name, rows=300, vectors=False)
    server.create_database("scratch")
    server.create_database("locked")
    server.execute("ALTER DATABASE locked WITH ALLOW_CONNECTIONS false")
    server.execute("DROP ROLE IF EXISTS app_owner")
    server.execute("CREATE ROLE app_owner LOGIN PASSWORD 'hunter2-never-dumped'")
    config = _config(workdir, server)
    env = open_env(config)
    root = config.storage.path / "vps1"

    first = _run(config, env)
    assert first.discovery.databases == ("app1", "app2", "app3", "postgres")
    assert first.discovery.excluded == ("scratch",)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [*APPS, "postgres"]
    assert first.globals_path.parent == root
    assert first.globals_path.stat().st_mode & 0o777 == 0o600
    globals_sql = first.globals_path.read_text()
    assert "CREATE ROLE app_owner" in globals_sql
    assert "hunter2" not in globals_sql
    assert "PASSWORD" not in globals_sql
    for name in APPS:
        directory = root / name
        [artifact] = _artifacts(directory)
        manifest = json.loads((directory / manifest_name(artifact.name)).read_text())
        assert (manifest["target"], manifest["database"]) == (f"vps1/{name}", name)
        assert artifact.stat().st_mode & 0o777 == 0o600
        server.create_database(f"{name}_restored")
        plain = workdir / f"{name}.dump"
        if artifact.suffix == ".zst":  # custom archive inside zstd: the README's stock steps
            subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(plain), str(artifact)], check=True)
        else:
            plain = artifact
        restore = [str(server.bin_dir / "pg_restore"), "--no-owner", "--exit-on-error"]
        subprocess.run(
            [*restore, "-d", server.dsn(f"{name}_restored"), str(plain)],
            check=True,
            capture_output=True,
        )
        assert table_fingerprints(server, f"{name}_restored") == table_fingerprints(server, name)
        server.drop_database(f"{name}_restored")

    make_sample_db(server, "app4", rows=50, vectors=False)
    second = _run(config, env)
    assert "app4" in second.discovery.databases
    assert len(_artifacts(root / "app4")) == 1
    assert len(_artifacts(root / "app1")) == 2

    server.drop_database("app2")
    third = _run(config, env)
    assert "app2" not in third.discovery.databases
    [check] = server_checks(config, "vps1").values()
    assert check.status == "warn"
    assert "gone from the server: app2" in check.detail

    # a globals file older than the one in force for the oldest kept backup is no longer needed
    ancient = root / "globals-20200101T000000Z.sql"
    ancient.write_text("-- an old run's globals\n")
    assert stale_globals(config.targets[0], env.catalog, env.storage) == [ancient]
    env.storage.delete(ancient)
    assert len(list(root.glob("globals-*.sql"))) == 3

    # every backup a month old: retention (keep_days 2, min_keep 1) keeps one per database,
    # the dropped database's included; each database is planned on its own
    for record in env.catalog.list_backups():
        _age(env, record.id, 30)
    units = prune_units(config.targets[0], env.catalog)
    assert [u.name for u in units] == [
        f"vps1/{d}" for d in ("app1", "app2", "app3", "app4", "postgres")
    ]
    locks, records = BackupLocks(config.daemon.state_dir), PruneRecords(config.daemon.state_dir)
    for unit in units:
        outcome = recorded_prune(unit, env.catalog, env.storage, locks=locks, records=records)
        assert outcome.ok
    assert len(_artifacts(root / "app2")) == 1
    first_drill = next_drill(config.targets[0], env.catalog)
    assert first_drill is not None
    assert first_drill.name == "vps1/app1"  # never drilled, then by name
    assert len(_artifacts(root / "app1")) == 1
    assert len(_artifacts(root / "app4")) == 1
    for never in ("template0", "template1", "scratch", "locked"):
        assert not (root / never).exists()
    env.catalog.close()


def test_the_daemon_fans_a_scheduled_run_out_per_database(server: PgServer, workdir: Path) -> None:
    """A schedule fires the whole-server job: the globals, then one ordinary backup job per
    listed database (each followed by its own prune), with its own metrics."""
    for name in ("app1", "app3"):
        if name not in server.databases():
            make_sample_db(server, name, rows=50, vectors=False)
    path = workdir / "pgwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n[monitor]\nenabled = false\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "vps1"\ndsn = "{server.uri("postgres")}"\n'
        f'bin_dir = "{server.bin_dir}"\ndatabases = ["app1", "app3"]\n'
        '  [targets.backup]\n  schedule = "0 3 * * *"\n  retries = 0\n'
        "  [targets.verify]\n  enabled = false\n"
        '  [targets.retention]\n  schedule = "off"\n'
    )
    clock = SteppingClock(datetime(2026, 11, 26, 2, 59, 50, tzinfo=UTC))
    daemon = Daemon(path, clock=clock, install_signals=False)
    thread, box = run_daemon(daemon)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert daemon.service is not None
            jobs = [j for j in daemon.service.runner.jobs() if j.finished]
            prunes = {j.target for j in jobs if j.kind == "prune"}
            if prunes >= {"vps1/app1", "vps1/app3"}:
                break
            assert time.monotonic() < deadline, [(j.kind, j.target, j.state) for j in jobs]
            time.sleep(0.1)
        backups = {j.target: j for j in jobs if j.kind == "backup"}
        assert set(backups) == {"vps1", "vps1/app1", "vps1/app3"}
        assert all(j.state == "succeeded" for j in jobs), [(j.target, j.error) for j in jobs]
        assert backups["vps1"].trigger == "scheduled"
        registry = daemon.service.state.metrics.registry
        for sub in ("vps1/app1", "vps1/app3"):
            ok = registry.get_sample_value(
                "pgwarden_backup_last_success_timestamp_seconds", {"target": sub}
            )
            assert ok is not None, sub
            database = sub.removeprefix("vps1/")
            labels = {"target": "vps1", "database": database}
            assert registry.get_sample_value("pgwarden_server_database_present", labels) == 1
        runs = {"target": "vps1", "result": "success"}  # the fan-out job counts no backup
        assert not registry.get_sample_value("pgwarden_backup_runs_total", runs)
    finally:
        daemon.request_stop()
        thread.join(60)
    assert box.get("code") == 0
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        assert catalog.targets() == ["vps1/app1", "vps1/app3"]
        for sub in ("vps1/app1", "vps1/app3"):
            [record] = catalog.list_backups(sub)
            assert (record.status, record.tags) == ("complete", ("scheduled",))
    assert len(list((workdir / "backups" / "vps1").glob("globals-*.sql"))) == 1

    # a restart restores each database's history gauges from the catalog
    clock = SteppingClock(datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC))
    again = Daemon(path, clock=clock, install_signals=False)
    thread, box = run_daemon(again)
    try:
        assert again.service is not None
        registry = again.service.state.metrics.registry
        for sub in ("vps1/app1", "vps1/app3"):
            metric = "pgwarden_backup_last_success_timestamp_seconds"
            assert registry.get_sample_value(metric, {"target": sub}), sub
    finally:
        again.request_stop()
        thread.join(60)
    assert box.get("code") == 0


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_commands_on_a_whole_server_target(server: PgServer, workdir: Path) -> None:
    for name in ("app1", "app3"):
        if name not in server.databases():
            make_sample_db(server, name, rows=50, vectors=False)
    path = workdir / "pgwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "vps1"\ndsn = "{server.uri("postgres")}"\n'
        f'bin_dir = "{server.bin_dir}"\ndatabases = ["app1", "app3"]\n'
    )
    backup = _cli(path, "backup", "vps1")
    assert backup.returncode == 0, backup.stderr
    assert "backup " in backup.stdout and " of vps1/app1: " in backup.stdout
    assert " of vps1/app3: " in backup.stdout
    drill = _cli(path, "verify", "vps1")  # the rotation's first: never drilled, by name
    assert drill.returncode == 0, drill.stderr
    assert "of vps1/app1: PASSED" in drill.stdout
    drill = _cli(path, "verify", "vps1")
    assert "of vps1/app3: PASSED" in drill.stdout
    restore = _cli(path, "restore", "vps1", "--into", "nowhere")
    assert restore.returncode == 2
    assert "name a database" in restore.stderr
    prune = _cli(path, "prune", "vps1", "--dry-run")
    assert prune.returncode == 0, prune.stderr
    assert "vps1/app1: 1 backups" in prune.stdout and "vps1/app3: 1 backups" in prune.stdout
    check = _cli(path, "check", "vps1", "--json")
    results = {r["check"]: r for r in json.loads(check.stdout)["results"]}
    assert results["backup.databases"]["status"] == "pass", results["backup.databases"]
    assert results["backup.restore_tested"]["status"] == "pass"
    assert results["storage"]["status"] == "pass", results["storage"]
    listed = _cli(path, "backups", "vps1/app3", "--json")
    assert [b["target"] for b in json.loads(listed.stdout)] == ["vps1/app3"]
    listed = _cli(path, "backups", "vps1", "--json")
    assert sorted(b["target"] for b in json.loads(listed.stdout)) == ["vps1/app1", "vps1/app3"]
    app3 = next(b["id"] for b in json.loads(listed.stdout) if b["target"] == "vps1/app3")
    pinned = _cli(path, "pin", "vps1/app3", app3[:8])
    assert pinned.returncode == 0, pinned.stderr
    listed = _cli(path, "backups", "vps1/app3", "--json")
    assert json.loads(listed.stdout)[0]["pinned"] is True
    # a file without a manifest in a database's directory is found by the storage check
    (workdir / "backups" / "vps1" / "app3" / "20200101T000000Z-deadbeef.dump").write_bytes(b"x")
    check = _cli(path, "check", "vps1", "--json")
    results = {r["check"]: r for r in json.loads(check.stdout)["results"]}
    assert results["storage"]["status"] == "warn", results["storage"]
    assert "20200101T000000Z-deadbeef.dump" in results["storage"]["detail"]

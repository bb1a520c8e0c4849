"""Shared pieces of the retention, prune and reconcile tests: real backups, rewritten times.

``Store`` takes real backups of a small sample database with :func:`take_backup` (real
pg_dump, real files, real catalog), real failed runs (pg_dump refusing an unknown option), and
then moves their recorded times into the past: the catalog rows (``started_at``,
``finished_at``) through SQLAlchemy, the manifests' ``started_at``/``finished_at`` rewritten
atomically.  The CLI runs in-process through :func:`pgwarden.cli.main` with a config file on
disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy.orm import Session

from pgwarden import config as config_mod
from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.catalog import BackupRecord, open_catalog
from pgwarden.catalog.models import Backup
from pgwarden.cli import main
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import PgwardenError
from pgwarden.storage import LocalStorage, manifest_name
from pgwarden.storage.locks import BackupLocks
from tests.helpers import Env, target_doc, write_config
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

SOURCE_DB = "retention_src"


@pytest.fixture(scope="module")
def source_db(pg18: PgServer) -> str:
    make_sample_db(pg18, SOURCE_DB, rows=20, vectors=False)
    return SOURCE_DB


def days(value: float) -> timedelta:
    return timedelta(days=value)


@dataclass
class Store:
    server: PgServer
    workdir: Path
    doc: dict[str, Any]
    config_path: Path
    config: Config
    env: Env

    @property
    def storage(self) -> LocalStorage:
        return self.env.storage

    def target(self, name: str = "app") -> TargetConfig:
        return self.config.target(name)

    def locks(self) -> BackupLocks:
        return BackupLocks(self.config.daemon.state_dir)

    def directory(self, target: str = "app") -> Path:
        return self.storage.root / target

    def artifact(self, record: BackupRecord) -> Path:
        assert record.path
        return self.directory(record.target) / record.path

    def manifest(self, record: BackupRecord) -> Path:
        assert record.path
        return self.directory(record.target) / manifest_name(record.path)

    # -- making history ----------------------------------------------------------------------

    def backup(
        self, age: timedelta, *, target: str = "app", tags: Sequence[str] = ("scheduled",)
    ) -> BackupRecord:
        request = BackupRequest(
            self.target(target), self.config, self.env.catalog, self.storage, tuple(tags)
        )
        outcome = take_backup(request)
        self.set_times(outcome.backup_id, datetime.now(UTC) - age)
        return self.env.catalog.get_backup(outcome.backup_id)

    def failed_run(self, age: timedelta) -> BackupRecord:
        """A real failed run: pg_dump rejects an option, take_backup records the failure."""
        doc = json.loads(json.dumps(self.doc))
        doc["targets"][0]["backup"]["extra_args"] = ["--no-such-option"]
        failing = config_mod.parse(doc, self.config_path)
        request = BackupRequest(failing.target("app"), failing, self.env.catalog, self.storage)
        with pytest.raises(PgwardenError):
            take_backup(request)
        newest = self.env.catalog.list_backups("app", limit=1)[0]
        assert newest.status == "failed", newest
        self.set_times(newest.id, datetime.now(UTC) - age)
        return self.env.catalog.get_backup(newest.id)

    def set_times(self, backup_id: str, started: datetime) -> None:
        """Move a backup's recorded times: the catalog row and, if any, its manifest."""
        finished = started + timedelta(seconds=30)
        with Session(self.env.catalog.engine) as session, session.begin():
            row = session.get_one(Backup, backup_id)
            row.started_at, row.finished_at = started, finished
            target, path, status = row.target, row.path, row.status
        if status == "complete" and path:
            name = manifest_name(path)
            data = json.loads((self.directory(target) / name).read_text())
            data["started_at"], data["finished_at"] = started.isoformat(), finished.isoformat()
            self.storage.write_manifest_atomic(target, name, json.dumps(data, indent=2).encode())

    def set_status(self, backup_id: str, status: str) -> None:
        with Session(self.env.catalog.engine) as session, session.begin():
            session.get_one(Backup, backup_id).status = status

    # -- looking -------------------------------------------------------------------------------

    def files(self, target: str = "app") -> set[str]:
        directory = self.directory(target)
        return {p.name for p in directory.iterdir()} if directory.exists() else set()

    def statuses(self, target: str = "app") -> dict[str, str]:
        return {r.id: r.status for r in self.env.catalog.list_backups(target)}

    def record(self, backup_id: str) -> BackupRecord:
        return self.env.catalog.get_backup(backup_id)

    def cli(self, *argv: str) -> tuple[int, str]:
        """Run ``pgwarden ARGV -c CONFIG`` in-process; the exit code and stdout."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main([*argv, "-c", str(self.config_path)])
        return code, out.getvalue()

    def cli_json(self, *argv: str, expect: int = 0) -> Any:
        code, out = self.cli(*argv, "--json")
        assert code == expect, out
        return json.loads(out)

    def reopen_catalog(self) -> None:
        self.env.catalog.close()
        self.env.catalog = open_catalog(self.config.daemon.effective_catalog_url)


def make_store(server: PgServer, workdir: Path, db: str, **retention: Any) -> Store:
    targets = [
        target_doc(server, db, name=name, backup={"retries": 0}, retention=dict(retention))
        for name in ("app", "other")
    ]
    doc: dict[str, Any] = {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "socket": str(workdir / "ctl.sock"),
            "log_level": "warning",
        },
        "storage": {"path": str(workdir / "backups")},
        "metrics": {"listen": "127.0.0.1:0"},
        "targets": targets,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_config(workdir, tomli_w.dumps(doc))
    config = config_mod.load(path)
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    env = Env(
        config, open_catalog(config.daemon.effective_catalog_url), LocalStorage(config.storage.path)
    )
    return Store(server, workdir, doc, path, config, env)


StoreFactory = Callable[..., Store]


@pytest.fixture
def new_store(pg18: PgServer, source_db: str, workdir: Path) -> Iterator[StoreFactory]:
    """``new_store(**retention)``: a store (targets ``app`` and ``other``) in ``workdir``."""
    made: list[Store] = []

    def factory(**retention: Any) -> Store:
        store = make_store(pg18, workdir / f"store{len(made)}", source_db, **retention)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.env.catalog.close()


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i``: not even root can delete these until the block ends."""
    done: list[Path] = []
    try:
        for path in paths:
            subprocess.run(["chattr", "+i", str(path)], check=True)
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)

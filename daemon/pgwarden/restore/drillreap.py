"""Drills own their catalog row through a run lock; reaping the rows of dead drills.

Every drill (a daemon job or a one-shot ``pgwarden verify``) takes a *run lock*
(:meth:`pgwarden.storage.locks.BackupLocks.run`, ``<state_dir>/locks/drill-<hex>.run.lock``)
*before* it records its ``running`` row, whose details name the lock (``run_lock``), and holds
it until the row is final.  The kernel drops the lock when the drill's process dies, so a run
lock that can be taken without waiting proves the drill dead -- the same protocol as backup
runs (:mod:`pgwarden.backup.reap`).

:func:`reap_dead_drills` -- called by the daemon at start-up and by one-shot commands -- marks
``interrupted`` exactly the ``running`` rows whose lock is free, and those that name no lock
(recorded by a pgwarden that predates drill run locks).  A live drill of another process keeps
its row, whichever process started first.  The dead drill's scratch database is the sweep's
(:func:`pgwarden.restore.scratch.drop_leftovers`: its advisory lock died with the drill's
session), run at daemon start-up and before every drill.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pgwarden.catalog import INTERRUPTED_MESSAGE, Catalog, DrillStatus
from pgwarden.catalog.records import VerificationRecord
from pgwarden.config import Config
from pgwarden.logsetup import get_logger
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.state")

#: the key of a drill row's details that names its run lock
RUN_LOCK_KEY = "run_lock"
_PREFIX = "drill-"


@contextmanager
def drill_run_lock(config: Config) -> Iterator[dict[str, str]]:
    """Hold a new drill run lock for the block; yields the details to record with the row."""
    name = f"{_PREFIX}{uuid.uuid4().hex}"
    with BackupLocks(config.daemon.state_dir).run(name):
        yield {RUN_LOCK_KEY: name}


def reap_dead_drills(config: Config, catalog: Catalog) -> list[int]:
    """Mark ``interrupted`` the running drills whose process is dead; their ids."""
    locks = BackupLocks(config.daemon.state_dir)
    reaped: list[int] = []
    for record in catalog.running_verifications():
        name = record.details.get(RUN_LOCK_KEY)
        if not isinstance(name, str) or not name.startswith(_PREFIX):
            _interrupt(catalog, record)  # no lock to ask: left by a pgwarden before run locks
            reaped.append(record.id)
            continue
        try:
            with locks.try_run(name) as run:
                if not run.held:
                    continue  # alive: a one-shot drill, or a drill of this very daemon
                _interrupt(catalog, record)
                run.discard()
        except ValueError:  # not a name pgwarden writes
            _interrupt(catalog, record)
        reaped.append(record.id)
    return reaped


def _interrupt(catalog: Catalog, record: VerificationRecord) -> None:
    catalog.finish_verification(
        record.id,
        status=DrillStatus.INTERRUPTED,
        finished_at=datetime.now(UTC),
        details=record.details,
        error=record.error or INTERRUPTED_MESSAGE,
    )


def log_reaped_drills(ids: list[int]) -> None:
    if ids:
        log.warning("marked drills of dead processes interrupted", count=len(ids), drills=ids)

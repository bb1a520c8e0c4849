"""Where a finished drill is written down: its catalog row and its backup's manifest.

:func:`record` finishes the drill's catalog row (started by the drill, :mod:`.drill`) and
appends the outcome to the ``verifications`` list of the backup's manifest, rewritten
atomically under the manifest's update lock.  Neither failure fails the drill: each becomes a
note on the outcome and a logged error.
"""

from __future__ import annotations

import json

from pgwarden.catalog import Catalog
from pgwarden.config import Config
from pgwarden.errors import PgwardenError
from pgwarden.logsetup import get_logger
from pgwarden.redaction import redact
from pgwarden.restore.locate import LOCK_TIMEOUT_S, Located
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.storage import Storage
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.verify")


def record(
    config: Config,
    catalog: Catalog,
    storage: Storage,
    located: Located,
    outcome: VerifyOutcome,
    drill_id: int,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> list[str]:
    """Record the drill in the catalog and in its backup's manifest (waiting up to
    ``lock_timeout`` for the manifest's lock); notes on what failed."""
    notes: list[str] = []
    details = outcome.as_dict(include_older=False)
    try:
        catalog.finish_verification(
            drill_id,
            status=outcome.status,
            finished_at=outcome.finished_at,
            details=details,
            error=outcome.error,
        )
    except PgwardenError as exc:
        log.error("cannot record the drill in the catalog", error=redact(str(exc)))
        notes.append(f"not recorded in the catalog: {redact(str(exc))}")
    entry = {
        "started_at": outcome.started_at.isoformat(),
        "finished_at": outcome.finished_at.isoformat(),
        "status": outcome.status,
        "details": details,
        "error": outcome.error,
    }
    try:
        locks = BackupLocks(config.daemon.state_dir)
        with locks.manifest_update(located.record.id, timeout=lock_timeout):
            if located.fetched_from is not None or not located.artifact.exists():
                return notes  # an off-site copy, or deleted meanwhile: no local manifest
            data = storage.read_manifest(located.manifest_path)
            data.setdefault("verifications", []).append(entry)
            storage.write_manifest_atomic(
                outcome.target,
                located.manifest_path.name,
                (json.dumps(data, indent=2) + "\n").encode(),
            )
    except (PgwardenError, OSError) as exc:
        log.error("cannot append the drill to the manifest", error=redact(str(exc)))
        notes.append(f"not recorded in the manifest: {redact(str(exc))}")
    return notes

"""The record of each target's last prune: ``<state_dir>/prune/<target>.json``.

The catalog keeps no prune history, yet a prune that fails (a file it cannot delete, a
directory it cannot write) must stay visible after its job is gone: ``pgwarden check`` reads
this record and shows a failed last prune (issue 16, item 7).  This module owns the record:
its shape (:class:`PruneRecord`), writing it atomically (a temporary file 0600 in the same
directory, fsync, rename, fsync of the directory; the directory 0700) and reading it back.

A dry run writes nothing.  The first error is redacted (:func:`pgwarden.redaction.redact`)
before it reaches the file.  A record that cannot be written is logged and never fails the
prune itself: the prune's own outcome already says what happened.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgwarden.catalog import Catalog
from pgwarden.config import TargetConfig
from pgwarden.errors import PgwardenError
from pgwarden.logsetup import get_logger
from pgwarden.redaction import redact
from pgwarden.retention.prune import PruneOutcome, prune_target
from pgwarden.storage import Storage
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.prune")

RECORD_DIR_NAME = "prune"
RECORD_VERSION = 1
_MAX_ERROR = 500  # characters of the first error kept


@dataclass(frozen=True)
class PruneRecord:
    """The last (non-dry) prune of one target: when it ran, whether it deleted everything its
    plan named, how many errors it had and the first of them (redacted)."""

    target: str
    at: datetime
    ok: bool
    errors: int
    first_error: str | None
    deleted: int

    def as_json(self) -> str:
        return json.dumps(
            {
                "version": RECORD_VERSION,
                "target": self.target,
                "at": self.at.isoformat(),
                "ok": self.ok,
                "errors": self.errors,
                "first_error": self.first_error,
                "deleted": self.deleted,
            }
        )


class PruneRecordError(PgwardenError):
    """A prune record that exists but cannot be read or understood."""


class PruneRecords:
    """The prune records of one pgwarden installation (``<state_dir>/prune/``)."""

    def __init__(self, state_dir: Path | str) -> None:
        self.directory = Path(state_dir) / RECORD_DIR_NAME

    def __repr__(self) -> str:
        return f"PruneRecords({str(self.directory)!r})"

    def path_for(self, target: str) -> Path:
        # a whole-server target's <target>/<database>: one flat file, '/' never in a target name
        return self.directory / f"{target.replace('/', '%')}.json"

    def write(
        self, target: str, at: datetime, *, errors: tuple[str, ...] = (), deleted: int = 0
    ) -> PruneRecord:
        """Record a prune of ``target`` that ended at ``at`` with ``errors``; never raises
        for the file (a failure is logged)."""
        first = redact(errors[0])[:_MAX_ERROR] if errors else None
        record = PruneRecord(target, at, not errors, len(errors), first, deleted)
        try:
            self._write_atomic(self.path_for(target), record.as_json().encode())
        except OSError as exc:
            log.error(
                "cannot write the prune record",
                target=target,
                path=str(self.path_for(target)),
                error=exc.strerror or str(exc),
            )
        return record

    def _write_atomic(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.directory)  # 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, target: str) -> PruneRecord | None:
        """The last prune of ``target``; ``None`` when it was never pruned (with a record)."""
        path = self.path_for(target)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise PruneRecordError(f"{path}: cannot read the prune record: {exc}") from exc
        try:
            first = doc["first_error"]
            return PruneRecord(
                target=str(doc["target"]),
                at=datetime.fromisoformat(doc["at"]),
                ok=bool(doc["ok"]),
                errors=int(doc["errors"]),
                first_error=None if first is None else str(first),
                deleted=int(doc["deleted"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PruneRecordError(f"{path}: not a prune record ({exc!r})") from exc


def recorded_prune(
    target: TargetConfig,
    catalog: Catalog,
    storage: Storage,
    *,
    dry_run: bool = False,
    locks: BackupLocks,
    records: PruneRecords,
) -> PruneOutcome:
    """:func:`~pgwarden.retention.prune.prune_target`, then (unless ``dry_run``) its record;
    a prune that raises (its storage unreadable, its catalog gone) is recorded as failed with
    that error, and the error goes on."""
    try:
        outcome = prune_target(target, catalog, storage, dry_run=dry_run, locks=locks)
    except (PgwardenError, OSError) as exc:
        if not dry_run:
            records.write(target.name, datetime.now(UTC), errors=(str(exc),))
        raise
    if not dry_run:
        records.write(
            target.name, datetime.now(UTC), errors=outcome.errors, deleted=outcome.deleted
        )
    return outcome

"""The ledger of a target's released migrations: ``<state_dir>/migrations/<target>.ledger``.

A migration is *released* once pgwarden has seen it applied to the target's database (its
revision is at or below the database's ``alembic_version``).  The ledger records, per file
name, the sha256 and revision it had then; the guard compares every later look against it, so
an edited or deleted released file is caught even though Alembic itself would not notice.
Entries are only ever added: the ledger is forward-only like the migrations it describes.

It also keeps the history of ``pgwarden migrate upgrade`` runs (revisions before and after,
the pre-migration backup, the outcome).

The file is JSON (``"version": 1``), written atomically (temporary file, fsync, rename, fsync
of the directory), mode 0600 in a 0700 directory.  Read-modify-write happens under an
exclusive ``flock`` on ``<target>.lock`` beside it (:meth:`LedgerStore.lock`), which an
upgrade holds for its whole run, so two upgrades of one target never overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.errors import BusyError, PgwardenError
from pgwarden.storage.base import check_target_name

__all__ = ["FORMAT_VERSION", "Ledger", "LedgerEntry", "LedgerError", "LedgerStore", "UpgradeRecord"]

FORMAT_VERSION = 1
DIR_NAME = "migrations"
_POLL_S = 0.05


class LedgerError(PgwardenError):
    """The ledger file exists but cannot be read or written."""

    code = "migration_ledger"


@dataclass(frozen=True)
class LedgerEntry:
    """A released migration file as pgwarden first saw it applied."""

    name: str
    sha256: str
    revision: str
    recorded_at: datetime


@dataclass(frozen=True)
class UpgradeRecord:
    """One ``pgwarden migrate upgrade`` run."""

    started_at: datetime
    status: str  # MigrateStatus.MIGRATED or .FAILED, as the ledger file spells it
    before: tuple[str, ...]
    after: tuple[str, ...]
    backup_id: str | None
    duration_s: float
    error: str | None = None


@dataclass(frozen=True)
class Ledger:
    target: str
    entries: Mapping[str, LedgerEntry] = field(default_factory=dict)
    upgrades: tuple[UpgradeRecord, ...] = ()

    def with_upgrade(self, record: UpgradeRecord) -> Ledger:
        return replace(self, upgrades=(*self.upgrades, record))

    def with_entries(self, new: list[LedgerEntry] | tuple[LedgerEntry, ...]) -> Ledger:
        """A copy with ``new`` added; an existing entry is never replaced."""
        merged = dict(self.entries)
        for entry in new:
            merged.setdefault(entry.name, entry)
        return replace(self, entries=dict(sorted(merged.items())))

    def to_json(self) -> bytes:
        doc = {
            "version": FORMAT_VERSION,
            "target": self.target,
            "files": [
                {
                    "name": e.name,
                    "sha256": e.sha256,
                    "revision": e.revision,
                    "recorded_at": e.recorded_at.isoformat(),
                }
                for e in self.entries.values()
            ],
            "upgrades": [
                {
                    "started_at": u.started_at.isoformat(),
                    "status": u.status,
                    "before": list(u.before),
                    "after": list(u.after),
                    "backup_id": u.backup_id,
                    "duration_s": round(u.duration_s, 3),
                    "error": u.error,
                }
                for u in self.upgrades
            ],
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, target: str) -> Ledger:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} pgwarden migration ledger")
        entries = {
            str(f["name"]): LedgerEntry(
                str(f["name"]), str(f["sha256"]), str(f["revision"]), _time(f["recorded_at"])
            )
            for f in doc["files"]
        }
        upgrades = tuple(
            UpgradeRecord(
                started_at=_time(u["started_at"]),
                status=str(u["status"]),
                before=tuple(u["before"]),
                after=tuple(u["after"]),
                backup_id=u.get("backup_id"),
                duration_s=float(u["duration_s"]),
                error=u.get("error"),
            )
            for u in doc.get("upgrades", [])
        )
        return cls(target, entries, upgrades)


def _time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class LedgerStore:
    """The ledger file and lock of one target under ``state_dir``."""

    def __init__(self, state_dir: Path, target: str) -> None:
        self.target = check_target_name(target)
        self.directory = state_dir / DIR_NAME
        self.path = self.directory / f"{target}.ledger"
        self.lock_path = self.directory / f"{target}.lock"

    def load(self) -> Ledger:
        """The ledger, or an empty one when pgwarden has not recorded anything yet."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Ledger(self.target)
        except OSError as exc:
            raise LedgerError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            return Ledger.from_json(data, self.target)
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"{self.path} is damaged ({exc}); it is pgwarden's record of released "
                "migrations: restore it from a copy rather than deleting it"
            ) from exc

    def save(self, ledger: Ledger) -> None:
        self._ensure_dir()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(ledger.to_json())
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LedgerError(f"cannot write {self.path}: {exc.strerror}") from exc

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create {self.directory}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def lock(self, *, timeout: float | None = 0.0) -> Iterator[None]:
        """Hold the target's migration lock; :class:`BusyError` after ``timeout`` seconds
        (``0``: do not wait, ``None``: wait for ever)."""
        self._ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        # EWOULDBLOCK is the answer, not a failure: nothing to chain
                        raise BusyError(
                            f"{self.target}: another pgwarden migrate is running for this "
                            f"target (lock {self.lock_path})"
                        ) from None
                    time.sleep(_POLL_S)
            yield
        finally:
            os.close(fd)

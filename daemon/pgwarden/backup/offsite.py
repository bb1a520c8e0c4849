"""Off-site copies, the upload side: a published local backup sent to each ``[[offsite]]``.

After the local publish, every local backup of a target that is not yet confirmed on a
destination is uploaded there (newest first): the artifact streamed from disk, through the age
stage when the destination encrypts, into an :class:`~pgwarden.storage.objects.ObjectStore`
upload; then the remote manifest (the local one plus an ``offsite`` section), last.  A copy is
confirmed only when both are stored; a failure is recorded and retried by the next run.  The
local backup never depends on the upload succeeding.

While a copy is sent the backup's *shared* lock is held (:class:`~pgwarden.storage.locks.
BackupLocks`): a prune cannot delete the local file under the upload.  The catalog row of the
copy (:mod:`pgwarden.catalog.offsite`) goes ``uploading`` -> ``confirmed``, or ``failed`` with
the redacted error.  A cancel (daemon shutdown) aborts the multipart upload (the ``Upload``
sink's ``with`` block) and raises :class:`OffsiteError`.  Which backups one run sends, and in
which order, is :mod:`pgwarden.backup.offsite_run`'s.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Event
from typing import Any, BinaryIO, cast

from pgwarden import logsetup
from pgwarden.archive import encrypt
from pgwarden.backup.offsite_sink import HashingReader, UploadWriter, copy_file
from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.catalog.offsite import CopyState, record_copy
from pgwarden.catalog.records import BackupRecord
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import OffsiteError, PgwardenError, describe, describe_unexpected
from pgwarden.storage import Storage, manifest_name
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectStore, PutResult

log = logsetup.get_logger("pgwarden.offsite")

#: how long an upload waits for a deletion (prune) holding the backup's lock
LOCK_TIMEOUT_S = 60.0
CANCELLED_MESSAGE = "cancelled: pgwarden is stopping"


class ArtifactChanged(OffsiteError):
    """The local artifact read for an upload does not match its manifest's sha256."""


@dataclass(frozen=True)
class CopyResult:
    """One backup sent (or not) to one destination."""

    backup_id: str
    target: str
    destination: str
    key: str
    ok: bool
    size_bytes: int  # the object's size (ciphertext when encrypted); 0 when it failed early
    object_sha256: str | None
    encrypted: bool
    duration_s: float
    error: str | None  # redacted
    local_fault: bool = False  # the local artifact failed its manifest: not the endpoint's fault


@dataclass(frozen=True)
class UploadOutcome:
    """Every copy a run attempted for one target, per destination."""

    target: str
    copies: tuple[CopyResult, ...]
    unreachable: tuple[str, ...] = ()  # destinations that could not be reached at all
    reasons: tuple[str, ...] = ()  # "destination: cause" for each unreachable one (redacted)

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(c.ok for c in self.copies)

    @property
    def uploaded_bytes(self) -> int:
        return sum(c.size_bytes for c in self.copies if c.ok)


def object_key(target: str, artifact: str, *, encrypted: bool) -> str:
    """The key of a backup's object, relative to the destination's prefix."""
    return f"{target}/{artifact}{encrypt.AGE_SUFFIX if encrypted else ''}"


def manifest_key(target: str, artifact: str) -> str:
    """The key of a backup's remote manifest (the artifact's name without ``.age``)."""
    return f"{target}/{manifest_name(artifact)}"


@dataclass(frozen=True)
class CopyRequest:
    """One (backup, destination) to send, and what it needs."""

    record: BackupRecord
    destination: OffsiteConfig
    store: ObjectStore
    catalog: Catalog
    storage: Storage
    locks: BackupLocks
    cancel: Event | None = None
    progress: Callable[[int], None] | None = None

    @property
    def encrypted(self) -> bool:
        return self.destination.encryption is not None

    @property
    def key(self) -> str:
        return object_key(self.record.target, self.record.path or "", encrypted=self.encrypted)

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def upload_backup(request: CopyRequest) -> CopyResult:
    """Send one backup to one destination; a failure is recorded and returned, not raised.

    A cancel raises :class:`OffsiteError` once the copy is recorded ``failed`` and its
    multipart upload aborted; anything no code path expected is recorded, then raised as is.
    """
    record, started = request.record, time.monotonic()
    if not record.path:
        raise OffsiteError(f"backup {record.short_id} has no artifact name")
    _record(request, CopyState.UPLOADING)
    try:
        put = _send(request)
    except BaseException as exc:
        cancelled = request.cancelled()
        expected = isinstance(exc, PgwardenError | OSError)
        error = describe(exc) if expected else describe_unexpected(exc)
        error = CANCELLED_MESSAGE if cancelled else error
        _record_failure(request, error)
        if cancelled:
            raise OffsiteError(f"{request.destination.name}: {error}") from exc
        if not expected:
            raise  # a bug or an unwrapped library error: the job boundary reports it
        log.warning("off-site upload failed", **_log_fields(request), error=error)
        return _result(request, started, None, error, local_fault=isinstance(exc, ArtifactChanged))
    _record(
        request,
        CopyState.CONFIRMED,
        size_bytes=put.size,
        object_sha256=put.sha256,
        uploaded_at=datetime.now(UTC),
    )
    result = _result(request, started, put, None)
    log.info(
        "off-site copy confirmed",
        **_log_fields(request),
        size_bytes=put.size,
        duration_s=round(result.duration_s, 3),
    )
    return result


def _log_fields(request: CopyRequest) -> dict[str, str]:
    return {
        "target": request.record.target,
        "destination": request.destination.name,
        "backup": request.record.short_id,
        "key": request.key,
    }


def _result(
    request: CopyRequest,
    started: float,
    put: PutResult | None,
    error: str | None,
    *,
    local_fault: bool = False,
) -> CopyResult:
    return CopyResult(
        request.record.id,
        request.record.target,
        request.destination.name,
        request.key,
        ok=put is not None,
        size_bytes=0 if put is None else put.size,
        object_sha256=None if put is None else put.sha256,
        encrypted=request.encrypted,
        duration_s=time.monotonic() - started,
        error=error,
        local_fault=local_fault,
    )


def _record(request: CopyRequest, state: CopyState, **facts: Any) -> None:
    record_copy(
        request.catalog,
        backup_id=request.record.id,
        destination=request.destination.name,
        key=request.key,
        state=state,
        encrypted=request.encrypted,
        **facts,
    )


def _record_failure(request: CopyRequest, error: str) -> None:
    try:
        _record(request, CopyState.FAILED, error=error)
    except PgwardenError as inner:
        log.error("cannot record the failed off-site copy", error=describe(inner))


def _send(request: CopyRequest) -> PutResult:
    """Under the backup's shared lock: the object, checked, then the remote manifest."""
    record = request.record
    with request.locks.shared(record.id, timeout=LOCK_TIMEOUT_S):
        current = request.catalog.get_backup(record.id)
        if current.status != BackupStatus.COMPLETE:
            raise OffsiteError(f"backup {record.short_id} is {current.status}; not uploaded")
        manifest_path = request.storage.target_dir(record.target) / manifest_name(record.path or "")
        manifest = request.storage.read_manifest(manifest_path)
        artifact = request.storage.artifact_for(manifest_path)
        if artifact.is_dir():
            raise OffsiteError(
                f"backup {record.short_id} is a directory archive: off-site copies need "
                'format custom or plain (use format = "custom")'
            )
        put = _send_object(request, artifact, manifest)
        request.store.put_small(
            manifest_key(record.target, record.path or ""),
            remote_manifest(manifest, request.destination, put),
        )
        return put


def _send_object(request: CopyRequest, artifact: Path, manifest: dict[str, Any]) -> PutResult:
    """Stream ``artifact`` (encrypted when the destination says) into one object; check it."""
    plain_size = artifact.stat().st_size
    encryption = request.destination.encryption
    expected = encrypt.encrypted_size(plain_size) if encryption else plain_size
    with (
        artifact.open("rb") as source,
        request.store.upload(
            request.key, expected_size=expected, cancel=request.cancel, progress=request.progress
        ) as upload,
    ):
        writer = UploadWriter(upload, request.cancel)
        if encryption is not None:
            reader = HashingReader(source, hashlib.sha256())
            encrypt.encrypt_stream(
                cast(BinaryIO, reader), cast(BinaryIO, writer), encryption.recipients
            )
            plain_sha = reader.digest.hexdigest()
        else:
            plain_sha = copy_file(source, writer, hashlib.sha256()).hexdigest()
        if request.cancelled():
            raise OffsiteError(CANCELLED_MESSAGE)
        _check_plain(request, plain_sha, manifest)  # before complete(): a refused copy is aborted
        put = upload.complete()
    _check_put(request, put, writer.written, plain_sha if encryption is None else None, manifest)
    return put


def _check_plain(request: CopyRequest, plain_sha: str, manifest: dict[str, Any]) -> None:
    """The artifact read (the plaintext, encrypted or not) is what the local manifest says."""
    want = manifest.get("sha256")
    if plain_sha != want:
        raise ArtifactChanged(
            f"{request.key}: checksum differs from the local manifest "
            f"(manifest {str(want)[:12]}, read {plain_sha[:12]}): the local artifact changed "
            "on disk; not uploaded"
        )


def _check_put(
    request: CopyRequest,
    put: PutResult,
    written: int,
    plain_sha: str | None,
    manifest: dict[str, Any],
) -> None:
    """The stored object is what was sent and, unencrypted, what the local manifest says."""
    if put.size != written:
        raise OffsiteError(
            f"{request.key}: the store holds {put.size} bytes but {written} were sent"
        )
    if plain_sha is None:
        return
    want = manifest.get("sha256")
    if plain_sha != want or put.sha256 != want:
        raise OffsiteError(
            f"{request.key}: checksum differs from the local manifest "
            f"(manifest {str(want)[:12]}, read {plain_sha[:12]}, stored {put.sha256[:12]}): "
            "the local artifact changed on disk"
        )


def remote_manifest(manifest: dict[str, Any], destination: OffsiteConfig, put: PutResult) -> bytes:
    """The local manifest plus the ``offsite`` section (never a key), as JSON bytes."""
    encryption: dict[str, Any] | None = None
    if destination.encryption is not None:
        encryption = {
            "scheme": encrypt.AGE_SCHEME,
            "recipients": [
                {"fingerprint": encrypt.recipient_fingerprint(r)}
                for r in destination.encryption.recipients
            ],
        }
    document = dict(manifest)
    document["offsite"] = {
        "destination": destination.name,
        "object": put.key,
        "object_size": put.size,
        "object_sha256": put.sha256,
        "checksum": str(put.checksum),
        "encryption": encryption,
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

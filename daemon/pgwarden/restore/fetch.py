"""Fetching an off-site copy into the restore spool: streamed, checksum first, decrypted.

A copy on a destination is described by its remote manifest
``<target>/<artifact>.manifest.json`` (keys relative to the destination's prefix): the local
manifest plus an ``offsite`` section (:class:`OffsiteFacts`) naming the object, its size and
SHA-256 and, when it is encrypted, the age recipients' fingerprints.  :func:`fetched` streams
the object (bounded memory: one chunk at a time) through the age stage when the copy is
encrypted into ``NAME.restore-<hex>.partial`` beside the local storage -- the restore spool's
name, so a crash leaves nothing the next command's reaper does not remove -- hashing the
object as it arrives and the decrypted artifact as it is written.  Both digests must match
their manifest before the file is handed on: nothing is restored from a copy whose object or
artifact is not exactly what was uploaded (a damaged object is reported as the checksum, even
when decryption noticed first).  The file is removed in every outcome.

Identities (age secret keys) come only from ``--identity FILE`` or a systemd credential
(``--identity-credential NAME``: ``$CREDENTIALS_DIRECTORY/NAME``); a copy encrypted without an
identity given, or to another key, fails before anything is downloaded or restored, naming
the recipients' fingerprints it needs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.archive.encrypt import (
    AGE_SCHEME,
    RecipientFacts,
    decrypt_stream,
    load_identities,
    load_identity_credential,
)
from pgwarden.archive.manifest import Manifest
from pgwarden.catalog.records import BackupRecord
from pgwarden.errors import (
    BackupError,
    CredentialError,
    InsufficientSpaceError,
    PgwardenError,
)
from pgwarden.restore.outcome import StepError
from pgwarden.restore.spool import SPOOL_SUFFIX, spool_floor
from pgwarden.storage import MANIFEST_SUFFIX
from pgwarden.storage.objects import ObjectStore

CHUNK = 1 << 20


@dataclass(frozen=True)
class OffsiteFacts:
    """A remote manifest's ``offsite`` section."""

    destination: str
    key: str  # the object, relative to the destination's prefix
    size: int
    sha256: str
    checksum: str | None
    scheme: str | None  # "age-v1", or None when the object is the local artifact as is
    recipients: tuple[RecipientFacts, ...]

    @property
    def encrypted(self) -> bool:
        return self.scheme is not None

    def fingerprints(self) -> str:
        return ", ".join(r.fingerprint for r in self.recipients) or "(none recorded)"


@dataclass(frozen=True)
class RemoteCopy:
    """One backup's copy on one destination, its remote manifest read."""

    record: BackupRecord
    manifest: Manifest
    offsite: OffsiteFacts
    location: str  # the destination's s3://bucket/prefix, never a credential

    @property
    def artifact(self) -> str:
        return self.manifest_key.rsplit("/", 1)[-1].removesuffix(MANIFEST_SUFFIX)

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.record.target, self.manifest.path)

    def describe(self) -> str:
        return f"{self.offsite.destination} (object {self.offsite.key} in {self.location})"


def manifest_key(target: str, artifact: str) -> str:
    """The remote manifest's key of ``artifact`` (the local name, never ``.age``)."""
    return f"{target}/{artifact}{MANIFEST_SUFFIX}"


def _text(section: Mapping[str, Any], key: str, where: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise BackupError(f"{where}: offsite.{key}: must be a non-empty string (got {value!r})")
    return value


def read_offsite_facts(data: Mapping[str, Any], where: str) -> OffsiteFacts:
    """The ``offsite`` section of a remote manifest; :class:`BackupError` names a bad key."""
    section = data.get("offsite")
    if not isinstance(section, Mapping):
        raise BackupError(f"{where}: offsite: missing (not a remote manifest pgwarden wrote)")
    size = section.get("object_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BackupError(f"{where}: offsite.object_size: must be an integer >= 0 (got {size!r})")
    encryption = section.get("encryption")
    scheme: str | None = None
    recipients: list[RecipientFacts] = []
    if encryption is not None:
        if not isinstance(encryption, Mapping):
            raise BackupError(f"{where}: offsite.encryption: must be an object or null")
        scheme = _text(encryption, "scheme", f"{where}: offsite.encryption")
        if scheme != AGE_SCHEME:
            raise BackupError(
                f"{where}: offsite.encryption.scheme: {scheme!r} is not supported "
                f"(only {AGE_SCHEME})"
            )
        for item in encryption.get("recipients") or ():
            if isinstance(item, Mapping) and isinstance(item.get("fingerprint"), str):
                recipients.append(RecipientFacts(item["fingerprint"]))
    checksum = section.get("checksum")
    return OffsiteFacts(
        destination=_text(section, "destination", where),
        key=_text(section, "object", where),
        size=size,
        sha256=_text(section, "object_sha256", where),
        checksum=checksum if isinstance(checksum, str) else None,
        scheme=scheme,
        recipients=tuple(recipients),
    )


def identities_for(
    copy: RemoteCopy, path: Path | None, credential: str | None
) -> tuple[object, ...]:
    """The identities that decrypt ``copy`` (none when it is not encrypted), from the file
    ``path`` or the systemd credential ``credential``; a missing identity fails here, before
    anything is downloaded, naming the recipients needed."""
    if path is not None and credential is not None:
        raise CredentialError("give either --identity or --identity-credential, not both")
    if not copy.offsite.encrypted:
        return ()
    if path is not None:
        return load_identities(path)
    if credential is not None:
        return load_identity_credential(credential)
    raise CredentialError(
        f"backup {copy.record.short_id} on {copy.offsite.destination} is encrypted (age) to "
        f"recipient(s) {copy.offsite.fingerprints()}: give the matching identity with "
        "--identity FILE or --identity-credential NAME"
    )


class _ObjectReader(io.RawIOBase):
    """The object's bytes as they arrive, hashed and counted; a set ``cancel`` stops it."""

    def __init__(self, stream: Any, cancel: threading.Event | None) -> None:
        self._stream = stream
        self._cancel = cancel
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise StepError("cancelled", "the download was cancelled")
        view = memoryview(buffer).cast("B")
        data = self._stream.read(min(len(view), CHUNK))
        view[: len(data)] = data
        self.digest.update(data)
        self.count += len(data)
        return len(data)

    def drain(self) -> None:
        """Read (and hash) what is left, so the object's digest covers all of it."""
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            pass


class _ArtifactWriter(io.RawIOBase):
    """The decrypted artifact, written to the spool file and hashed."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path
        self.digest = hashlib.sha256()
        self.count = 0
        self.failed = False  # a write failed (the disk, not the object)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            self.failed = True
            raise BackupError(f"cannot write the spool file {self._path}: {exc.strerror}") from exc
        self.count += done
        return done


def _check_space(directory: Path, needed: int) -> None:
    free = os.statvfs(directory)
    available = free.f_bavail * free.f_frsize
    if available - needed < spool_floor(directory):
        raise InsufficientSpaceError(directory, needed + spool_floor(directory), available)


def _verify(copy: RemoteCopy, reader: _ObjectReader, writer: _ArtifactWriter) -> None:
    expected, actual = copy.offsite.sha256, reader.digest.hexdigest()
    if actual != expected or reader.count != copy.offsite.size:
        raise StepError(
            "checksum",
            f"the object {copy.describe()} is not what was uploaded: sha256 {actual[:16]}... "
            f"({reader.count} bytes), its manifest says {expected[:16]}... "
            f"({copy.offsite.size} bytes); nothing was restored",
            expected=expected,
            actual=actual,
        )
    expected, actual = copy.manifest.sha256, writer.digest.hexdigest()
    if actual != expected or writer.count != copy.manifest.size_bytes:
        raise StepError(
            "checksum",
            f"the artifact fetched from {copy.offsite.destination} does not match its manifest: "
            f"sha256 {actual[:16]}..., expected {expected[:16]}...; nothing was restored",
            expected=expected,
            actual=actual,
        )


def _download(
    copy: RemoteCopy,
    store: ObjectStore,
    spool: tuple[int, Path],
    identities: tuple[object, ...],
    cancel: threading.Event | None,
) -> None:
    writer = _ArtifactWriter(*spool)
    stream = store.open_read(copy.offsite.key)
    try:
        reader = _ObjectReader(stream, cancel)
        try:
            if copy.offsite.encrypted:
                decrypt_stream(
                    reader,  # type: ignore[arg-type]
                    writer,  # type: ignore[arg-type]
                    identities,
                    needed=copy.offsite.recipients,
                )
            else:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
            reader.drain()
        except CredentialError:
            raise  # the header named other recipients: the object's bytes are not in question
        except (PgwardenError, ValueError, OSError) as exc:
            if writer.failed or (isinstance(exc, StepError) and exc.step == "cancelled"):
                raise
            reader.drain()  # a damaged object is reported as the checksum it fails
            _verify(copy, reader, writer)
            raise
    finally:
        stream.close()
    _verify(copy, reader, writer)


@contextmanager
def fetched(
    copy: RemoteCopy,
    store: ObjectStore,
    spool_dir: Path,
    identities: tuple[object, ...],
    cancel: threading.Event | None = None,
) -> Iterator[Path]:
    """The copy's artifact as a private file in ``spool_dir``, both digests checked; removed
    when the block ends, whatever happens.  The caller holds the backup's shared lock."""
    _check_space(spool_dir, copy.manifest.size_bytes)  # the object itself is not stored
    path = spool_dir / f"{copy.manifest.path}.restore-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot create the spool file {path}: {exc.strerror}") from exc
    try:
        try:
            _download(copy, store, (fd, path), identities, cancel)
        finally:
            os.close(fd)
        yield path
    finally:
        path.unlink(missing_ok=True)


def json_object(data: bytes, where: str) -> dict[str, Any]:
    """A remote manifest's JSON object; :class:`BackupError` when it is not one."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{where}: the manifest is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise BackupError(f"{where}: the manifest is not a JSON object")
    return parsed

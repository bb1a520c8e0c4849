"""The S3 (and S3-compatible) :class:`~pgwarden.storage.objects.ObjectStore`, with boto3.

One :class:`S3ObjectStore` per ``[[offsite]]`` destination and run: its client
(:mod:`pgwarden.storage.s3client`: timeouts, standard retries, explicit keys) and the bucket
and prefix every relative key is joined to.  Uploads are :class:`~pgwarden.storage.s3upload.S3Upload`
sinks; reads stream the body in 1 MiB chunks (never a whole object in memory, except
:meth:`get_small`).  Listings follow every page (``ListObjectsV2``, 1,000 keys a page).

Deleting on a versioned bucket (Backblaze B2 keeps every version; S3, R2 and MinIO when
versioning is on) removes every version and delete marker of that exact key, so the space is
really freed; on an unversioned bucket it is one ``DeleteObject``.  Every botocore failure
becomes an :class:`~pgwarden.errors.OffsiteError` naming the operation, the bucket and key and
the S3 error code, never a key or secret.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from threading import Event
from typing import TYPE_CHECKING, BinaryIO, cast

from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import OffsiteError
from pgwarden.storage.objects import ObjectInfo, ObjectStore, ProbeResult, PutResult, Upload
from pgwarden.storage.s3client import (
    S3_ERRORS,
    Conn,
    ErrorWords,
    Guard,
    build_client,
    endpoint_host,
    is_not_found,
    resolve_keys,
)
from pgwarden.storage.s3upload import S3Upload, choose_part_size, head_checked, put_verified

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

CHUNK = 1024 * 1024
PROBE_PREFIX = ".pgwarden-probe-"
#: versions deleted per DeleteObjects request (S3's limit is 1,000)
DELETE_BATCH = 1000


class S3ObjectStore(ObjectStore):
    """See the module docstring."""

    def __init__(self, offsite: OffsiteConfig) -> None:
        keys = resolve_keys(offsite)
        client = build_client(offsite, keys)
        host = endpoint_host(offsite.endpoint_url)
        location = f"s3://{offsite.bucket}/{offsite.prefix}".rstrip("/")
        self._offsite = offsite
        self._conn = Conn(
            client=client,
            bucket=offsite.bucket,
            prefix=offsite.prefix,
            location=f"{location} ({host})" if host else location,
            words=ErrorWords(offsite, keys),
            guard=Guard(client),
            stall_timeout=offsite.stall_timeout,
        )
        self._versioning: str | bool | None = False  # False: not asked yet

    @property
    def location(self) -> str:
        return self._conn.location

    @property
    def client(self) -> object:
        """The boto3 client (for tests reading its resolved credentials)."""
        return self._conn.client

    # -- writing ---------------------------------------------------------------------------

    def upload(
        self,
        key: str,
        *,
        expected_size: int,
        cancel: Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Upload:
        part_size = choose_part_size(expected_size, self._offsite.part_size)
        return S3Upload(
            self._conn,
            key,
            part_size=part_size,
            mode=self._offsite.checksum,
            cancel=cancel,
            progress=progress,
        )

    def put_small(self, key: str, data: bytes) -> PutResult:
        with self.upload(key, expected_size=len(data)) as sink:
            sink.write(data)
            return sink.complete()

    # -- reading ---------------------------------------------------------------------------

    def get_small(self, key: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        with self._call("get", key):
            answer = self._conn.client.get_object(Bucket=self._conn.bucket, Key=self._full(key))
            body = answer["Body"]
            try:
                if answer["ContentLength"] > max_bytes:
                    raise OffsiteError(
                        f"get {self._where(key)}: {answer['ContentLength']} bytes, more than "
                        f"the {max_bytes} expected of a manifest"
                    )
                return body.read()
            finally:
                body.close()

    def download(
        self,
        key: str,
        sink: BinaryIO,
        *,
        cancel: Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        total = 0
        with self._call("download", key, cancel):
            body = self._conn.client.get_object(Bucket=self._conn.bucket, Key=self._full(key))[
                "Body"
            ]
            try:
                for chunk in body.iter_chunks(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise OffsiteError(f"download {self._where(key)} cancelled")
                    sink.write(chunk)
                    total += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            finally:
                body.close()
        return total

    def open_read(self, key: str) -> BinaryIO:
        with self._call("open", key):
            body = self._conn.client.get_object(Bucket=self._conn.bucket, Key=self._full(key))[
                "Body"
            ]
        raw = _BodyReader(body, self._conn.words, self._where(key))
        return cast(BinaryIO, io.BufferedReader(raw, CHUNK))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, page after page, in S3's key order (sorted)."""
        paginator = self._conn.client.get_paginator("list_objects_v2")
        skip = len(self._conn.prefix)
        pages = iter(paginator.paginate(Bucket=self._conn.bucket, Prefix=self._full(prefix)))
        while True:
            with self._call("list", prefix + "*"):  # not held across the yields
                page = next(pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"][skip:],
                    size=item["Size"],
                    modified=item["LastModified"].astimezone(UTC),
                    etag=item["ETag"].strip('"'),
                )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._conn.guard.limits(self._conn.stall_timeout, None):
                answer = self._conn.client.head_object(
                    Bucket=self._conn.bucket, Key=self._full(key)
                )
        except S3_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise self._conn.words.error("head", exc, key) from exc
        return ObjectInfo(
            key=key,
            size=answer["ContentLength"],
            modified=answer["LastModified"].astimezone(UTC),
            etag=answer["ETag"].strip('"'),
        )

    # -- deleting --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        if self.versioning() is None:
            with self._call("delete", key):
                self._conn.client.delete_object(Bucket=self._conn.bucket, Key=self._full(key))
            return
        full = self._full(key)
        paginator = self._conn.client.get_paginator("list_object_versions")
        doomed: list[ObjectIdentifierTypeDef] = []
        with self._call("delete every version of", key):
            for page in paginator.paginate(Bucket=self._conn.bucket, Prefix=full):
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if entry.get("Key") == full and entry.get("VersionId"):
                        doomed.append({"Key": full, "VersionId": entry["VersionId"]})
            for start in range(0, len(doomed), DELETE_BATCH):
                batch = doomed[start : start + DELETE_BATCH]
                answer = self._conn.client.delete_objects(
                    Bucket=self._conn.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                for error in answer.get("Errors", []):
                    raise OffsiteError(
                        f"delete {self._where(key)} version {error.get('VersionId')}: "
                        f"{error.get('Code')}: {error.get('Message')}"
                    )

    def abort_stale_uploads(self, prefix: str = "", older_than: timedelta | None = None) -> int:
        """Abort open multipart uploads directly under ``prefix`` (a deeper key is another
        host's prefix), started before ``older_than`` ago when given (a concurrent writer's
        upload is left alone)."""
        cutoff = datetime.now(UTC) - older_than if older_than is not None else None
        paginator = self._conn.client.get_paginator("list_multipart_uploads")
        full = self._full(prefix)
        count = 0
        with self._call("abort stale uploads under", prefix + "*"):
            for page in paginator.paginate(Bucket=self._conn.bucket, Prefix=full):
                for upload in page.get("Uploads", []):
                    if "/" in upload["Key"][len(full) :]:
                        continue
                    if cutoff is not None and upload["Initiated"] > cutoff:
                        continue
                    self._conn.client.abort_multipart_upload(
                        Bucket=self._conn.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    count += 1
        return count

    # -- checks ----------------------------------------------------------------------------

    def versioning(self) -> str | None:
        """The bucket's versioning status (``None``: never enabled), asked once per store."""
        if self._versioning is False:
            with self._call("get versioning of", ""):
                status = self._conn.client.get_bucket_versioning(Bucket=self._conn.bucket)
            self._versioning = status.get("Status") or None
        return cast("str | None", self._versioning)

    def probe(self) -> ProbeResult:
        key = PROBE_PREFIX + secrets.token_hex(8)
        data = b"pgwarden probe " + secrets.token_bytes(16)
        try:
            self.put_small(key, data)
            try:
                if self.get_small(key) != data:
                    raise OffsiteError(f"read back {self._where(key)}: different bytes")
            finally:
                self.delete(key)
            return ProbeResult(writable=True, versioning=self.versioning(), error=None)
        except OffsiteError as exc:
            return ProbeResult(writable=False, versioning=None, error=str(exc))

    def confirm(self, key: str) -> tuple[int, str | None]:
        """The stored size and SHA-256 checksum of ``key`` (raises if it is missing)."""
        head = head_checked(self._conn, key, None)
        return head.size, head.checksum

    # -- helpers ---------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self._conn.prefix + key

    def _where(self, key: str) -> str:
        return f"s3://{self._conn.bucket}/{self._full(key)}"

    def _call(self, operation: str, key: str, cancel: Event | None = None) -> _Call:
        return _Call(self._conn, operation, key, cancel)


class _Call:
    """``with`` block: the guard's limits, and botocore errors as :class:`OffsiteError`."""

    def __init__(self, conn: Conn, operation: str, key: str, cancel: Event | None) -> None:
        self._conn, self._operation, self._key = conn, operation, key
        self._limits = conn.guard.limits(conn.stall_timeout, cancel)

    def __enter__(self) -> None:
        self._limits.__enter__()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._limits.__exit__(None, None, None)
        if exc is not None and isinstance(exc, S3_ERRORS):
            raise self._conn.words.error(self._operation, exc, self._key) from exc


class _BodyReader(io.RawIOBase):
    """A raw stream over a ``StreamingBody``, its errors as :class:`OffsiteError`."""

    def __init__(self, body: object, words: ErrorWords, where: str) -> None:
        self._body = body
        self._words = words
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data: bytes = self._body.read(len(buffer))  # type: ignore[attr-defined]
        except S3_ERRORS as exc:
            raise OffsiteError(f"read {self._where}: {self._words.text(exc)}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()  # type: ignore[attr-defined]
        super().close()


__all__ = ["S3ObjectStore", "put_verified"]

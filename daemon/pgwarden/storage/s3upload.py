"""Writing one S3 object: the multipart :class:`S3Upload` sink and its proof of integrity.

**Bounded memory.** The sink owns one ``bytearray`` of exactly ``part_size`` bytes, reused for
every part: a part is sent when the buffer is full *and* more bytes arrive, so every part has
the same size except the last (R2 refuses anything else), and an object no larger than one part
is a single ``PutObject``.  Writes block while a part is on the wire.

**Proof.** With ``checksum = "sha256"`` or ``"auto"`` the upload is created with
``ChecksumAlgorithm=SHA256`` and every part carries its ``x-amz-checksum-sha256``: the server
refuses a part whose bytes differ.  After ``CompleteMultipartUpload`` the object's composite
checksum (``base64(sha256(part digests))-N``, read back with ``HeadObject ChecksumMode=ENABLED``)
is compared with the one computed here.  ``"auto"`` also sends ``Content-MD5`` per part so that a
provider without additional checksums is still checked: it falls back to the multipart ETag
(``md5(part md5s)-N``), and to MD5 only when the provider refuses SHA-256 outright;
``"md5"`` forces that path.  The whole object's sha256 is computed in passing.

**No orphans.** An exception, a set ``cancel`` event or leaving the ``with`` block without
:meth:`S3Upload.complete` aborts the multipart upload (best effort, logged, never masking the
first error).  Every call has the client's timeout; ``stall_timeout`` bounds one part's
transfer including botocore's retries (checked before every HTTP send).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from threading import Event
from typing import TYPE_CHECKING, cast

from pgwarden.errors import OffsiteError
from pgwarden.logsetup import get_logger
from pgwarden.storage.objects import ChecksumMode, PutResult, Upload
from pgwarden.storage.s3client import S3_ERRORS, Conn, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024**2
#: S3 allows 10,000 parts; the chosen size keeps an estimate's upload under this many
PART_BUDGET = 9_000
MAX_PARTS = 10_000
MIN_AUTO_PART = 8 * MIB
MAX_PART = 5 * 1024**3
#: error codes with which a provider refuses S3 additional checksums ("auto" then uses MD5)
CHECKSUM_REFUSED = frozenset(
    {"NotImplemented", "InvalidRequest", "InvalidArgument", "UnsupportedArgument", "BadRequest"}
)

log = get_logger("pgwarden.offsite")


def choose_part_size(expected_size: int, configured: int | None) -> int:
    """The smallest whole MiB keeping ``expected_size`` within :data:`PART_BUDGET` parts, at
    least ``configured`` (a floor: an artifact grown past ``configured * 10,000`` bytes must
    not hit S3's part cap) or else 8 MiB, and at most 5 GiB."""
    needed = -(-max(expected_size, 1) // PART_BUDGET)
    size = -(-needed // MIB) * MIB
    return min(max(size, configured or MIN_AUTO_PART), MAX_PART)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Upload(Upload):
    """See the module docstring.  ``mode`` is the destination's ``checksum`` setting."""

    def __init__(
        self,
        conn: Conn,
        key: str,
        *,
        part_size: int,
        mode: str,
        cancel: Event | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._conn = conn
        self._key = key
        self._full_key = conn.prefix + key
        self._part_size = part_size
        self._sha_parts = mode in ("auto", "sha256") and not conn.sha256_refused
        self._md5_parts = mode in ("auto", "md5")
        self._mode = mode
        self._cancel = cancel
        self._progress = progress
        # grows while the first part is gathered, then is reused in place: a small artifact
        # touches only what it fills, and no part_size of zeroes is written holding the GIL
        self._buf = bytearray()
        self._fill = 0
        self._size = 0
        self._whole = hashlib.sha256()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._part_sha: list[bytes] = []
        self._part_md5: list[bytes] = []
        self._state = "open"

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._fill == self._part_size:
                self._flush_part()
            room = self._part_size - self._fill
            chunk = view[:room]
            self._buf[self._fill : self._fill + len(chunk)] = chunk
            self._fill += len(chunk)
            view = view[len(chunk) :]
        return total

    def complete(self) -> PutResult:
        self._check_open()
        try:
            result = self._put_single() if self._upload_id is None else self._finish_multipart()
        except BaseException:
            self.abort()
            raise
        self._state = "done"
        self._buf = bytearray()
        return result

    def abort(self) -> None:
        """Abort the multipart upload if one is open (best effort); a no-op once finished."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buf = bytearray()
        if self._upload_id is None:
            return
        try:
            self._conn.client.abort_multipart_upload(
                Bucket=self._conn.bucket, Key=self._full_key, UploadId=self._upload_id
            )
        except S3_ERRORS as exc:
            log.warning(
                "offsite_abort_failed",
                location=self._conn.location,
                key=self._full_key,
                error=self._conn.words.text(exc),
                hint="the bucket's lifecycle rule or the next run's abort_stale_uploads cleans it",
            )

    # -- parts -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise OffsiteError(f"upload of {self._full_key} is already {self._state}")
        if self._cancel is not None and self._cancel.is_set():
            raise OffsiteError(f"upload of {self._full_key} cancelled")

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._create()
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OffsiteError(
                f"upload of {self._full_key}: more than {MAX_PARTS} parts of {self._part_size} "
                "bytes (the artifact is far larger than expected; set a larger part_size)"
            )
        body = self._buf if self._fill == self._part_size else self._buf[: self._fill]
        sha = hashlib.sha256(body).digest()
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        self._whole.update(body)
        extra: dict[str, str] = {}
        if self._sha_parts:
            extra["ChecksumSHA256"] = b64(sha)
        if self._md5_parts:
            extra["ContentMD5"] = b64(md5)
        with self._conn.guard.limits(self._conn.stall_timeout, self._cancel):
            try:
                answer = self._conn.client.upload_part(
                    Bucket=self._conn.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=cast(bytes, body),  # a bytearray is sent as is (no copy)
                    ContentLength=self._fill,
                    **extra,  # type: ignore[arg-type]
                )
            except S3_ERRORS as exc:
                raise self._conn.words.error(f"upload part {number} of", exc, self._key) from exc
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": answer["ETag"]}
        if self._sha_parts:
            part["ChecksumSHA256"] = b64(sha)
        self._parts.append(part)
        self._part_sha.append(sha)
        self._part_md5.append(md5)
        self._size += self._fill
        if self._progress is not None:
            self._progress(self._fill)
        self._fill = 0

    def _create(self) -> str:
        client, bucket = self._conn.client, self._conn.bucket
        with self._conn.guard.limits(self._conn.stall_timeout, self._cancel):
            try:
                if self._sha_parts:
                    try:
                        answer = client.create_multipart_upload(
                            Bucket=bucket, Key=self._full_key, ChecksumAlgorithm="SHA256"
                        )
                        return answer["UploadId"]
                    except S3_ERRORS as exc:
                        if self._mode != "auto" or error_code(exc) not in CHECKSUM_REFUSED:
                            raise
                        self._refuse_sha256(exc)
                return client.create_multipart_upload(Bucket=bucket, Key=self._full_key)["UploadId"]
            except S3_ERRORS as exc:
                raise self._conn.words.error("start multipart upload of", exc, self._key) from exc

    def _refuse_sha256(self, exc: BaseException) -> None:
        log.info(
            "offsite_checksum_fallback",
            location=self._conn.location,
            reason=self._conn.words.text(exc),
            using=ChecksumMode.MD5_ETAG.value,
        )
        self._conn.sha256_refused = True
        self._sha_parts = False

    # -- finishing -------------------------------------------------------------------------

    def _finish_multipart(self) -> PutResult:
        self._flush_part()
        assert self._upload_id is not None
        with self._conn.guard.limits(self._conn.stall_timeout, self._cancel):
            try:
                answer = self._conn.client.complete_multipart_upload(
                    Bucket=self._conn.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
            except S3_ERRORS as exc:
                raise self._conn.words.error(
                    "complete multipart upload of", exc, self._key
                ) from exc
        count = len(self._parts)
        composite = b64(hashlib.sha256(b"".join(self._part_sha)).digest())
        etag = hashlib.md5(b"".join(self._part_md5), usedforsecurity=False).hexdigest()
        checksum = self._confirm(
            answer.get("ChecksumSHA256"), f"{composite}-{count}", composite, f"{etag}-{count}"
        )
        return self._result(count, checksum, answer.get("VersionId"))

    def _put_single(self) -> PutResult:
        body = self._buf[: self._fill]
        self._whole.update(body)
        self._size = self._fill
        sha = hashlib.sha256(body).digest()
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        answer = put_verified(
            self._conn, self._key, body, sha, md5, self._sha_parts, self._md5_parts, self._cancel
        )
        if self._progress is not None:
            self._progress(self._fill)
        if not answer.sha_sent:
            self._sha_parts = False
        checksum = self._confirm(answer.checksum, b64(sha), b64(sha), md5.hex())
        return self._result(1, checksum, answer.version_id)

    def _confirm(
        self, answered: str | None, sha_expected: str, sha_alt: str, etag_expected: str
    ) -> ChecksumMode:
        """Check the stored object against what was sent; the mode that proved it."""
        info = head_checked(self._conn, self._key, self._cancel)
        stored_sha = answered or info.checksum
        if info.size != self._size:
            self._fail(f"stored size {info.size} != {self._size} bytes sent")
        if self._sha_parts and stored_sha:
            if stored_sha not in (sha_expected, sha_alt):
                self._fail(f"stored SHA-256 checksum {stored_sha} != {sha_expected} sent")
            return ChecksumMode.SHA256_COMPOSITE
        if self._mode == "sha256":
            self._fail('the provider confirmed no SHA-256 checksum (use checksum = "auto")')
        if info.etag != etag_expected:
            self._fail(f"stored ETag {info.etag} != {etag_expected} (MD5 of what was sent)")
        return ChecksumMode.MD5_ETAG

    def _fail(self, why: str) -> None:
        with contextlib.suppress(*S3_ERRORS):  # the copy is not confirmed either way
            self._conn.client.delete_object(Bucket=self._conn.bucket, Key=self._full_key)
        raise OffsiteError(f"upload of {self._conn.location}/{self._key} not confirmed: {why}")

    def _result(self, parts: int, checksum: ChecksumMode, version_id: str | None) -> PutResult:
        return PutResult(
            key=self._key,
            size=self._size,
            sha256=self._whole.hexdigest(),
            parts=parts,
            part_size=self._part_size,
            checksum=checksum,
            version_id=None if version_id in (None, "null") else version_id,
        )


@dataclass(frozen=True)
class PutAnswer:
    checksum: str | None  # the SHA-256 the server echoed, if any
    version_id: str | None
    sha_sent: bool


def put_verified(
    conn: Conn,
    key: str,
    body: bytes | bytearray,
    sha: bytes,
    md5: bytes,
    send_sha: bool,
    send_md5: bool,
    cancel: Event | None,
) -> PutAnswer:
    """One ``PutObject`` carrying the checksums asked for (the server refuses other bytes); in
    ``auto`` a refused SHA-256 header is retried with MD5 only."""
    while True:
        extra: dict[str, str] = {}
        if send_sha and not conn.sha256_refused:
            extra["ChecksumAlgorithm"] = "SHA256"  # some servers store the value only with it
            extra["ChecksumSHA256"] = b64(sha)
        if send_md5:
            extra["ContentMD5"] = b64(md5)
        with conn.guard.limits(conn.stall_timeout, cancel):
            try:
                answer = conn.client.put_object(
                    Bucket=conn.bucket,
                    Key=conn.prefix + key,
                    Body=cast(bytes, body),  # a bytearray is sent as is (no copy)
                    ContentLength=len(body),
                    **extra,  # type: ignore[arg-type]
                )
            except S3_ERRORS as exc:
                refused = "ChecksumSHA256" in extra and error_code(exc) in CHECKSUM_REFUSED
                if refused and send_md5:
                    conn.sha256_refused = True
                    continue
                raise conn.words.error("put", exc, key) from exc
        return PutAnswer(
            answer.get("ChecksumSHA256"), answer.get("VersionId"), "ChecksumSHA256" in extra
        )


@dataclass(frozen=True)
class StoredHead:
    size: int
    etag: str  # without quotes
    checksum: str | None  # SHA-256 (composite: may end in -N)


def head_checked(conn: Conn, key: str, cancel: Event | None) -> StoredHead:
    """The stored object's size, ETag and SHA-256 checksum (``ChecksumMode=ENABLED``)."""
    with conn.guard.limits(conn.stall_timeout, cancel):
        try:
            head = conn.client.head_object(
                Bucket=conn.bucket, Key=conn.prefix + key, ChecksumMode="ENABLED"
            )
        except S3_ERRORS as exc:
            raise conn.words.error("confirm (head)", exc, key) from exc
    return StoredHead(head["ContentLength"], head["ETag"].strip('"'), head.get("ChecksumSHA256"))

"""The boto3 S3 client for one ``[[offsite]]`` destination, and S3 failures as :class:`OffsiteError`.

:func:`build_client` owns how pgwarden talks to a provider: ``connect_timeout`` and
``read_timeout`` = ``timeout`` on every call; botocore's *standard* retry mode with
``retries + 1`` attempts, which retries throttling, 5xx and connection errors only, with
exponential backoff and jitter; checksums only when pgwarden sends them
(``request_checksum_calculation = "when_required"``: boto3's default CRC32 on every request is
refused by several S3 compatibles, and pgwarden computes SHA-256 / MD5 itself).  Keys are
resolved from their :class:`~pgwarden.config.offsite.SecretSource` and handed to the client
explicitly; none configured means boto3's default chain.

:class:`ErrorWords` turns a ``ClientError`` / ``BotoCoreError`` into one line naming the
operation, the bucket and key and the S3 error code, with the destination's keys scrubbed and
URL user info redacted (botocore's texts hold the endpoint URL, never the signing key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from pgwarden.config.offsite import OffsiteConfig
from pgwarden.config.secretfiles import resolve_secret
from pgwarden.errors import OffsiteError
from pgwarden.redaction import Secret, redact, scrubber_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

AddressingStyle = Literal["auto", "virtual", "path"]
#: what botocore raises for a failed call; everything else is a bug and passes through
S3_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
#: S3 error codes meaning "this key / bucket is not there"
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})


@dataclass(frozen=True)
class Keys:
    """The resolved key pair (both ``None``: boto3's default chain)."""

    access_key_id: Secret | None
    secret_access_key: Secret | None


def resolve_keys(offsite: OffsiteConfig) -> Keys:
    """The destination's keys, read now from their sources (a rotated file is picked up);
    :class:`~pgwarden.errors.CredentialError` names a missing variable or unreadable file."""
    what = f"offsite[{offsite.name}]"
    key_id = resolve_secret(offsite.access_key_id, f"{what}.access_key_id")
    secret = resolve_secret(offsite.secret_access_key, f"{what}.secret_access_key")
    if (key_id is None) != (secret is None):
        missing = "secret_access_key" if secret is None else "access_key_id"
        raise OffsiteError(f"{what}: {missing} is not configured (set both keys, or neither)")
    return Keys(key_id, secret)


def build_client(offsite: OffsiteConfig, keys: Keys) -> S3Client:
    """A boto3 S3 client for ``offsite`` with its timeouts, retries and addressing style."""
    config = BotoConfig(
        connect_timeout=offsite.timeout,
        read_timeout=offsite.timeout,
        retries={"mode": "standard", "max_attempts": offsite.retries + 1},
        s3={"addressing_style": cast(AddressingStyle, offsite.addressing_style)},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=offsite.endpoint_url,
        region_name=offsite.region,
        aws_access_key_id=keys.access_key_id.reveal() if keys.access_key_id else None,
        aws_secret_access_key=keys.secret_access_key.reveal() if keys.secret_access_key else None,
        config=config,
    )


def endpoint_host(endpoint_url: str | None) -> str | None:
    """``host[:port]`` of a custom endpoint (never its user info), ``None`` for AWS."""
    if not endpoint_url:
        return None
    parts = urlsplit(endpoint_url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``NoSuchBucket``, ``404``...), else ``None``."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


class ErrorWords:
    """Builds :class:`OffsiteError` messages for one destination, secrets scrubbed."""

    def __init__(self, offsite: OffsiteConfig, keys: Keys) -> None:
        self.bucket = offsite.bucket
        self.prefix = offsite.prefix
        self._scrub: Callable[[str], str] = scrubber_for(
            [keys.access_key_id, keys.secret_access_key]
        )

    def text(self, exc: BaseException) -> str:
        """One scrubbed line about ``exc``: ``<code>: <message>`` for an S3 answer."""
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = err.get("Code") or "?"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = err.get("Message") or ""
            line = f"{code}" + (f" (HTTP {status})" if status else "")
            line = f"{line}: {message}" if message else line
        else:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return redact(self._scrub(line))

    def error(self, operation: str, exc: BaseException, key: str | None = None) -> OffsiteError:
        """``<operation> s3://bucket/prefix+key: <code>: <message>``."""
        where = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        return OffsiteError(f"{operation} {where}: {self.text(exc)}")


class Guard:
    """Per-thread limits checked before every HTTP send of a client, botocore's retries included:
    a set ``cancel`` event, and a transfer step making no progress for ``stall_timeout``."""

    def __init__(self, client: S3Client) -> None:
        self._local = threading.local()
        client.meta.events.register("before-send.s3", self._check)

    @contextmanager
    def limits(self, stall_timeout: float, cancel: threading.Event | None) -> Iterator[None]:
        """Within the block, a send after ``stall_timeout`` seconds or once ``cancel`` is set
        raises :class:`OffsiteError` instead of going out."""
        saved = getattr(self._local, "limits", None)
        self._local.limits = (time.monotonic() + stall_timeout, stall_timeout, cancel)
        try:
            yield
        finally:
            self._local.limits = saved

    def _check(self, **_: Any) -> None:
        limits = getattr(self._local, "limits", None)
        if limits is None:
            return
        deadline, stall_timeout, cancel = limits
        if cancel is not None and cancel.is_set():
            raise OffsiteError("S3 transfer cancelled")
        if time.monotonic() > deadline:
            raise OffsiteError(
                f"S3 transfer made no progress for {stall_timeout:g} s (stall_timeout); "
                "the endpoint is unreachable or too slow"
            )


@dataclass
class Conn:
    """What one store's calls share: the client, where, how to word errors, the guard."""

    client: S3Client
    bucket: str
    prefix: str
    location: str
    words: ErrorWords
    guard: Guard
    stall_timeout: float
    sha256_refused: bool = False  # learnt: the provider refuses S3 additional checksums

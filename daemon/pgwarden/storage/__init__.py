"""Where backups live: the :class:`Storage` interface and its backends (local directory first).

``open_storage(config)`` builds the backend a :class:`~pgwarden.config.StorageConfig` names;
``open_object_store(offsite)`` the :class:`ObjectStore` of an ``[[offsite]]`` destination (S3).
"""

from __future__ import annotations

from pgwarden.config import StorageConfig
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import OffsiteError
from pgwarden.storage.base import (
    MANIFEST_SUFFIX,
    PARTIAL_SUFFIX,
    ParsedName,
    Partial,
    Storage,
    WriteResult,
    backup_name,
    check_target_name,
    manifest_name,
    parse_backup_name,
)
from pgwarden.storage.local import LocalStorage
from pgwarden.storage.objects import ObjectStore


def open_storage(config: StorageConfig) -> Storage:
    """The storage backend for ``config`` (a local directory for now)."""
    return LocalStorage(config.path)


def open_object_store(offsite: OffsiteConfig) -> ObjectStore:
    """The object store for ``offsite``, its keys read now (:class:`~pgwarden.errors.CredentialError`
    if a configured key cannot be read, :class:`OffsiteError` if the destination is unusable)."""
    if offsite.kind != "s3":
        raise OffsiteError(f"offsite[{offsite.name}]: unknown kind {offsite.kind!r}")
    # lazy import: boto3 + botocore add 0.17-0.24 s (measured) to every CLI start; only
    # off-site work needs them
    from pgwarden.storage.s3 import S3ObjectStore

    return S3ObjectStore(offsite)


__all__ = [
    "MANIFEST_SUFFIX",
    "PARTIAL_SUFFIX",
    "LocalStorage",
    "ObjectStore",
    "ParsedName",
    "Partial",
    "Storage",
    "WriteResult",
    "backup_name",
    "check_target_name",
    "manifest_name",
    "open_object_store",
    "open_storage",
    "parse_backup_name",
]

"""Where backups live: the :class:`Storage` interface and its backends (local directory first).

``open_storage(config)`` builds the backend a :class:`~pgwarden.config.StorageConfig` names.
"""

from __future__ import annotations

from pgwarden.config import StorageConfig
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


def open_storage(config: StorageConfig) -> Storage:
    """The storage backend for ``config`` (a local directory for now)."""
    return LocalStorage(config.path)


__all__ = [
    "MANIFEST_SUFFIX",
    "PARTIAL_SUFFIX",
    "LocalStorage",
    "ParsedName",
    "Partial",
    "Storage",
    "WriteResult",
    "backup_name",
    "check_target_name",
    "manifest_name",
    "open_storage",
    "parse_backup_name",
]

"""The backup formats ``[targets.backup] format`` accepts: :class:`BackupFormat`.

A :class:`enum.StrEnum`: a member is its value as a string, so the config, manifests and the
catalog hold the same text (``"custom"``).  :data:`pgwarden.config.model.BACKUP_FORMATS` is
derived from it.  :func:`streamed` says which backups pgwarden reads from pg_dump's stdout.
"""

from __future__ import annotations

import enum


class BackupFormat(enum.StrEnum):
    """pg_dump's output format (``--format``)."""

    CUSTOM = "custom"
    DIRECTORY = "directory"
    PLAIN = "plain"


def streamed(format: str, compression: str) -> bool:
    """Whether pgwarden reads pg_dump's output through its stream stage: ``plain`` always,
    ``custom`` with ``auto``/``zstd``.  Directory archives, and custom ones compressed by
    pg_dump itself (``gzip``, ``none``), are files pg_dump writes.  The one rule for
    :func:`pgwarden.backup.pgdump.plan_dump` and :func:`pgwarden.config.rates.cap_refusal`."""
    if format == BackupFormat.PLAIN:
        return True
    return format == BackupFormat.CUSTOM and compression in ("auto", "zstd")

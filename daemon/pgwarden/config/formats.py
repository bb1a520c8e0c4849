"""The backup formats ``[targets.backup] format`` accepts: :class:`BackupFormat`.

A :class:`enum.StrEnum`: a member is its value as a string, so the config, manifests and the
catalog hold the same text (``"custom"``).  :data:`pgwarden.config.model.BACKUP_FORMATS` is
derived from it.
"""

from __future__ import annotations

import enum


class BackupFormat(enum.StrEnum):
    """pg_dump's output format (``--format``)."""

    CUSTOM = "custom"
    DIRECTORY = "directory"
    PLAIN = "plain"

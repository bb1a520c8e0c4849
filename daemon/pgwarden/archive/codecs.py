"""The names of a dump's compression, shared by backup and restore: codecs and stages.

:class:`Codec` is how an artifact's bytes are compressed, :class:`Stage` who compresses them.
They are :class:`enum.StrEnum` s: a member is its value as a string, so manifests, the catalog
and JSON output hold the same text as before (``"zstd"``, ``"stream"``).
"""

from __future__ import annotations

import enum


class Codec(enum.StrEnum):
    """The compression of an artifact's bytes (the part of a manifest's ``compression``
    before the level)."""

    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"


class Stage(enum.StrEnum):
    """Who compresses: a manifest's ``compression_stage``."""

    #: pgwarden's stream stage compresses pg_dump's stdout (``NAME.dump.zst``, ``NAME.sql.gz``)
    STREAM = "stream"
    #: pg_dump writes the file itself, compressed with its own ``--compress``
    PG_DUMP = "pg_dump"

"""How a backup is dumped: :func:`pgwarden.backup.pgdump.plan_dump` and its typed plan.

Pure: no server, no binary run.  The plan's enums must write the same text as the strings they
replaced (manifests, the catalog, JSON output).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwarden.archive.codecs import Codec, Stage
from pgwarden.backup.pgdump import dump_argv, plan_dump
from pgwarden.config import BACKUP_FORMATS, COMPRESSIONS, BackupSettings
from pgwarden.config.formats import BackupFormat
from pgwarden.pg.binaries import Tool


def tool(major: int) -> Tool:
    return Tool(Path(f"/usr/lib/postgresql/{major}/bin/pg_dump"), major, f"{major}.4")


def test_config_choices_are_the_enums_values() -> None:
    assert BACKUP_FORMATS == ("custom", "directory", "plain") == tuple(BackupFormat)
    assert ("auto", *Codec) == COMPRESSIONS


@pytest.mark.parametrize(
    ("fmt", "compression", "major", "expected"),
    [
        ("custom", "auto", 16, ("dump.zst", "stream", "zstd", "zstd:1")),
        ("custom", "zstd", 15, ("dump.zst", "stream", "zstd", "zstd:1")),
        ("custom", "gzip", 16, ("dump", "pg_dump", "gzip", "gzip:6")),
        ("custom", "none", 16, ("dump", "pg_dump", "none", "none")),
        ("directory", "auto", 16, ("dir", "pg_dump", "gzip", "gzip:1")),
        ("directory", "zstd", 16, ("dir", "pg_dump", "zstd", "zstd:1")),
        ("directory", "zstd", 15, ("dir", "pg_dump", "gzip", "gzip:1")),
        ("directory", "none", 16, ("dir", "pg_dump", "none", "none")),
        ("plain", "auto", 16, ("sql.gz", "stream", "gzip", "gzip:6")),
        ("plain", "none", 16, ("sql", "stream", "none", "none")),
    ],
)
def test_plans_write_the_same_text_as_before(
    fmt: str, compression: str, major: int, expected: tuple[str, str, str, str]
) -> None:
    plan = plan_dump(BackupSettings(format=fmt, compression=compression), tool(major))
    assert (plan.extension, plan.stage, plan.codec, plan.compression_label) == expected
    assert isinstance(plan.stage, Stage) and isinstance(plan.codec, Codec)
    assert type(plan.compression_label) is str
    as_json = json.dumps({"format": plan.format, "compression_stage": plan.stage})
    assert as_json == json.dumps({"format": fmt, "compression_stage": expected[1]})
    assert f"--format={fmt[0]}" in dump_argv(
        tool(major), plan, conninfo="dbname=app", snapshot=None, output=None
    )

"""The backup manifest: ``NAME.manifest.json`` beside every backup, versioned.

A backup exists only when its artifact and a complete manifest exist; the manifest is what
``catalog rebuild`` reads (see :mod:`pgwarden.catalog.manifest_facts` for the keys it
indexes) and what restore drills compare against.  It never holds a secret: connection
details are reduced to the database name.

Layout (version 1)::

    manifest_version, pgwarden_version
    id, target, database, started_at, finished_at, duration_s, tags, pinned
    format ("custom" | "directory" | "plain"), compression (e.g. "zstd:1", "gzip:6", "none"),
    compression_stage ("pg_dump" | "stream"), path (artifact name), size_bytes, sha256,
    files ({relative path: sha256} for directory archives)
    pg_dump {version, path}, server {version, version_num}
    snapshot (the exported snapshot id the dump and the facts share)
    row_counts {mode, tables: [{schema, table, rows, exact, bytes}]}
    extensions [{name, version}]
    vector_probes [{schema, table, column, key_column, key, k, neighbours}]
    globals {sql, restore} -- pg_dumpall --globals-only --no-role-passwords (roles, tablespaces)
    restore {commands: [...]}  -- how to restore with stock tools only
    verifications [{started_at, finished_at, status, details, error}]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pgwarden
from pgwarden.errors import BackupError

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class TableCount:
    schema: str
    table: str
    rows: int
    exact: bool
    bytes: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class VectorProbe:
    """The ids of the ``k`` exact nearest neighbours (L2) of one stored vector."""

    schema: str
    table: str
    column: str
    key_column: str
    key: str
    k: int
    neighbours: tuple[str, ...]


@dataclass
class Manifest:
    id: str
    target: str
    database: str
    started_at: datetime
    format: str
    compression: str
    compression_stage: str
    path: str
    finished_at: datetime | None = None
    duration_s: float | None = None
    size_bytes: int = 0
    sha256: str = ""
    files: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    pinned: bool = False
    pg_dump: dict[str, str] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    snapshot: str = ""
    row_count_mode: str = "exact"
    tables: tuple[TableCount, ...] = ()
    extensions: tuple[dict[str, str], ...] = ()
    vector_probes: tuple[VectorProbe, ...] = ()
    globals_sql: str | None = None
    restore_commands: tuple[str, ...] = ()
    verifications: list[dict[str, Any]] = field(default_factory=list)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "pgwarden_version": pgwarden.__version__,
            "id": self.id,
            "target": self.target,
            "database": self.database,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
            "tags": list(self.tags),
            "pinned": self.pinned,
            "format": self.format,
            "compression": self.compression,
            "compression_stage": self.compression_stage,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "files": dict(self.files),
            "pg_dump": dict(self.pg_dump),
            "server": dict(self.server),
            "snapshot": self.snapshot,
            "row_counts": {
                "mode": self.row_count_mode,
                "tables": [asdict(t) for t in self.tables],
            },
            "extensions": [dict(e) for e in self.extensions],
            "vector_probes": [
                {**asdict(p), "neighbours": list(p.neighbours)} for p in self.vector_probes
            ],
            "globals": (
                {
                    "sql": self.globals_sql,
                    "restore": f"jq -r .globals.sql {self.path}.manifest.json | psql -d postgres",
                }
                if self.globals_sql is not None
                else None
            ),
            "restore": {"commands": list(self.restore_commands)},
            "verifications": list(self.verifications),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        """Parse a manifest; a damaged one raises :class:`BackupError` naming what is wrong."""
        version = data.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise BackupError(f"{where}: unsupported manifest_version {version!r}")
        try:
            counts = data.get("row_counts") or {}
            return cls(
                id=str(data["id"]),
                target=str(data["target"]),
                database=str(data["database"]),
                started_at=datetime.fromisoformat(data["started_at"]),
                finished_at=(
                    datetime.fromisoformat(data["finished_at"]) if data.get("finished_at") else None
                ),
                duration_s=data.get("duration_s"),
                format=str(data["format"]),
                compression=str(data["compression"]),
                compression_stage=str(data.get("compression_stage", "pg_dump")),
                path=str(data["path"]),
                size_bytes=int(data["size_bytes"]),
                sha256=str(data["sha256"]),
                files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
                tags=tuple(data.get("tags") or ()),
                pinned=bool(data.get("pinned", False)),
                pg_dump=dict(data.get("pg_dump") or {}),
                server=dict(data.get("server") or {}),
                snapshot=str(data.get("snapshot") or ""),
                row_count_mode=str(counts.get("mode", "off")),
                tables=tuple(TableCount(**t) for t in counts.get("tables") or ()),
                extensions=tuple(dict(e) for e in data.get("extensions") or ()),
                vector_probes=tuple(
                    VectorProbe(**{**p, "neighbours": tuple(p["neighbours"])})
                    for p in data.get("vector_probes") or ()
                ),
                globals_sql=(data.get("globals") or {}).get("sql"),
                restore_commands=tuple((data.get("restore") or {}).get("commands") or ()),
                verifications=list(data.get("verifications") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"{where}: damaged manifest ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise BackupError(f"{path}: cannot read the manifest: {exc.strerror}") from exc
        except ValueError as exc:
            raise BackupError(f"{path}: the manifest is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise BackupError(f"{path}: the manifest is not a JSON object")
        return cls.from_dict(data, str(path))

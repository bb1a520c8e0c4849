"""Reading the catalog's facts out of a backup manifest, for ``pgwarden catalog rebuild``.

The manifest format belongs to :mod:`pgwarden.backup`; this module reads only the keys the
catalog indexes and ignores the rest, so manifests can grow without touching the catalog.
Keys read (``*`` required)::

    id*  target*  database*  started_at*  finished_at  format  compression
    size_bytes (or size)  sha256  tags  pinned  duration_s  path
    verifications: [{started_at*, finished_at, status*, details, error}, ...]
    verified_at  verify_status        (a summary, if no verification list is given)

Timestamps are ISO 8601; a timestamp without offset is read as UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgwarden.catalog.states import DRILL_ENDINGS, VERIFY_STATUSES, DrillStatus
from pgwarden.errors import CatalogError

BACKUP_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class VerificationFacts:
    started_at: datetime
    finished_at: datetime | None
    status: DrillStatus
    details: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class ManifestFacts:
    id: str
    target: str
    database: str
    started_at: datetime
    finished_at: datetime | None
    format: str
    compression: str | None
    size_bytes: int | None
    sha256: str | None
    tags: tuple[str, ...]
    pinned: bool | None
    duration_s: float | None
    path: str | None
    verified_at: datetime | None
    verify_status: DrillStatus | None
    verifications: tuple[VerificationFacts, ...]


class _Reader:
    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, key: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.where}: {key}: {problem}")

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(key, "missing")
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string (got {value!r})")
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None
        return value

    def time(self, key: str, *, required: bool = False) -> datetime | None:
        value = self.text(key, required=required)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise self.fail(key, f"not an ISO 8601 timestamp ({value!r})") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(key, f"must be a non-negative number (got {value!r})")
        return float(value)

    def integer(self, *keys: str) -> int | None:
        for key in keys:
            value = self.data.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.fail(key, f"must be a non-negative integer (got {value!r})")
            return value
        return None


def _verifications(reader: _Reader) -> tuple[VerificationFacts, ...]:
    raw = reader.data.get("verifications")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise reader.fail("verifications", "must be a list")
    found: list[VerificationFacts] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise reader.fail(f"verifications[{index}]", "must be an object")
        sub = _Reader(item, f"{reader.where}: verifications[{index}]")
        status = sub.required_text("status")
        if status not in DRILL_ENDINGS:
            raise sub.fail("status", f"must be passed, failed or interrupted (got {status!r})")
        details = item.get("details") or {}
        if not isinstance(details, Mapping):
            raise sub.fail("details", "must be an object")
        started = sub.time("started_at", required=True)
        assert started is not None
        found.append(
            VerificationFacts(
                started,
                sub.time("finished_at"),
                DrillStatus(status),
                dict(details),
                sub.text("error"),
            )
        )
    return tuple(found)


def read_manifest_facts(manifest: Mapping[str, Any], where: str = "manifest") -> ManifestFacts:
    """The catalog's facts from a manifest; :class:`CatalogError` names the bad key."""
    reader = _Reader(manifest, where)
    backup_id = reader.required_text("id")
    if not BACKUP_ID_RE.match(backup_id):
        raise reader.fail("id", f"must be 32 lowercase hex digits (got {backup_id!r})")
    started = reader.time("started_at", required=True)
    assert started is not None
    tags = manifest.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise reader.fail("tags", "must be a list of strings")
    pinned = manifest.get("pinned")
    if pinned is not None and not isinstance(pinned, bool):
        raise reader.fail("pinned", "must be true or false")
    verifications = _verifications(reader)
    verified_at = reader.time("verified_at")
    verify_text = reader.text("verify_status")
    finished = [v for v in verifications if v.status in VERIFY_STATUSES and v.finished_at]
    if finished:
        newest = max(finished, key=lambda v: v.finished_at or v.started_at)
        verified_at, verify_text = newest.finished_at, newest.status
    if verify_text is not None and verify_text not in VERIFY_STATUSES:
        raise reader.fail("verify_status", f"must be passed or failed (got {verify_text!r})")
    verify_status = None if verify_text is None else DrillStatus(verify_text)
    return ManifestFacts(
        id=backup_id,
        target=reader.required_text("target"),
        database=reader.required_text("database"),
        started_at=started,
        finished_at=reader.time("finished_at"),
        format=reader.text("format") or "custom",
        compression=reader.text("compression"),
        size_bytes=reader.integer("size_bytes", "size"),
        sha256=reader.text("sha256"),
        tags=tuple(tags),
        pinned=pinned,
        duration_s=reader.number("duration_s"),
        path=reader.text("path"),
        verified_at=verified_at if verify_status else None,
        verify_status=verify_status if verified_at else None,
        verifications=verifications,
    )

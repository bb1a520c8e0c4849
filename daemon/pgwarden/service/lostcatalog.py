"""A lost catalog: rebuilt from the manifests, at start-up and while the daemon runs.

The catalog file deleted or lost (or a new ``catalog_url`` pointed at an existing storage)
opens as an empty, freshly migrated catalog; storage holds the truth, so the daemon rebuilds
it from the manifests before anything reads it (listings, retention, the history gauges),
exactly as ``pgwarden catalog rebuild`` does, and says so in a warning
(:func:`rebuild_lost_catalog`).  A catalog with any row is left alone: ``pgwarden catalog
rebuild`` repairs partial losses on demand.

A SQLite catalog deleted or replaced *while the daemon runs* would otherwise go on receiving
the daemon's writes in the unlinked file, lost at the next start and invisible to every
``pgwarden`` command meanwhile.  :class:`CatalogWatch` (checked by the main loop every tick:
one ``stat``) notices the file's identity change, opens the catalog now at that path (creating
it if needed), puts it in force for the jobs that start from then on, and rebuilds it if empty.
"""

from __future__ import annotations

import os
from pathlib import Path

from pgwarden import logsetup
from pgwarden.catalog import open_catalog
from pgwarden.errors import PgwardenError
from pgwarden.retention.reconcile import rebuild_catalog
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.state")

FileId = tuple[int, int] | None


def rebuild_lost_catalog(state: ServiceState) -> bool:
    """Rebuild an empty catalog from the manifests in storage; whether it did."""
    if state.catalog.list_backups(limit=1) or not state.storage.list_manifests():
        return False
    report = rebuild_catalog(state.catalog, state.storage)
    log.warning(
        "the catalog was empty while storage holds backups: rebuilt it from the manifests",
        added=len(report.added),
        problems=[p.message for p in report.problems],
    )
    return True


def _file_id(path: Path) -> FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class CatalogWatch:
    """Notices a SQLite catalog file deleted or replaced behind the running daemon's back."""

    def __init__(self, state: ServiceState, url: str) -> None:
        self._url = url
        url_info = state.catalog.engine.url
        sqlite = url_info.get_backend_name() == "sqlite" and url_info.database not in (None, "")
        self._path = Path(str(url_info.database)) if sqlite else None
        self._id = _file_id(self._path) if self._path is not None else None

    def check(self, state: ServiceState) -> bool:
        """Reopen (and rebuild if empty) a catalog whose file changed; whether it did."""
        if self._path is None or _file_id(self._path) == self._id:
            return False
        log.error(
            "the catalog file was deleted or replaced while pgwarden ran: reopening it",
            path=str(self._path),
        )
        try:
            fresh = open_catalog(self._url)
        except PgwardenError as exc:
            log.error("cannot reopen the catalog", error=str(exc))
            return False
        old, state.catalog = state.catalog, fresh
        old.close()
        self._id = _file_id(self._path)
        rebuild_lost_catalog(state)
        return True

"""What a prune (or a report) of a target covers: a whole-server target's sub-targets.

A whole-server target (``databases = ...``) is pruned database by database: each sub-target
``<target>/<database>`` that has backups in the catalog gets its own plan, so ``min_keep`` and
``keep_days`` hold per database.  The list comes from the catalog, not from the server: a
database that was dropped keeps its sub-target, and its backups stay under the same rules --
they are never deleted because the database is gone.  The globals files a run writes beside
the databases (``<target>/globals-<stamp>-<id>.sql``) go when no kept backup needs them
(:func:`stale_globals`).
"""

from __future__ import annotations

from pathlib import Path

from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.config import TargetConfig
from pgwarden.config.names import SUB_TARGET_SEP
from pgwarden.storage import Storage
from pgwarden.storage.base import parse_globals_name


def backed_up_databases(target: TargetConfig, catalog: Catalog) -> list[str]:
    """The databases of whole-server ``target`` that the catalog has backups of, sorted."""
    prefix = f"{target.name}{SUB_TARGET_SEP}"
    return sorted(t.removeprefix(prefix) for t in catalog.targets() if t.startswith(prefix))


def prune_units(target: TargetConfig, catalog: Catalog) -> list[TargetConfig]:
    """``[target]`` for an ordinary target; a whole-server target's sub-targets otherwise."""
    if not target.whole_server:
        return [target]
    return [target.for_database(d) for d in backed_up_databases(target, catalog)]


def next_drill(target: TargetConfig, catalog: Catalog) -> TargetConfig | None:
    """The database a whole-server target's next drill restores: the least recently drilled
    of those with backups (never drilled first, then by name); ``None`` when none has any."""
    units = prune_units(target, catalog)
    last = {u.name: catalog.last_run(u.name, "verify") for u in units}
    return min(
        units, key=lambda u: (last[u.name] is not None, last[u.name] or 0, u.name), default=None
    )


def stale_globals(target: TargetConfig, catalog: Catalog, storage: Storage) -> list[Path]:
    """A whole-server target's globals files that no kept backup needs: those older than the
    one in force when its oldest complete backup (of any database) was taken.  The globals
    of every kept backup stay; with no complete backup at all, every file stays."""
    directory = storage.target_dir(target.name)
    dated = sorted(
        (when, path)
        for path in directory.iterdir()
        if path.is_file() and (when := parse_globals_name(path.name)) is not None
    )
    complete = [
        r.started_at
        for unit in prune_units(target, catalog)
        for r in catalog.list_backups(unit.name, statuses=(BackupStatus.COMPLETE,))
    ]
    if not complete:
        return []
    in_force = [when for when, _ in dated if when <= min(complete)]
    if not in_force:
        return []
    return [path for when, path in dated if when < in_force[-1]]

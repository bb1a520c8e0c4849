"""What a prune (or a report) of a target covers: a whole-server target's sub-targets.

A whole-server target (``databases = ...``) is pruned database by database: each sub-target
``<target>/<database>`` that has backups in the catalog gets its own plan, so ``min_keep`` and
``keep_days`` hold per database.  The list comes from the catalog, not from the server: a
database that was dropped keeps its sub-target, and its backups stay under the same rules --
they are never deleted because the database is gone.
"""

from __future__ import annotations

from pgwarden.catalog import Catalog
from pgwarden.config import TargetConfig
from pgwarden.config.names import SUB_TARGET_SEP


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

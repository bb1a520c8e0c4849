"""A whole-server target's database selection: ``databases`` and ``exclude_databases``.

``databases = "*"`` backs up every database of the server the DSN points at (templates and
databases that refuse connections excepted), ``databases = ["app", "analytics"]`` the ones
named; absent, the target is the DSN's database only, exactly as before.  ``exclude_databases``
is only meaningful beside ``databases``.  The selection is applied at each run to the databases
the server has then (:func:`select_databases`), so a new database is picked up by the next run.
"""

from __future__ import annotations

from collections.abc import Iterable

from pgwarden.config.names import target_name_problem
from pgwarden.config.reader import Reader

ALL_DATABASES = "*"


def read_selection(r: Reader) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """``(databases, exclude_databases)`` of a ``[[targets]]`` table; ``("*",)`` is every one."""
    databases: tuple[str, ...] | None = None
    if "databases" in r.data:
        raw = r.data["databases"]
        r.mark("databases")
        if raw == ALL_DATABASES:
            databases = (ALL_DATABASES,)
        elif isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
            databases = _names(r, "databases", raw)
        else:
            r.error("databases", f'must be "*" or a non-empty array of names (got {raw!r})')
    exclude = _names(r, "exclude_databases", r.str_list("exclude_databases"))
    if exclude and databases is None:
        r.error("exclude_databases", 'needs databases = "*" or a list on the same target')
    return databases, exclude


def _names(r: Reader, key: str, names: Iterable[str]) -> tuple[str, ...]:
    listed = list(names)
    for name in listed:
        # each database's backups live in <target>/<database>/: the target-name rule applies
        problem = target_name_problem(name)
        if problem is not None:
            r.error(key, f"database name {problem}")
    for dup in sorted({n for n in listed if listed.count(n) > 1}):
        r.error(key, f"database {dup!r} is listed more than once")
    return tuple(dict.fromkeys(listed))


def select_databases(
    found: Iterable[str], databases: tuple[str, ...] | None, exclude: tuple[str, ...]
) -> tuple[str, ...]:
    """The databases a run backs up, sorted: ``found`` (the server's non-template databases
    that accept connections) filtered by the selection."""
    present = sorted(set(found))
    if databases is None:
        return ()
    chosen = present if databases == (ALL_DATABASES,) else [d for d in present if d in databases]
    return tuple(d for d in chosen if d not in exclude)

"""The migration files' revision graph: which file defines a revision, heads, ancestry, cycles.

Pure functions over :class:`~pgwarden.migrate.scripts.MigrationFile` lists; unreadable files
(``error`` set) and files without a literal ``revision`` are not part of the graph.  When two
files define the same revision, the first one (in scan order) owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pgwarden.migrate.scripts import MigrationFile

#: revision -> the revisions it revises (its ``down_revision``)
Graph = Mapping[str, tuple[str, ...]]


def graph_of(files: Sequence[MigrationFile]) -> dict[str, tuple[str, ...]]:
    graph: dict[str, tuple[str, ...]] = {}
    for f in files:
        if f.revision is not None and f.error is None:
            graph.setdefault(f.revision, f.down_revisions)
    return graph


def owners(files: Sequence[MigrationFile]) -> dict[str, str]:
    """revision -> the name of the file that defines it."""
    owner: dict[str, str] = {}
    for f in files:
        if f.revision is not None and f.error is None:
            owner.setdefault(f.revision, f.name)
    return owner


def heads(graph: Graph) -> tuple[str, ...]:
    """The revisions nothing revises, sorted."""
    referenced = {parent for parents in graph.values() for parent in parents}
    return tuple(sorted(rev for rev in graph if rev not in referenced))


def lineage(graph: Graph, starts: Iterable[str]) -> list[str]:
    """``starts`` and all their ancestors, parents before children (known revisions only)."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(s, False) for s in starts if s in graph]
    while stack:
        rev, expanded = stack.pop()
        if expanded:
            order.append(rev)
            continue
        if rev in seen:
            continue
        seen.add(rev)
        stack.append((rev, True))
        stack.extend((d, False) for d in reversed(graph[rev]) if d in graph and d not in seen)
    return order


def has_cycle(graph: Graph) -> bool:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        stack = [(root, iter(graph[root]))]
        state[root] = 1
        while stack:
            rev, parents = stack[-1]
            parent = next((p for p in parents if p in graph), None)
            if parent is None:
                state[rev] = 2
                stack.pop()
            elif state.get(parent) == 1:
                return True
            elif parent not in state:
                state[parent] = 1
                stack.append((parent, iter(graph[parent])))
    return False

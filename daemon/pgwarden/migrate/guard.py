"""The forward-only guard: the strategy's migration policy, checked against files and database.

The policy (strategy, "Migration Policy"): migrations are forward-only -- never edit or delete
a migration file once it ran; to undo one, write a *new* migration; never ``alembic
downgrade``; files are numbered ``001_initial_schema.py``, ``002_add_users_table.py``...

:func:`evaluate` is the pure core.  Given the migration files (:mod:`~pgwarden.migrate.scripts`),
the ledger of released files (:mod:`~pgwarden.migrate.ledger`) and the revisions in the
database's ``alembic_version``, it returns every problem at once:

errors (``migrate check`` exits 1, ``migrate upgrade`` refuses to run):
    ``unreadable`` a file that is not valid Python or sets no literal ``revision``;
    ``released_edited`` / ``released_deleted`` a file the ledger recorded has another sha256
    now, or is gone; ``unknown_revision`` the database is at a revision no file defines;
    ``database_heads`` ``alembic_version`` holds several revisions; ``duplicate_revision``;
    ``missing_parent`` a ``down_revision`` no file defines; ``branch`` more than one head;
    ``cycle``; ``numbering`` (with ``require_numbered``) a name not ``NNN_name.py``, a number
    used twice, a gap, or numbering that does not follow the ``down_revision`` chain;
warnings:
    ``downgrade_work`` a ``downgrade()`` that does real work (allowed, "rarely used", but
    pgwarden never runs it); ``went_back`` the database is behind revisions pgwarden saw
    applied (an ``alembic downgrade``, or a restore of an older backup).

It also says what ``alembic upgrade head`` would apply (``pending``, in order) and which files
are now released and not yet in the ledger (``to_record``).  :func:`inspect_project` does the
I/O around it: reads the files and ``alembic_version``, records new releases, builds a
:class:`GuardReport`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pgwarden.migrate.database import read_revisions
from pgwarden.migrate.ledger import LedgerEntry, LedgerStore
from pgwarden.migrate.project import AlembicProject
from pgwarden.migrate.scripts import MigrationFile, scan
from pgwarden.pg.conninfo import ConnSpec

__all__ = ["Evaluation", "GuardReport", "Pending", "Problem", "evaluate", "inspect_project"]

Severity = Literal["error", "warning"]
NUMBERED = re.compile(r"^(\d{3,})_(\w+)\.py$", re.ASCII)
FORWARD = "migrations are forward-only"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    code: str
    message: str
    file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "file": self.file,
            "message": self.message,
        }


@dataclass(frozen=True)
class Pending:
    """A revision ``alembic upgrade head`` would apply, and the file defining it."""

    revision: str
    file: str


@dataclass(frozen=True)
class Evaluation:
    problems: tuple[Problem, ...]
    heads: tuple[str, ...]
    pending: tuple[Pending, ...]
    to_record: tuple[LedgerEntry, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def _graph(files: Sequence[MigrationFile]) -> dict[str, tuple[str, ...]]:
    graph: dict[str, tuple[str, ...]] = {}
    for f in files:
        if f.revision is not None and f.error is None:
            graph.setdefault(f.revision, f.down_revisions)
    return graph


def _lineage(graph: Mapping[str, tuple[str, ...]], starts: Iterable[str]) -> list[str]:
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


def _has_cycle(graph: Mapping[str, tuple[str, ...]]) -> bool:
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


def evaluate(
    files: Sequence[MigrationFile],
    ledger: Mapping[str, LedgerEntry],
    database: Sequence[str],
    *,
    require_numbered: bool,
    now: datetime | None = None,
) -> Evaluation:
    """Every policy problem of a project, what an upgrade would apply, what is newly released."""
    problems: list[Problem] = []

    def err(code: str, message: str, file: str | None = None) -> None:
        problems.append(Problem("error", code, message, file))

    by_name = {f.name: f for f in files}
    graph = _graph(files)
    owner: dict[str, str] = {}
    for f in files:
        if f.revision is not None and f.error is None:
            owner.setdefault(f.revision, f.name)

    def label(rev: str) -> str:
        return f"{rev} ({owner[rev]})" if rev in owner else rev

    for f in files:
        if f.error is not None:
            err("unreadable", f"{f.name}: {f.error}", f.name)
    for rev in sorted(graph):
        names = [f.name for f in files if f.revision == rev and f.error is None]
        if len(names) > 1:
            err(
                "duplicate_revision",
                f"revision {rev} is defined by {len(names)} files: {', '.join(names)}",
                names[1],
            )
    for f in files:
        if f.error is None and f.revision is not None:
            for parent in f.down_revisions:
                if parent not in graph:
                    err(
                        "missing_parent",
                        f"{f.name} revises {parent}, which no migration file defines",
                        f.name,
                    )

    # released files: never edited, never deleted
    for entry in ledger.values():
        current = by_name.get(entry.name)
        if current is None:
            moved = [f.name for f in files if f.revision == entry.revision]
            hint = f"; {', '.join(moved)} now defines its revision (renamed?)" if moved else ""
            err(
                "released_deleted",
                f"released migration {entry.name} (revision "
                f"{entry.revision}) was deleted{hint}. {FORWARD}: restore the file and write a "
                "new migration for the change",
                entry.name,
            )
        elif current.sha256 != entry.sha256:
            err(
                "released_edited",
                f"released migration {entry.name} changed after it was "
                f"applied (sha256 {entry.sha256[:12]} recorded {entry.recorded_at:%Y-%m-%d}, "
                f"now {current.sha256[:12] or 'unreadable'}). {FORWARD}: restore it and put "
                "the change in a new numbered migration",
                entry.name,
            )

    referenced = {parent for parents in graph.values() for parent in parents}
    heads = tuple(sorted(rev for rev in graph if rev not in referenced))
    cycle = _has_cycle(graph)
    if cycle:
        err("cycle", "the down_revision links form a cycle")
    broken = any(p.code == "missing_parent" for p in problems)
    if len(heads) > 1 and not broken:  # a broken chain splits the graph: not a real branch
        err(
            "branch",
            f"{len(heads)} heads: {', '.join(label(h) for h in heads)}. The policy "
            "keeps one line of migrations: renumber the newer one so it revises the other, or "
            "add a merge migration",
        )

    unknown = [rev for rev in database if rev not in graph]
    for rev in unknown:
        gone = [e.name for e in ledger.values() if e.revision == rev]
        hint = f" (it was {gone[0]}, now missing)" if gone else ""
        err(
            "unknown_revision",
            f"the database is at revision {rev}, which no migration file "
            f"defines{hint}: a deleted file, or a migration applied from another checkout",
        )
    if len(database) > 1:
        err(
            "database_heads",
            f"alembic_version holds {len(database)} revisions "
            f"({', '.join(database)}): the database was upgraded along a branch",
        )

    if require_numbered:
        problems.extend(numbering(files))

    for f in files:
        if f.downgrade_work and f.error is None:
            problems.append(
                Problem(
                    "warning",
                    "downgrade_work",
                    f"{f.name}: downgrade() does "
                    "real work. pgwarden never runs alembic downgrade; to undo a migration, write "
                    "a new one (downgrade() may stay, the policy calls it rarely used)",
                    f.name,
                )
            )

    applied = set(_lineage(graph, database)) if not unknown and not cycle else set()
    behind = sorted(
        (e for e in ledger.values() if e.revision in graph and e.revision not in applied),
        key=lambda e: e.name,
    )
    if behind and not unknown and not cycle:
        problems.append(
            Problem(
                "warning",
                "went_back",
                "the database is behind migrations "
                f"pgwarden saw applied: {', '.join(e.name for e in behind)}. Someone ran alembic "
                "downgrade (the policy forbids it) or restored an older backup; pgwarden migrate "
                "upgrade applies them again",
            )
        )

    pending: tuple[Pending, ...] = ()
    if len(heads) == 1 and not unknown and not cycle and len(database) <= 1:
        pending = tuple(
            Pending(rev, owner[rev]) for rev in _lineage(graph, heads) if rev not in applied
        )
    claimed = {e.revision for e in ledger.values()}
    stamp = now or datetime.now(UTC)
    to_record = tuple(
        LedgerEntry(f.name, f.sha256, f.revision, stamp)
        for f in files
        if f.error is None
        and f.revision in applied
        and f.name not in ledger
        and f.revision not in claimed
        and owner.get(f.revision) == f.name
    )
    return Evaluation(tuple(problems), heads, pending, to_record)


def numbering(files: Sequence[MigrationFile]) -> list[Problem]:
    """The strategy's file naming: ``001_initial_schema.py``, ``002_...``, contiguous from 001,
    each numbered file revising the one before it."""
    problems: list[Problem] = []
    numbered: dict[int, list[MigrationFile]] = {}
    for f in files:
        match = NUMBERED.match(f.name)
        if match is None:
            problems.append(
                Problem(
                    "error",
                    "numbering",
                    f"{f.name} is not named NNN_name.py "
                    "(001_initial_schema.py, 002_add_users_table.py...)",
                    f.name,
                )
            )
            continue
        numbered.setdefault(int(match[1]), []).append(f)
    for number, same in sorted(numbered.items()):
        if len(same) > 1:
            names = ", ".join(f.name for f in same)
            problems.append(
                Problem(
                    "error",
                    "numbering",
                    f"number {number:03d} is used by {len(same)} files: {names}",
                    same[1].name,
                )
            )
    if not numbered:
        return problems
    missing = sorted(set(range(1, max(numbered) + 1)) - set(numbered))
    if missing:
        shown = ", ".join(f"{n:03d}" for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        problems.append(
            Problem("error", "numbering", f"numbering is not contiguous from 001: missing {shown}")
        )
    if any(len(same) > 1 for same in numbered.values()):
        return problems
    ordered = [numbered[n][0] for n in sorted(numbered)]
    defined = {f.revision for f in files if f.revision is not None}
    previous: MigrationFile | None = None
    for f in ordered:
        if f.error is not None or f.revision is None or not defined.issuperset(f.down_revisions):
            # unreadable, or revising a missing file (reported as missing_parent)
            previous = None
            continue
        if previous is None and f is ordered[0] and f.down_revisions:
            problems.append(
                Problem(
                    "error",
                    "numbering",
                    f"{f.name} is the first migration but revises {', '.join(f.down_revisions)}",
                    f.name,
                )
            )
        elif previous is not None and f.down_revisions != (previous.revision,):
            revises = ", ".join(f.down_revisions) or "nothing"
            problems.append(
                Problem(
                    "error",
                    "numbering",
                    f"{f.name} revises {revises}, but the "
                    f"migration numbered before it is {previous.name} (revision "
                    f"{previous.revision}): numbering must follow the revision chain",
                    f.name,
                )
            )
        previous = f
    return problems


@dataclass(frozen=True)
class GuardReport:
    """The guard's answer for one target (see :func:`inspect_project`)."""

    target: str
    project: str
    versions: tuple[str, ...]
    files: tuple[str, ...]
    heads: tuple[str, ...]
    database: tuple[str, ...]
    pending: tuple[Pending, ...]
    released: int
    recorded: tuple[str, ...]
    problems: tuple[Problem, ...]
    ledger: str

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "project": self.project,
            "versions": list(self.versions),
            "files": list(self.files),
            "heads": list(self.heads),
            "database": list(self.database),
            "pending": [{"revision": p.revision, "file": p.file} for p in self.pending],
            "released": self.released,
            "recorded": list(self.recorded),
            "ledger": self.ledger,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.as_dict() for p in self.problems],
        }


def inspect_project(
    project: AlembicProject,
    store: LedgerStore,
    spec: ConnSpec,
    *,
    require_numbered: bool,
    record: bool,
    now: datetime | None = None,
) -> GuardReport:
    """Read the files, the ledger and ``alembic_version``; evaluate; with ``record``, add the
    newly released files to the ledger (the caller holds ``store.lock()``)."""
    files = scan(project.versions)
    database = read_revisions(spec, store.target)
    ledger = store.load()
    result = evaluate(files, ledger.entries, database, require_numbered=require_numbered, now=now)
    recorded: tuple[str, ...] = ()
    if record and result.to_record:
        ledger = ledger.with_entries(result.to_record)
        store.save(ledger)
        recorded = tuple(e.name for e in result.to_record)
    return GuardReport(
        target=store.target,
        project=str(project.project),
        versions=tuple(str(v) for v in project.versions),
        files=tuple(f.name for f in files),
        heads=result.heads,
        database=database,
        pending=result.pending,
        released=len(ledger.entries),
        recorded=recorded,
        problems=result.problems,
        ledger=str(store.path),
    )

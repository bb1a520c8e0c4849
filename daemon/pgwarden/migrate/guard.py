"""The forward-only guard: the migration policy, checked against files, ledger and database.

:func:`evaluate` is the pure core.  Given the migration files (:mod:`~pgwarden.migrate.scripts`),
the ledger of released files (:mod:`~pgwarden.migrate.ledger`) and the revisions in the
database's ``alembic_version``, it applies every rule of :mod:`~pgwarden.migrate.rules` to the
revision graph (:mod:`~pgwarden.migrate.revgraph`) and returns every problem at once.

It also says what ``alembic upgrade head`` would apply (``pending``, in order) and which files
are now released and not yet in the ledger (``to_record``).  :func:`inspect_project` does the
I/O around it: reads the files and ``alembic_version``, records new releases, builds a
:class:`GuardReport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgwarden.migrate import revgraph
from pgwarden.migrate.database import read_revisions
from pgwarden.migrate.ledger import LedgerEntry, LedgerStore
from pgwarden.migrate.project import AlembicProject
from pgwarden.migrate.rules import (
    Problem,
    database_problems,
    downgrade_warnings,
    file_problems,
    ledger_problems,
    numbering,
    shape_problems,
    went_back,
)
from pgwarden.migrate.scripts import MigrationFile, scan
from pgwarden.pg.conninfo import ConnSpec

__all__ = [
    "Evaluation",
    "GuardReport",
    "Pending",
    "Problem",
    "evaluate",
    "inspect_project",
    "numbering",
]


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


def evaluate(
    files: Sequence[MigrationFile],
    ledger: Mapping[str, LedgerEntry],
    database: Sequence[str],
    *,
    require_numbered: bool,
    now: datetime | None = None,
) -> Evaluation:
    """Every policy problem of a project, what an upgrade would apply, what is newly released."""
    graph = revgraph.graph_of(files)
    owner = revgraph.owners(files)
    problems = file_problems(files, graph) + ledger_problems(files, ledger)
    heads = revgraph.heads(graph)
    cycle = revgraph.has_cycle(graph)
    broken = any(p.code == "missing_parent" for p in problems)
    problems += shape_problems(heads, cycle, broken, owner)
    unknown = [rev for rev in database if rev not in graph]
    problems += database_problems(database, unknown, ledger)
    if require_numbered:
        problems += numbering(files)
    problems += downgrade_warnings(files)
    # what the database has applied is known only along a sound graph it is part of
    knowable = not unknown and not cycle
    applied = set(revgraph.lineage(graph, database)) if knowable else set()
    if knowable:
        problems += went_back(ledger, graph, applied)
    pending: tuple[Pending, ...] = ()
    if len(heads) == 1 and knowable and len(database) <= 1:
        pending = tuple(
            Pending(rev, owner[rev]) for rev in revgraph.lineage(graph, heads) if rev not in applied
        )
    to_record = _newly_released(files, ledger, applied, owner, now or datetime.now(UTC))
    return Evaluation(tuple(problems), heads, pending, to_record)


def _newly_released(
    files: Sequence[MigrationFile],
    ledger: Mapping[str, LedgerEntry],
    applied: set[str],
    owner: Mapping[str, str],
    stamp: datetime,
) -> tuple[LedgerEntry, ...]:
    """The applied files the ledger does not hold yet (one per revision: its owner)."""
    claimed = {e.revision for e in ledger.values()}
    return tuple(
        LedgerEntry(f.name, f.sha256, f.revision, stamp)
        for f in files
        if f.error is None
        and f.revision in applied
        and f.name not in ledger
        and f.revision not in claimed
        and owner.get(f.revision) == f.name
    )


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

"""The forward-only policy's rules, each a pure function returning :class:`Problem` s.

The policy (strategy, "Migration Policy"): migrations are forward-only -- never edit or delete
a migration file once it ran; to undo one, write a *new* migration; never ``alembic
downgrade``; files are numbered ``001_initial_schema.py``, ``002_add_users_table.py``...

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

:func:`pgwarden.migrate.guard.evaluate` applies them in that order of concerns: files, ledger,
graph shape, database, numbering, warnings.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgwarden.migrate.ledger import LedgerEntry
from pgwarden.migrate.revgraph import Graph
from pgwarden.migrate.scripts import MigrationFile

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


def file_problems(files: Sequence[MigrationFile], graph: Graph) -> list[Problem]:
    """``unreadable``, ``duplicate_revision``, ``missing_parent``."""
    problems = [
        Problem("error", "unreadable", f"{f.name}: {f.error}", f.name)
        for f in files
        if f.error is not None
    ]
    for rev in sorted(graph):
        names = [f.name for f in files if f.revision == rev and f.error is None]
        if len(names) > 1:
            message = f"revision {rev} is defined by {len(names)} files: {', '.join(names)}"
            problems.append(Problem("error", "duplicate_revision", message, names[1]))
    for f in files:
        if f.error is None and f.revision is not None:
            for parent in f.down_revisions:
                if parent not in graph:
                    message = f"{f.name} revises {parent}, which no migration file defines"
                    problems.append(Problem("error", "missing_parent", message, f.name))
    return problems


def ledger_problems(
    files: Sequence[MigrationFile], ledger: Mapping[str, LedgerEntry]
) -> list[Problem]:
    """Released files are never edited, never deleted: ``released_deleted``, ``released_edited``."""
    problems: list[Problem] = []
    by_name = {f.name: f for f in files}
    for entry in ledger.values():
        current = by_name.get(entry.name)
        if current is None:
            moved = [f.name for f in files if f.revision == entry.revision]
            hint = f"; {', '.join(moved)} now defines its revision (renamed?)" if moved else ""
            message = (
                f"released migration {entry.name} (revision "
                f"{entry.revision}) was deleted{hint}. {FORWARD}: restore the file and write a "
                "new migration for the change"
            )
            problems.append(Problem("error", "released_deleted", message, entry.name))
        elif current.sha256 != entry.sha256:
            message = (
                f"released migration {entry.name} changed after it was "
                f"applied (sha256 {entry.sha256[:12]} recorded {entry.recorded_at:%Y-%m-%d}, "
                f"now {current.sha256[:12] or 'unreadable'}). {FORWARD}: restore it and put "
                "the change in a new numbered migration"
            )
            problems.append(Problem("error", "released_edited", message, entry.name))
    return problems


def shape_problems(
    heads: Sequence[str], cycle: bool, broken: bool, owner: Mapping[str, str]
) -> list[Problem]:
    """``cycle``, and ``branch`` (unless a missing parent, ``broken``, split the graph)."""
    problems: list[Problem] = []
    if cycle:
        problems.append(Problem("error", "cycle", "the down_revision links form a cycle"))
    if len(heads) > 1 and not broken:  # a broken chain splits the graph: not a real branch
        labels = ", ".join(f"{h} ({owner[h]})" if h in owner else h for h in heads)
        message = (
            f"{len(heads)} heads: {labels}. The policy "
            "keeps one line of migrations: renumber the newer one so it revises the other, or "
            "add a merge migration"
        )
        problems.append(Problem("error", "branch", message))
    return problems


def database_problems(
    database: Sequence[str], unknown: Sequence[str], ledger: Mapping[str, LedgerEntry]
) -> list[Problem]:
    """``unknown_revision`` for each of ``unknown`` (the database's revisions no file defines),
    ``database_heads``."""
    problems: list[Problem] = []
    for rev in unknown:
        gone = [e.name for e in ledger.values() if e.revision == rev]
        hint = f" (it was {gone[0]}, now missing)" if gone else ""
        message = (
            f"the database is at revision {rev}, which no migration file "
            f"defines{hint}: a deleted file, or a migration applied from another checkout"
        )
        problems.append(Problem("error", "unknown_revision", message))
    if len(database) > 1:
        message = (
            f"alembic_version holds {len(database)} revisions "
            f"({', '.join(database)}): the database was upgraded along a branch"
        )
        problems.append(Problem("error", "database_heads", message))
    return problems


def downgrade_warnings(files: Sequence[MigrationFile]) -> list[Problem]:
    """``downgrade_work``: allowed, but pgwarden never runs it."""
    return [
        Problem(
            "warning",
            "downgrade_work",
            f"{f.name}: downgrade() does "
            "real work. pgwarden never runs alembic downgrade; to undo a migration, write "
            "a new one (downgrade() may stay, the policy calls it rarely used)",
            f.name,
        )
        for f in files
        if f.downgrade_work and f.error is None
    ]


def went_back(
    ledger: Mapping[str, LedgerEntry], graph: Graph, applied: Collection[str]
) -> list[Problem]:
    """``went_back``: released revisions the database no longer has applied."""
    behind = sorted(
        (e for e in ledger.values() if e.revision in graph and e.revision not in applied),
        key=lambda e: e.name,
    )
    if not behind:
        return []
    message = (
        "the database is behind migrations "
        f"pgwarden saw applied: {', '.join(e.name for e in behind)}. Someone ran alembic "
        "downgrade (the policy forbids it) or restored an older backup; pgwarden migrate "
        "upgrade applies them again"
    )
    return [Problem("warning", "went_back", message)]


def numbering(files: Sequence[MigrationFile]) -> list[Problem]:
    """The strategy's file naming: ``001_initial_schema.py``, ``002_...``, contiguous from 001,
    each numbered file revising the one before it."""
    numbered, problems = _by_number(files)
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
    defined = {f.revision for f in files if f.revision is not None}
    problems += _chain_order([numbered[n][0] for n in sorted(numbered)], defined)
    return problems


def _by_number(
    files: Sequence[MigrationFile],
) -> tuple[dict[int, list[MigrationFile]], list[Problem]]:
    """The files by their number, and the problems: names not ``NNN_name.py``, numbers used
    twice."""
    problems: list[Problem] = []
    numbered: dict[int, list[MigrationFile]] = {}
    for f in files:
        match = NUMBERED.match(f.name)
        if match is None:
            message = (
                f"{f.name} is not named NNN_name.py "
                "(001_initial_schema.py, 002_add_users_table.py...)"
            )
            problems.append(Problem("error", "numbering", message, f.name))
            continue
        numbered.setdefault(int(match[1]), []).append(f)
    for number, same in sorted(numbered.items()):
        if len(same) > 1:
            names = ", ".join(f.name for f in same)
            message = f"number {number:03d} is used by {len(same)} files: {names}"
            problems.append(Problem("error", "numbering", message, same[1].name))
    return numbered, problems


def _chain_order(ordered: Sequence[MigrationFile], defined: set[str]) -> list[Problem]:
    """Each numbered file revises the one numbered before it; the first revises nothing."""
    problems: list[Problem] = []
    previous: MigrationFile | None = None
    for f in ordered:
        if f.error is not None or f.revision is None or not defined.issuperset(f.down_revisions):
            # unreadable, or revising a missing file (reported as missing_parent)
            previous = None
            continue
        if previous is None and f is ordered[0] and f.down_revisions:
            message = f"{f.name} is the first migration but revises {', '.join(f.down_revisions)}"
            problems.append(Problem("error", "numbering", message, f.name))
        elif previous is not None and f.down_revisions != (previous.revision,):
            revises = ", ".join(f.down_revisions) or "nothing"
            message = (
                f"{f.name} revises {revises}, but the "
                f"migration numbered before it is {previous.name} (revision "
                f"{previous.revision}): numbering must follow the revision chain"
            )
            problems.append(Problem("error", "numbering", message, f.name))
        previous = f
    return problems

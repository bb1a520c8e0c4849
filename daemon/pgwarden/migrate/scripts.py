"""Reading an application's Alembic migration files with :mod:`ast`, never importing them.

This module owns what pgwarden knows about one migration file: its name, its sha256, the
``revision`` and ``down_revision`` it assigns at module level (plain or annotated
assignments, e.g. ``revision: str = "002"``; the values must be literals, as Alembic's
templates write them), and whether its ``downgrade()`` does real work.  A ``downgrade()``
whose body is only a docstring, ``pass``, ``...`` or a ``raise`` does none.

Importing a user's migration would run its code inside the daemon; :func:`parse_source` only
parses it.  A file that cannot be parsed is returned with ``error`` set, so that the guard
reports it beside every other problem instead of stopping at the first.

:func:`scan` lists the files of the versions directories the way Alembic does: every ``*.py``
file directly inside, except ``__init__.py`` and editor lock files (``.#name.py``).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MigrationFile", "ParsedSource", "parse_source", "read_file", "scan"]

_TRACKED = ("revision", "down_revision")


@dataclass(frozen=True)
class ParsedSource:
    """What :func:`parse_source` found in a migration's text."""

    revision: str | None
    down_revisions: tuple[str, ...]
    downgrade_work: bool
    error: str | None = None


@dataclass(frozen=True)
class MigrationFile:
    """One migration file: ``name`` is its file name (the ledger's key)."""

    name: str
    sha256: str
    revision: str | None
    down_revisions: tuple[str, ...] = ()
    downgrade_work: bool = False
    error: str | None = None
    path: Path | None = None


def parse_source(source: bytes | str) -> ParsedSource:
    """The revision ids and the downgrade verdict of a migration's source text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        return ParsedSource(None, (), False, f"not valid Python: {detail}{where}")
    values: dict[str, object] = {}
    problems: list[str] = []
    downgrade_work = False
    for node in tree.body:
        name, value = _assignment(node)
        if name in _TRACKED and value is not None:
            try:
                values[name] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                problems.append(f"{name} is not a literal value (line {node.lineno})")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "downgrade":
            downgrade_work = does_work(node.body)
    revision = values.get("revision")
    if "revision" not in values and not any(p.startswith("revision ") for p in problems):
        problems.append("it assigns no revision (every Alembic migration sets revision = '...')")
    elif "revision" in values and (not isinstance(revision, str) or not revision.strip()):
        problems.append(f"revision must be a non-empty string (got {revision!r})")
        revision = None
    downs = _down_revisions(values.get("down_revision"), problems)
    return ParsedSource(
        revision=revision if isinstance(revision, str) else None,
        down_revisions=downs,
        downgrade_work=downgrade_work,
        error="; ".join(problems) if problems else None,
    )


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _down_revisions(value: object, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, tuple | list) and all(isinstance(v, str) and v for v in value):
        return tuple(dict.fromkeys(str(v) for v in value))
    problems.append(f"down_revision must be None, a string or a tuple of strings (got {value!r})")
    return ()


def does_work(body: Iterable[ast.stmt]) -> bool:
    """Whether a function body does anything beyond a docstring, ``pass``, ``...``, ``raise``."""
    for statement in body:
        if isinstance(statement, ast.Pass | ast.Raise):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a bare ``...``
        return True
    return False


def read_file(path: Path) -> MigrationFile:
    """Hash and parse one file (an unreadable file comes back with ``error`` set)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return MigrationFile(
            path.name, "", None, error=f"cannot read it: {exc.strerror}", path=path
        )
    parsed = parse_source(data)
    return MigrationFile(
        name=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        revision=parsed.revision,
        down_revisions=parsed.down_revisions,
        downgrade_work=parsed.downgrade_work,
        error=parsed.error,
        path=path,
    )


def is_migration_name(name: str) -> bool:
    """Alembic's rule: ``*.py``, not ``__init__.py``, not an editor lock file."""
    return name.endswith(".py") and not name.startswith(("__init__", ".#"))


def scan(directories: Iterable[Path]) -> list[MigrationFile]:
    """Every migration file of ``directories``, sorted by file name."""
    files: list[MigrationFile] = []
    for directory in directories:
        for path in sorted(directory.iterdir()):
            if is_migration_name(path.name) and path.is_file():
                files.append(read_file(path))
    return sorted(files, key=lambda f: f.name)

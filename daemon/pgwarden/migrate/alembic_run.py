"""The application's own ``alembic upgrade head``: its argv and environment, and running it.

:func:`plan_command` builds the exact command and the child's environment: the allow-list of
:mod:`pgwarden.pg.environment` (``PATH``, ``HOME``, locale...), ``PYTHONUNBUFFERED``, and
``database_url_env`` holding the target's URL *with its password*.  :func:`run_upgrade` runs it
through :mod:`pgwarden.pg.process` (an argv, never a shell) with that password scrubbed from
every line it prints and from the tail kept for the outcome, then reads the database's revision
again; :func:`failure_message` says what went wrong.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pgwarden.config import Config, Secret, TargetConfig
from pgwarden.logsetup import get_logger
from pgwarden.migrate.database import DatabaseError, database_url, display_url, read_revisions
from pgwarden.migrate.outcome import AlembicCommand
from pgwarden.migrate.project import AlembicProject, resolve_alembic
from pgwarden.pg import process
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.environment import base_environment
from pgwarden.redaction import scrubber_for

__all__ = ["child_environment", "failure_message", "last_error_line", "plan_command", "run_upgrade"]

log = get_logger("pgwarden.migrate")

_STDOUT_LINES = 20
#: alembic's ``FAILED: ...``, or a traceback's last line (``psycopg.errors.UndefinedTable: ...``)
_ERROR_LINE = re.compile(
    r"^(?:FAILED: |[A-Za-z_]\w*(?:\.\w+)+: |[A-Za-z_]\w*(?:Error|Exception): )"
)


def child_environment(url_env: str | None, url: Secret | None) -> dict[str, str]:
    """What the application's ``alembic`` gets: path, home, locale, and the database URL.

    The daemon's environment is not passed on wholesale: it may hold other targets'
    ``password_env`` variables: the allow-list is
    :func:`~pgwarden.pg.environment.base_environment`'s, without libpq's variables (``env.py``
    gets its database from the URL, or finds it itself).
    """
    env = base_environment()
    env["PYTHONUNBUFFERED"] = "1"
    if url_env and url is not None:
        env[url_env] = url.reveal()
    return env


def plan_command(
    config: Config, target: TargetConfig, project: AlembicProject, spec: ConnSpec
) -> tuple[AlembicCommand, dict[str, str]]:
    """The exact alembic command and the child's environment (which holds the password)."""
    settings = target.migrations
    url_env = settings.database_url_env
    scheme = settings.url_scheme
    env = child_environment(url_env, database_url(spec, scheme) if url_env else None)
    executable = resolve_alembic(config, target, settings, env["PATH"])
    command = AlembicCommand(
        argv=(str(executable), "-c", str(project.ini), "upgrade", "head"),
        cwd=project.project,
        env_names=tuple(sorted(env)),
        database_url_env=url_env,
        display_url=display_url(spec, scheme) if url_env else None,
        timeout=settings.timeout,
    )
    return command, env


class _ScrubbingLogger:
    """A :class:`~pgwarden.pg.process.ToolLogger` that scrubs every value before logging."""

    def __init__(self, scrubber: Callable[[str], str], **bound: Any) -> None:
        self._scrub = scrubber
        self._log = log.bind(**bound)

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: self._scrub(v) if isinstance(v, str) else v for k, v in fields.items()}

    def info(self, event: str, /, *args: Any, **kw: Any) -> Any:
        return self._log.info(event, *args, **self._clean(kw))

    def warning(self, event: str, /, *args: Any, **kw: Any) -> Any:
        return self._log.warning(event, *args, **self._clean(kw))


class _StdoutTail:
    """Keeps the last lines alembic printed on stdout (it normally logs to stderr)."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=_STDOUT_LINES)
        self._partial = b""

    def __call__(self, chunk: bytes) -> None:
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self._partial = self._partial[-65536:]
        for raw in complete:
            if raw.strip():
                self._lines.append(raw.decode("utf-8", "replace")[:2000])

    def text(self) -> str:
        rest = [self._partial.decode("utf-8", "replace")] if self._partial.strip() else []
        return "\n".join([*self._lines, *rest][-_STDOUT_LINES:])


def run_upgrade(
    command: AlembicCommand,
    env: dict[str, str],
    spec: ConnSpec,
    cancel: threading.Event | None,
    *,
    target: str,
    pending: Sequence[str],
) -> tuple[process.ToolResult, str, tuple[str, ...]]:
    """Run ``command``; its result, its scrubbed stderr (or stdout) tail, and the database's
    revision afterwards (``()`` when unreadable after a failed run)."""
    scrubber = scrubber_for((spec.password,))  # as typed and URL-encoded
    stdout = _StdoutTail()
    log.info(
        "running alembic upgrade head",
        target=target,
        command=command.shell_line(),
        pending=list(pending),
    )
    result = process.run_tool(
        command.argv,
        env=env,
        cwd=command.cwd,
        timeout=command.timeout,
        cancel=cancel,
        name="alembic",
        log=_ScrubbingLogger(scrubber, target=target),
        stdout=stdout,
    )
    tail = scrubber(result.stderr_tail or stdout.text())
    try:
        after = read_revisions(spec, target)
    except DatabaseError as exc:
        if result.ok:
            raise
        after = ()
        tail += f"\n(pgwarden could not read the revision afterwards: {exc})"
    return result, tail, after


def failure_message(
    command: AlembicCommand,
    head: str,
    result: process.ToolResult,
    after: tuple[str, ...],
    tail: str,
) -> str:
    """Why an upgrade to ``head`` failed: alembic's exit and last error line, or a database
    that is not at the head although alembic exited 0."""
    if result.ok:
        where = (
            f"${command.database_url_env}" if command.database_url_env else "the target's database"
        )
        return (
            f"alembic exited 0 but the database is at {', '.join(after) or 'no revision'}"
            f", not {head}: does env.py connect to {where}?"
        )
    error = f"alembic upgrade head {result.describe()}"
    cause = last_error_line(tail)
    if cause:
        error += f": {cause}"
    return error


def last_error_line(text: str) -> str | None:
    """The last line of a stderr tail that states an error (an exception, alembic's FAILED:)."""
    for line in reversed(text.splitlines()):
        if _ERROR_LINE.match(line):
            return line.strip()[:500]
    return None

"""The exception tree of pgwarden: one root, subtrees by concern, data in attributes.

Every error that crosses a module boundary is a :class:`PgwardenError`.  Its ``code`` is what
the control socket puts in ``error.code`` and its ``exit_code`` is what the CLI exits with
(DESIGN.md: 1 the operation failed, 2 usage or configuration error, 3 the daemon cannot be
reached).  Messages never contain secrets: callers pass redacted text only.

:func:`describe` is the one way to put a caught exception into a message, a log field or a
check result: one redacted line, with PostgreSQL's SQLSTATE and short DETAIL/HINT kept.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pgwarden.redaction import redact

if TYPE_CHECKING:
    import psycopg

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: a DETAIL or HINT longer than this is left out of :func:`describe`'s line
DIAGNOSTIC_MAX = 200


class PgwardenError(Exception):
    """Root of every pgwarden error."""

    code = "failed"
    exit_code = EXIT_FAILED


class ConfigError(PgwardenError):
    """One or more problems in a configuration file, each naming its key path."""

    code = "config"
    exit_code = EXIT_USAGE

    def __init__(self, file: Path | str, problems: Sequence[str]) -> None:
        self.file = str(file)
        self.problems = tuple(problems)
        lines = [f"{self.file}: {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class UsageError(PgwardenError):
    """A command was called with arguments that cannot work."""

    code = "usage"
    exit_code = EXIT_USAGE


class CredentialError(PgwardenError):
    """A password could not be obtained from the configured source."""

    code = "credentials"


class ToolError(PgwardenError):
    """An external tool (pg_dump, pg_restore, psql...) failed or could not be used."""

    code = "tool"

    def __init__(
        self, tool: str, message: str, returncode: int | None = None, stderr_tail: str = ""
    ) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        text = f"{tool}: {message}"
        if stderr_tail:
            text += f"\n{stderr_tail}"
        super().__init__(text)


class IncompatibleToolError(ToolError):
    """No binary of a suitable major version was found (pg_dump older than the server...)."""

    code = "incompatible_tool"


class BackupError(PgwardenError):
    """A backup could not be taken or published."""

    code = "backup_failed"


class InsufficientSpaceError(BackupError):
    """The storage does not have room for the next backup."""

    code = "no_space"

    def __init__(self, path: Path | str, needed: int, free: int) -> None:
        self.path = str(path)
        self.needed = needed
        self.free = free
        super().__init__(
            f"not enough free space in {self.path}: need about {needed} bytes "
            f"(estimate plus margin), {free} bytes free"
        )


class StallError(PgwardenError):
    """A run moved no bytes and did no work for its ``stall_timeout``, and was cancelled."""

    code = "stalled"


class OffsiteError(PgwardenError):
    """An off-site copy could not be uploaded, listed, downloaded or deleted."""

    code = "offsite_failed"


class NotFoundError(PgwardenError):
    """A target, backup or job that was named does not exist."""

    code = "not_found"
    exit_code = EXIT_USAGE


class BusyError(PgwardenError):
    """A job for that target is already running, or the backup is locked."""

    code = "busy"


class VerificationFailed(PgwardenError):
    """A restore drill check did not hold."""

    code = "verification_failed"

    def __init__(self, check: str, expected: object, actual: object, detail: str = "") -> None:
        self.check = check
        self.expected = expected
        self.actual = actual
        message = f"{check}: expected {expected!r}, got {actual!r}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class CatalogError(PgwardenError):
    """The run-history catalog cannot be used (unknown revision, unreachable...)."""

    code = "catalog"


class ControlError(PgwardenError):
    """An error answered on the control socket; ``code`` becomes ``error.code``."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_FAILED) -> None:
        self.code = code
        self.exit_code = exit_code
        super().__init__(message)


class DaemonUnreachable(PgwardenError):
    """The CLI could not talk to the daemon over its socket."""

    code = "unreachable"
    exit_code = EXIT_UNREACHABLE


def describe(exc: BaseException) -> str:
    """One redacted line saying what went wrong: the message's first line, else the type name.

    A SQLAlchemy ``DBAPIError`` is described by the driver's error it wraps (``orig``).  A
    psycopg error keeps what PostgreSQL said beyond the first line when it is short -- its
    DETAIL and HINT -- and its SQLSTATE::

        duplicate key value violates unique constraint "t_pkey"; DETAIL: Key (a)=(1) already
        exists. (SQLSTATE 23505)
    """
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    driver_error = _psycopg_error(exc)
    if driver_error is not None:
        line = _with_diagnostics(line, driver_error)
    return redact(line)


def describe_unexpected(exc: BaseException) -> str:
    """:func:`describe` prefixed by the exception's type: for errors no code path expected (a
    bug, an unwrapped library error), where the type is what a developer needs first."""
    text = describe(exc)
    name = type(exc).__name__
    return name if text == name else f"{name}: {text}"


def _psycopg_error(exc: BaseException) -> psycopg.Error | None:
    # looked up, not imported: the CLI's ctl client imports this module and never needs
    # psycopg (+0.15 s measured); an exception of psycopg's exists only once it is loaded
    module = sys.modules.get("psycopg")
    error_type: type[psycopg.Error] | None = getattr(module, "Error", None)
    return exc if error_type is not None and isinstance(exc, error_type) else None


def _with_diagnostics(line: str, exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [line]
    for label, raw in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        value = (raw or "").strip()
        if value and "\n" not in value and len(value) <= DIAGNOSTIC_MAX and value not in line:
            parts.append(f"{label}: {value}")
    described = "; ".join(parts)
    return f"{described} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else described

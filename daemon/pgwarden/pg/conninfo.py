"""Connection specifications: a libpq conninfo plus a password kept apart from it.

This module owns how pgwarden *describes* a connection and hands it on, to psycopg in-process
and to libpq command-line tools in child processes:

* :class:`ConnSpec` holds ``dsn`` -- always a ``key=value`` conninfo **without** a password
  (a password embedded in the configured DSN, allowed only with
  ``allow_plaintext_passwords``, is moved out at construction) -- and ``password``, a
  :class:`~pgwarden.config.Secret`.  ``repr``/``str`` show :meth:`ConnSpec.redacted` only.
* :meth:`ConnSpec.connect` passes the password to psycopg as a keyword (psycopg builds the
  conninfo with ``make_conninfo``, never by concatenation).
* :meth:`ConnSpec.tool_env` builds a child environment: every conninfo parameter that has a
  libpq environment variable is exported (``PGHOST``, ``PGPORT``, ``PGSSLMODE``...), and the
  password is written to a private pgpass file (0600 from creation) named by ``PGPASSFILE``.
  The password is never on a command line (``ps``) nor in a child's environment
  (``/proc/PID/environ``).  The daemon's own environment is *not* inherited wholesale: only
  locale/path basics and libpq's variables pass (a ``password_env`` variable does not; see
  :func:`pgwarden.pg.environment.base_environment`).
* Parameters without an environment variable (``keepalives``, ``tcp_user_timeout``...) reach a
  tool only through ``--dbname``: pass :meth:`ConnSpec.tool_conninfo` (no secrets) there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgwarden.config import Credentials, Secret, TargetConfig
from pgwarden.errors import CredentialError, UsageError
from pgwarden.pg.credentials import resolve_password
from pgwarden.pg.environment import LIBPQ_ENV, base_environment
from pgwarden.redaction import DSN_SECRET_PARAMS, redact_dsn

#: seconds; used when neither the DSN nor the caller sets ``connect_timeout``
DEFAULT_CONNECT_TIMEOUT = 10
#: conninfo keywords whose values are secrets: never logged, never given to a tool's argv
SECRET_PARAMS = DSN_SECRET_PARAMS
PGPASS_NAME = "pgpass"

__all__ = [
    "LIBPQ_ENV",
    "SECRET_PARAMS",
    "ConnSpec",
    "dsn_params",
    "tool_environment",
    "write_pgpass",
]


def dsn_params(dsn: str) -> dict[str, str]:
    """The parameters of a conninfo or ``postgresql://`` URI, as strings (``None``s dropped)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's message may quote the DSN, password included: not chained
        raise UsageError("not a valid libpq connection string or postgresql:// URI") from None
    return {k: str(v) for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class ConnSpec:
    """A conninfo without password (``dsn``) and the password that goes with it."""

    dsn: str
    password: Secret | None = None

    def __post_init__(self) -> None:
        params = dsn_params(self.dsn)
        embedded = params.pop("password", None)
        password = self.password if self.password is not None else embedded
        if password is not None and not isinstance(password, Secret):
            password = Secret(password)
        object.__setattr__(self, "dsn", make_conninfo("", **params))
        object.__setattr__(self, "password", password or None)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dsn(
        cls, dsn: str, creds: Credentials | None = None, *, what: str = "connection"
    ) -> ConnSpec:
        """Resolve ``creds`` (see :func:`resolve_password`) for ``dsn``; a configured source
        wins over a password written in the DSN itself."""
        password = resolve_password(creds, what) if creds is not None else None
        try:
            return cls(dsn, password)
        except UsageError as exc:
            # the same error with its connection named; its own cause was dropped (the DSN)
            raise UsageError(f"{what}: {exc}") from None

    @classmethod
    def from_target(cls, target: TargetConfig) -> ConnSpec:
        return cls.from_dsn(target.dsn, target.credentials, what=f"targets[{target.name}]")

    def with_params(self, **params: str | int | None) -> ConnSpec:
        """A copy with conninfo parameters set (``None`` removes one)."""
        merged = self.params()
        for key, value in params.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = str(value)
        return ConnSpec(make_conninfo("", **merged), self.password)

    def with_dbname(self, name: str) -> ConnSpec:
        return self.with_params(dbname=name)

    # -- inspection ---------------------------------------------------------------------------

    def params(self) -> dict[str, str]:
        """The conninfo parameters (never a ``password``)."""
        return dsn_params(self.dsn)

    @property
    def dbname(self) -> str | None:
        """The database named in the DSN (libpq would default to the user name)."""
        return self.params().get("dbname")

    def redacted(self) -> str:
        """The conninfo without any secret parameter: safe for logs and messages."""
        return redact_dsn(self.dsn)

    def __repr__(self) -> str:
        shown = "Secret('***')" if self.password is not None else "None"
        return f"ConnSpec({self.redacted()!r}, password={shown})"

    def __str__(self) -> str:
        return self.redacted()

    # -- use ----------------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """``psycopg.connect`` with the password as a keyword; ``kwargs`` are psycopg's
        (``autocommit=True``) or conninfo parameters (``application_name="x"``).  A
        ``connect_timeout`` of :data:`DEFAULT_CONNECT_TIMEOUT` applies unless one is given."""
        if "connect_timeout" not in kwargs and "connect_timeout" not in self.params():
            kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        conn: psycopg.Connection[Any] = psycopg.connect(self.dsn, **kwargs)
        return conn

    def tool_conninfo(self) -> str:
        """The conninfo to give a tool as ``--dbname`` (argv is visible in ``ps``: no secrets).

        Refuses a DSN holding another secret (``sslpassword``...), which a tool could only get
        on its command line.  When pgwarden supplies the password, a ``passfile`` in the DSN is
        dropped so that it cannot shadow the private pgpass file.
        """
        params = self.params()
        secrets = sorted(k for k in params if k in SECRET_PARAMS)
        if secrets:
            raise CredentialError(
                f"{self.redacted()}: {', '.join(secrets)} cannot be passed to a command-line "
                "tool without showing it in the process list"
            )
        if self.password is not None:
            params.pop("passfile", None)
        return make_conninfo("", **params)

    def tool_env(self, tmpdir: Path) -> dict[str, str]:
        """The environment for a libpq tool; writes ``tmpdir/pgpass`` when there is a password.

        ``tmpdir`` must be private (see :func:`tool_environment`, which also cleans up).
        """
        env = base_environment(libpq=True)
        for key, value in self.params().items():
            var = LIBPQ_ENV.get(key)
            if var is not None:
                env[var] = value
        env["PG_COLOR"] = "never"
        if self.password is not None:
            path = write_pgpass(tmpdir / PGPASS_NAME, self.password, user=self.params().get("user"))
            env["PGPASSFILE"] = str(path)
        return env


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_pgpass(path: Path, password: Secret, *, user: str | None = None) -> Path:
    """Create ``path`` (must not exist) as a one-line pgpass file, mode 0600 from creation.

    The line matches any host, port and database (the tool connects only where its conninfo
    says) and the DSN's user when it names one.
    """
    secret = password.reveal()
    if "\n" in secret or "\r" in secret:
        raise CredentialError("a password containing a line break cannot go into a pgpass file")
    who = _pgpass_escape(user) if user else "*"
    line = f"*:*:*:{who}:{_pgpass_escape(secret)}\n".encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did, exactly 0600
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


@contextmanager
def tool_environment(spec: ConnSpec, *, tmp_root: Path | None = None) -> Iterator[dict[str, str]]:
    """``spec.tool_env()`` in a fresh private directory (0700), removed on exit.

    The directory goes under ``tmp_root``, else systemd's ``$RUNTIME_DIRECTORY`` (a tmpfs:
    the pgpass file never touches a disk), else the system temp dir.
    """
    root: str | None = str(tmp_root) if tmp_root is not None else None
    if root is None and os.environ.get("RUNTIME_DIRECTORY"):
        root = os.environ["RUNTIME_DIRECTORY"].split(":")[0]
    tmpdir = Path(tempfile.mkdtemp(prefix="pgwarden-tool-", dir=root))
    try:
        tmpdir.chmod(0o700)
        yield spec.tool_env(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

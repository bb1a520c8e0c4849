"""The least-privilege roles pgwarden connects as, as SQL (``pgwarden config roles``).

Pure: built from the configuration alone, no server is contacted.  Who connects where:

* the **target's DSN** (``[[targets]] dsn``) is used for backups *and* monitoring, so its role
  gets both sets of grants, on the production server:

  - backup: ``LOGIN``, ``CONNECT`` on the database, ``pg_read_all_data`` (PostgreSQL 14+;
    before 14: ``USAGE`` on every schema, ``SELECT`` on every table and sequence, and default
    privileges for the roles that own them); and ``SELECT`` on every large object, which
    ``pg_read_all_data`` does not cover (on 18+ also default privileges for large objects);
  - monitoring: ``pg_monitor`` (other roles' sessions, settings and statistics);

* the **verification server** (``[targets.verify] dsn``, default: the target's own server and
  role) gets a role with ``CREATEDB`` and nothing else: it creates, restores into and drops its
  scratch databases, which it owns.

A DSN without ``user`` gets a default name (:data:`DEFAULT_BACKUP_ROLE`,
:data:`DEFAULT_VERIFY_ROLE`) and a note to add it to the DSN.  Identifiers are quoted by
:mod:`psycopg.sql`; no password is ever printed or set (a ``\\password`` hint instead).  Each
:class:`RoleScript` says on which server, in which database, its statements run.

:func:`backup_grant_hint` turns a "permission denied" message of a backup into the grant that
is missing, for the backup's error message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pgwarden.config import TargetConfig
from pgwarden.pg.conninfo import dsn_params

__all__ = [
    "DEFAULT_BACKUP_ROLE",
    "DEFAULT_SERVER_MAJOR",
    "DEFAULT_VERIFY_ROLE",
    "MIN_SERVER_MAJOR",
    "RoleScript",
    "backup_grant_hint",
    "render_sql",
    "role_scripts",
]

DEFAULT_BACKUP_ROLE = "pgwarden_backup"
DEFAULT_VERIFY_ROLE = "pgwarden_verify"
#: without ``--server-version``: statements that work on every PostgreSQL 14 or newer
DEFAULT_SERVER_MAJOR = 14
#: ``pg_monitor`` exists since PostgreSQL 10
MIN_SERVER_MAJOR = 10
READ_ALL_DATA_MAJOR = 14
LARGE_OBJECT_DEFAULTS_MAJOR = 18
SEE_ALSO = "see `pgwarden config roles`"

#: the roles owning the database, its schemas, tables and large objects (for default privileges)
_OWNERS = """SELECT DISTINCT pg_get_userbyid(owner_id) FROM (
      SELECT datdba FROM pg_database WHERE datname = current_database()
      UNION SELECT nspowner FROM pg_namespace
      UNION SELECT relowner FROM pg_class
      UNION SELECT lomowner FROM pg_largeobject_metadata) AS owners(owner_id)
    WHERE pg_get_userbyid(owner_id) !~ '^pg_'"""
_LARGE_OBJECTS = """  -- large objects (pg_read_all_data does not cover them): SELECT on each existing one
  FOR lo IN SELECT oid FROM pg_largeobject_metadata LOOP
    EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', lo, r);
  END LOOP;"""
_LARGE_OBJECT_DEFAULTS = f"""  -- and on the large objects their owners create from now on (PostgreSQL 18+)
  FOR o IN {_OWNERS} LOOP
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON LARGE OBJECTS TO %I',
                   o, r);
  END LOOP;"""
_BEFORE_14 = f"""  -- no pg_read_all_data before PostgreSQL 14: every schema, table and sequence
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, r);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', s, r);
    EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', s, r);
  END LOOP;
  -- and what their owners create from now on
  FOR o IN {_OWNERS} LOOP
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE ON SCHEMAS TO %I', o, r);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON TABLES TO %I', o, r);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON SEQUENCES TO %I',
                   o, r);
  END LOOP;"""


@dataclass(frozen=True)
class RoleScript:
    """Statements for one role, to run as a superuser on ``server`` in ``database``."""

    target: str
    purpose: str  # "backup", "monitoring" or "verification"
    server: str  # host:port, as the DSN names it
    database: str
    role: str
    statements: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "purpose": self.purpose,
            "server": self.server,
            "database": self.database,
            "role": self.role,
            "statements": list(self.statements),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Conn:
    """Who connects where, as a DSN says (no password: only these four are kept)."""

    server: str
    database: str
    role: str
    named: bool  # the DSN names its user

    @classmethod
    def of(cls, dsn: str, default_role: str, default_db: str | None = None) -> _Conn:
        params = dsn_params(dsn)
        user = params.get("user")
        host = params.get("host") or params.get("hostaddr") or "local socket"
        server = f"{host}:{params.get('port') or '5432'}"
        role = user or default_role
        return cls(server, params.get("dbname") or default_db or role, role, user is not None)


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string()


def _do_block(body: str, role: str) -> str:
    """A ``DO`` block declaring ``r`` (the role, as a literal) around ``body``."""
    tag = "$pgwarden$"
    while tag in role:
        tag = tag[:-1] + "_$"
    return (
        f"DO {tag}\nDECLARE\n  r text := {sql.Literal(role).as_string()};\n"
        f"  s text;\n  o text;\n  lo oid;\nBEGIN\n{body}\nEND\n{tag};"
    )


def _backup_statements(conn: _Conn, major: int, create: bool) -> list[str]:
    role = _ident(conn.role)
    out = [f"CREATE ROLE {role} LOGIN;"] if create else []
    out.append(f"GRANT CONNECT ON DATABASE {_ident(conn.database)} TO {role};")
    parts = [_LARGE_OBJECTS]
    if major >= READ_ALL_DATA_MAJOR:
        out.append(f"GRANT pg_read_all_data TO {role};")
    else:
        parts.insert(0, _BEFORE_14)
    if major >= LARGE_OBJECT_DEFAULTS_MAJOR:
        parts.append(_LARGE_OBJECT_DEFAULTS)
    out.append(_do_block("\n".join(parts), conn.role))
    return out


def _password_note(role: str) -> str:
    return f"set a password with psql's: \\password {_ident(role)}"


def _unnamed_note(role: str, key: str) -> str:
    return f"{key} names no user: add {role} to it (postgresql://{role}@host/db)"


def role_scripts(
    targets: Sequence[TargetConfig], server_major: int = DEFAULT_SERVER_MAJOR
) -> list[RoleScript]:
    """The statements that create pgwarden's roles for ``targets``, in order: a role is
    created once per server even when several targets share it."""
    created: set[tuple[str, str]] = set()
    monitored: set[tuple[str, str]] = set()
    out: list[RoleScript] = []
    for target in targets:
        out.extend(_target_scripts(target, server_major, created, monitored))
    return out


def _target_scripts(
    target: TargetConfig,
    major: int,
    created: set[tuple[str, str]],
    monitored: set[tuple[str, str]],
) -> list[RoleScript]:
    key = f"targets[{target.name}]"
    prod = _Conn.of(target.dsn, DEFAULT_BACKUP_ROLE)
    new = (prod.server, prod.role) not in created
    created.add((prod.server, prod.role))
    notes = [] if prod.named else [_unnamed_note(prod.role, f"{key}.dsn")]
    notes.append(
        "only if a table uses row-level security (pg_dump refuses to dump it filtered): "
        f"ALTER ROLE {_ident(prod.role)} BYPASSRLS;"
    )
    if new:
        notes.append(_password_note(prod.role))
    name = target.name
    scripts = [
        RoleScript(
            name,
            "backup",
            prod.server,
            prod.database,
            prod.role,
            tuple(_backup_statements(prod, major, new)),
            tuple(notes),
        )
    ]
    if (prod.server, prod.role) not in monitored:
        monitored.add((prod.server, prod.role))
        statement = f"GRANT pg_monitor TO {_ident(prod.role)};"
        scripts.append(
            RoleScript(name, "monitoring", prod.server, prod.database, prod.role, (statement,))
        )
    scripts.append(_verify_script(target, prod, created))
    return scripts


def _verify_script(target: TargetConfig, prod: _Conn, created: set[tuple[str, str]]) -> RoleScript:
    key = f"targets[{target.name}].verify.dsn"
    if target.verify.dsn is None:
        conn = prod
        notes = [
            f"no {key}: drills run on the production server as {prod.role}, which then needs "
            "CREATEDB there; a verification server of its own (with a role of its own) keeps "
            "production read-only"
        ]
    else:
        conn = _Conn.of(target.verify.dsn, DEFAULT_VERIFY_ROLE, "postgres")
        notes = [] if conn.named else [_unnamed_note(conn.role, key)]
        if conn.server == prod.server:
            notes.append("this is the production server: a server of its own keeps it read-only")
    role = _ident(conn.role)
    if (conn.server, conn.role) in created:
        statement = f"ALTER ROLE {role} CREATEDB;"
    else:
        created.add((conn.server, conn.role))
        statement = f"CREATE ROLE {role} LOGIN CREATEDB;"
        notes.append(_password_note(conn.role))
    notes.append(
        "an extension that is not marked trusted (pgvector, postgis...) is created by the "
        "restore only as a superuser: drill such backups on a verification server of their "
        f"own, where ALTER ROLE {role} SUPERUSER; is acceptable"
    )
    return RoleScript(
        target.name,
        "verification",
        conn.server,
        conn.database,
        conn.role,
        (statement,),
        tuple(notes),
    )


_PURPOSES = {
    "backup": "backups (pg_dump, snapshot facts)",
    "monitoring": "monitoring and `pgwarden check`",
    "verification": "restore drills (scratch databases)",
}


def render_sql(scripts: Sequence[RoleScript], server_major: int = DEFAULT_SERVER_MAJOR) -> str:
    """The scripts as one SQL text: a comment before each block names its server and database."""
    version = (
        f"PostgreSQL {server_major} or newer"
        if server_major == DEFAULT_SERVER_MAJOR
        else f"PostgreSQL {server_major}"
    )
    lines = [
        f"-- pgwarden's roles, for {version} (another: --server-version N).",
        "-- Run each block as a superuser with psql, connected to the server and database its",
        "-- comment names. No password is set here.",
    ]
    for script in scripts:
        lines.append("")
        lines.append(f"-- target {script.target}, {_PURPOSES[script.purpose]}: role {script.role}")
        lines.append(f"-- run on {script.server}, in database {script.database}")
        lines.extend(script.statements)
        lines.extend(f"-- {note}" for note in script.notes)
    return "\n".join(lines) + "\n"


_HINTS = (
    (
        r"permission denied for (table|view|materialized view)",
        "the backup role needs pg_read_all_data (PostgreSQL 14+) or SELECT on every table",
    ),
    (
        r"permission denied for schema",
        "the backup role needs pg_read_all_data (PostgreSQL 14+) or USAGE on every schema",
    ),
    (
        r"permission denied for sequence",
        "the backup role needs pg_read_all_data (PostgreSQL 14+) or SELECT on every sequence",
    ),
    (
        r"permission denied for large object",
        "the backup role needs SELECT on every large object (pg_read_all_data does not cover "
        "large objects)",
    ),
    (
        r"permission denied for database|does not have CONNECT privilege",
        "the backup role needs CONNECT on the database",
    ),
    (
        r"affected by row-level security policy",
        "the backup role needs BYPASSRLS to dump a table with row-level security",
    ),
)


def backup_grant_hint(message: str) -> str | None:
    """The grant a backup's "permission denied" ``message`` says is missing, or ``None``::

    the backup role needs pg_read_all_data (PostgreSQL 14+) or SELECT on every table; see
    `pgwarden config roles`
    """
    for pattern, hint in _HINTS:
        if re.search(pattern, message):
            return f"{hint}; {SEE_ALSO}"
    return None

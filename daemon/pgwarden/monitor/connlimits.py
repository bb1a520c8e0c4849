"""Per-database and per-role connection limits: ``CONNECTION LIMIT`` in the saturation figures.

PostgreSQL refuses a new session when the database's ``datconnlimit`` or the role's
``rolconnlimit`` is reached (``-1`` means no limit), long before ``max_connections`` when such a
limit is set.  This module owns reading those limits and judging them:

* :func:`read_limits` reads ``pg_database`` and ``pg_roles`` (readable by every role) into a
  :class:`Limits` -- the databases and the (non-superuser) roles that have a limit;
* :func:`summarize_limits` joins them with one :class:`~.connections.Activity` into
  :class:`ConnLimitSample` rows: every database that has a limit, and every role that has a
  limit *or* holds a connection (bounded by the roles that exist, not by the traffic);
* :func:`limit_checks` turns them into ``pgwarden check`` items for one target;
* :func:`limit_families` exports them (``pgwarden_database_connection_limit``,
  ``pgwarden_database_connections_used_ratio``, ``pgwarden_role_connection_limit``,
  ``pgwarden_role_connections_used_ratio``, labels ``target`` -- the server label, as on
  ``pgwarden_server_*`` -- and ``database`` / ``role``) from the snapshot, never from a query.

Decisions, written down here:

* a role's limit is also bounded by the server's usable slots
  (``max_connections - superuser_reserved_connections - reserved_connections``): its
  *effective* limit is ``min(rolconnlimit, usable)``, and a role without a limit is measured
  against ``usable`` alone.  A database limit is bounded the same way.
* superusers ignore ``rolconnlimit`` and ``datconnlimit`` (PostgreSQL does not enforce them);
  a superuser role is therefore measured against ``usable`` only, and their sessions still
  count in a database's figure, as PostgreSQL counts them.
* counts are client backends as in :mod:`.connections` (PostgreSQL counts a role's and a
  database's sessions the same way), pgwarden's own monitoring session included -- it is one
  of the sessions PostgreSQL counts.
* thresholds: warn from :data:`WARN_RATIO` (80 %, the checklist's headroom threshold), fail
  when the connections reach the limit (the next session is refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import sqlalchemy
from prometheus_client.core import GaugeMetricFamily, Metric

from pgwarden.monitor.connections import Activity
from pgwarden.monitor.verdicts import CheckResult, Status

#: warn from this share of a limit (the checklist's headroom threshold)
WARN_RATIO = 0.8

_DATABASES_SQL = sqlalchemy.text(
    "SELECT datname, datconnlimit FROM pg_database WHERE datconnlimit >= 0 AND NOT datistemplate"
)
_ROLES_SQL = sqlalchemy.text(
    "SELECT rolname, rolconnlimit FROM pg_roles WHERE rolconnlimit >= 0 AND NOT rolsuper"
)


@dataclass(frozen=True)
class Limits:
    """The declared limits of one server (only databases and roles that have one)."""

    databases: Mapping[str, int]
    #: superusers left out: PostgreSQL does not apply their limit
    roles: Mapping[str, int]


@dataclass(frozen=True)
class ConnLimitSample:
    """One database or role: its connections against its effective limit."""

    kind: str  # "database" or "role"
    name: str
    connections: int
    #: the declared CONNECTION LIMIT, -1 for none (or ignored: a superuser)
    declared: int
    #: min(declared, usable), or usable when there is no declared limit
    limit: int

    @property
    def ratio(self) -> float:
        return self.connections / self.limit if self.limit > 0 else float(self.connections > 0)


def read_limits(conn: sqlalchemy.Connection) -> Limits:
    """Read the databases' and roles' connection limits (one transaction)."""
    with conn.begin():
        databases = conn.execute(_DATABASES_SQL).all()
        roles = conn.execute(_ROLES_SQL).all()
    return Limits(
        databases=MappingProxyType({str(name): int(n) for name, n in databases}),
        roles=MappingProxyType({str(name): int(n) for name, n in roles}),
    )


def _counts(activity: Activity, attr: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in activity.groups:
        key = getattr(g, attr)
        if key:
            out[key] = out.get(key, 0) + g.count
    return out


def _effective(declared: int, usable: int) -> int:
    return min(declared, usable) if declared >= 0 else usable


def summarize_limits(activity: Activity, limits: Limits) -> tuple[ConnLimitSample, ...]:
    """Databases with a limit, and roles with a limit or a connection, sorted by kind and name."""
    usable = activity.usable
    per_db = _counts(activity, "database")
    per_role = _counts(activity, "user")
    rows = [
        ConnLimitSample("database", name, per_db.get(name, 0), n, _effective(n, usable))
        for name, n in sorted(limits.databases.items())
    ]
    for name in sorted(set(limits.roles) | set(per_role)):
        declared = limits.roles.get(name, -1)
        rows.append(
            ConnLimitSample(
                "role", name, per_role.get(name, 0), declared, _effective(declared, usable)
            )
        )
    return tuple(rows)


# -- pgwarden check --------------------------------------------------------------------------


def judge(row: ConnLimitSample, usable: int) -> tuple[Status, str]:
    """One database's or role's verdict: warn from :data:`WARN_RATIO`, fail at the limit."""
    what = f"{row.kind} {row.name}"
    if row.declared >= 0:
        source = f"CONNECTION LIMIT {row.declared}"
        if row.declared > usable:
            source += f" (above the server's {usable} usable connections, which bind first)"
    else:
        source = f"no CONNECTION LIMIT; the server's {usable} usable connections"
    head = f"{row.connections} of {row.limit} connections for {what} ({row.ratio:.0%}; {source})"
    if row.limit <= row.connections:
        return "fail", (
            f"{head}: at the limit, new sessions are refused with 'too many connections for "
            f'{row.kind} "{row.name}"\'; raise it (ALTER {row.kind.upper()} ... CONNECTION '
            "LIMIT n) or pool the connections"
        )
    if row.ratio >= WARN_RATIO:
        return "warn", f"{head}: past {WARN_RATIO:.0%} of the limit"
    return "pass", head


def limit_checks(
    activity: Activity, limits: Limits, database: str, users: Iterable[str], target: str
) -> list[CheckResult]:
    """Check items for one target: its database's limit, and the limits of its roles.

    The roles judged are those with a declared limit that connect to ``database`` now or are
    named in ``users`` (the target's DSN user).  Superusers are exempt from both limits.
    """
    rows = summarize_limits(activity, limits)
    usable = activity.usable
    in_database = {g.user for g in activity.groups if g.database == database}
    wanted = in_database | set(users)
    out: list[CheckResult] = []
    db_row = next((r for r in rows if r.kind == "database" and r.name == database), None)
    if db_row is None:
        out.append(
            CheckResult(
                "connections.database_limit",
                "pass",
                f"database {database} has no CONNECTION LIMIT (the server's {usable} usable "
                "connections apply)",
                target,
                database,
            )
        )
    else:
        status, detail = judge(db_row, usable)
        out.append(CheckResult("connections.database_limit", status, detail, target, database))
    limited = [r for r in rows if r.kind == "role" and r.declared >= 0 and r.name in wanted]
    for row in limited:
        status, detail = judge(row, usable)
        out.append(CheckResult("connections.role_limit", status, detail, target, row.name))
    if not limited:
        names = ", ".join(sorted(wanted)) or "none"
        out.append(
            CheckResult(
                "connections.role_limit",
                "pass",
                f"no role connecting to {database} has a CONNECTION LIMIT (roles: {names})",
                target,
            )
        )
    return out


# -- metrics ---------------------------------------------------------------------------------


def limit_families(servers: Iterable[tuple[str, Iterable[ConnLimitSample]]]) -> list[Metric]:
    """The four limit gauges for ``(server label, rows)`` pairs (read from a snapshot)."""
    families = {
        (kind, what): GaugeMetricFamily(
            f"pgwarden_{kind}_{what}",
            doc.format(kind=kind),
            labels=["target", kind],
        )
        for kind in ("database", "role")
        for what, doc in (
            (
                "connection_limit",
                "Effective connection limit of a {kind}: its CONNECTION LIMIT bounded by the "
                "server's usable connections (the usable connections when it has none)",
            ),
            (
                "connections_used_ratio",
                "Client backends of a {kind} / its effective connection limit (1 = refusing)",
            ),
        )
    }
    for server, rows in servers:
        for row in rows:
            families[(row.kind, "connection_limit")].add_metric([server, row.name], row.limit)
            families[(row.kind, "connections_used_ratio")].add_metric([server, row.name], row.ratio)
    return list(families.values())

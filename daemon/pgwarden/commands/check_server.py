"""The ``Databases`` line of ``pgwarden check`` for a whole-server target.

Compares the databases the server has now (the target's selection applied) with those the
catalog has backups of: a database that is gone from the server is a ``warn`` naming it -- its
backups are kept under the same retention rules, never deleted because it is gone -- and a
selected database never backed up yet is a ``warn`` too (the next run picks it up).  A server
that cannot be reached is ``unknown`` (the checklist's connection line says why).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from pgwarden.catalog import open_catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import PgwardenError, describe
from pgwarden.monitor.verdicts import CheckResult, Status
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.serverdbs import Discovery, discover
from pgwarden.retention.subtargets import backed_up_databases

CHECK = "backup.databases"


def server_checks(config: Config, target: str | None) -> dict[str, CheckResult]:
    """Per whole-server target: gone and not-yet-backed-up databases."""
    chosen = [t for t in config.targets if t.whole_server and target in (None, t.name)]
    if not chosen or not Path(config.daemon.state_dir).exists():
        return {}
    catalog = open_catalog(config.daemon.effective_catalog_url)
    try:
        return {t.name: _check(t, backed_up_databases(t, catalog)) for t in chosen}
    finally:
        catalog.close()


def _check(target: TargetConfig, known: list[str]) -> CheckResult:
    try:
        found = _discover(target)
    except (psycopg.Error, PgwardenError) as exc:
        detail = f"cannot list the server's databases: {describe(exc)}"
        return CheckResult(CHECK, "unknown", detail, target.name)
    gone = [d for d in known if d not in found.databases and d not in found.excluded]
    new = [d for d in found.databases if d not in known]
    parts = [f"{len(found.databases)} database(s) selected"]
    if gone:
        parts.append(
            f"gone from the server: {', '.join(gone)} (their backups are kept under the "
            "retention rules)"
        )
    if new:
        parts.append(f"not backed up yet: {', '.join(new)}")
    if found.unnamable:
        parts.append(f"names that cannot be a directory, never backed up: {found.unnamable}")
    status: Status = "warn" if gone or new or found.unnamable else "pass"
    return CheckResult(CHECK, status, "; ".join(parts), target.name)


def _discover(target: TargetConfig) -> Discovery:
    spec = ConnSpec.from_target(target)
    with spec.connect(
        application_name="pgwarden-check", autocommit=True, connect_timeout=10
    ) as conn:
        return discover(conn, target)

"""Forward-only guard and safe migrate for users' Alembic projects.

The strategy's migration policy, enforced for each target with ``[targets.migrations]``:
migrations are forward-only (a migration file is never edited or deleted once applied; to undo
one, write a new one), a ``pg_dump`` backup precedes every production schema change and is
kept at least 7 days, ``alembic downgrade`` is never used, files are numbered
``001_initial_schema.py``, ``002_add_users_table.py``...

The parts, each owning one concern:

* :mod:`~pgwarden.migrate.project` -- finding the ini, the versions directories and ``alembic``;
* :mod:`~pgwarden.migrate.scripts` -- reading migration files with :mod:`ast` (never importing);
* :mod:`~pgwarden.migrate.ledger` -- the record of released files under ``state_dir``;
* :mod:`~pgwarden.migrate.database` -- ``alembic_version`` and the URL handed to ``env.py``;
* :mod:`~pgwarden.migrate.revgraph` -- the revision graph the files declare;
* :mod:`~pgwarden.migrate.rules` -- the policy's rules, each a pure function returning problems;
* :mod:`~pgwarden.migrate.guard` -- the guard report those rules make together;
* :mod:`~pgwarden.migrate.alembic_run` -- running the project's ``alembic``: its environment,
  its scrubbed output, its failure message;
* :mod:`~pgwarden.migrate.run` -- :func:`safe_migrate`: guard, pre-migration backup, upgrade;
* :mod:`~pgwarden.migrate.outcome` -- what an upgrade reports, and its errors.

There is no downgrade in pgwarden, by design.
"""

from pgwarden.migrate.guard import GuardReport, Problem, inspect_project
from pgwarden.migrate.ledger import LedgerStore
from pgwarden.migrate.outcome import (
    AlembicCommand,
    MigrateOutcome,
    MigrateStatus,
    MigrationFailed,
    MigrationRefused,
)
from pgwarden.migrate.project import AlembicProject, locate
from pgwarden.migrate.run import PRE_MIGRATION_TAG, safe_migrate

__all__ = [
    "PRE_MIGRATION_TAG",
    "AlembicCommand",
    "AlembicProject",
    "GuardReport",
    "LedgerStore",
    "MigrateOutcome",
    "MigrateStatus",
    "MigrationFailed",
    "MigrationRefused",
    "Problem",
    "inspect_project",
    "locate",
    "safe_migrate",
]

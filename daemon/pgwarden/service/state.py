"""What the daemon holds between jobs: the config in force, the catalog, the storage, metrics.

The config is one reference swapped on reload (together with the time it was loaded); each
job keeps the snapshot it started with.  :func:`check_reloadable` names the settings bound at
start-up (:data:`RESTART_ONLY`), which a reload may not change.  What the daemon does with
these at start-up is :mod:`.recovery`; what it does after each job is :mod:`.outcomes` and
:mod:`.jobkinds`.  :func:`open_migrated` opens the catalog, a SQLite one's migration run by a
child process so that Alembic never stays loaded in the daemon.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pgwarden
from pgwarden.catalog import Catalog, open_catalog
from pgwarden.catalog.db import sqlite_at_head
from pgwarden.config import Config
from pgwarden.errors import CatalogError, ConfigError
from pgwarden.metrics import Metrics
from pgwarden.notify import Dispatcher
from pgwarden.pg.process import run_tool
from pgwarden.storage import Storage, open_storage

#: settings that are bound at start-up; changing them needs a restart, not a reload
RESTART_ONLY = (
    ("daemon", "state_dir"),
    ("daemon", "catalog_url"),
    ("daemon", "socket"),
    ("metrics", "listen"),
    ("metrics", "enabled"),
    ("storage", "path"),
)


def check_reloadable(old: Config, new: Config) -> None:
    """:class:`ConfigError` listing every :data:`RESTART_ONLY` setting ``new`` changes."""
    problems = []
    for section, key in RESTART_ONLY:
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key):
            problems.append(f"{section}.{key}: changing it needs a restart, not a reload")
    if problems:
        raise ConfigError(new.source, problems)


MIGRATE_TIMEOUT_S = 600.0
#: the child that migrates a SQLite catalog (argv: the URL, a path, no secret)
_MIGRATE = (
    "import sys\n"
    "from pgwarden.catalog import open_catalog\n"
    "from pgwarden.errors import CatalogError\n"
    "try:\n"
    "    open_catalog(sys.argv[1]).close()\n"
    "except CatalogError as exc:\n"
    "    sys.exit(str(exc))\n"
)


def open_migrated(url: str) -> Catalog:
    """The daemon's catalog; a SQLite one not at head is migrated by a child process first.

    Alembic (and Mako, Pygments) stay loaded once imported: migrating in the daemon kept
    about 9 MB more RSS for the rest of its life (86 MB idle with 100 targets, against 77 MB
    after a start without migration; the goal is 80).  A PostgreSQL catalog, whose
    credentials come from the daemon's environment, still migrates in-process.
    """
    if sqlite_at_head(url) is False:
        package_root = Path(pgwarden.__file__).resolve().parent.parent
        result = run_tool(
            [sys.executable, "-c", _MIGRATE, url],
            env={"PYTHONPATH": str(package_root), "LANG": "C.UTF-8"},
            name="catalog-migrate",
            timeout=MIGRATE_TIMEOUT_S,
        )
        if not result.ok:
            lines = result.stderr_tail.strip().splitlines()
            raise CatalogError(lines[-1] if lines else f"catalog migration {result.describe()}")
    return open_catalog(url)


class ServiceState:
    def __init__(
        self, config: Config, catalog: Catalog, storage: Storage, metrics: Metrics
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.metrics = metrics
        self._lock = threading.Lock()
        self._config = config
        self._loaded_at = datetime.now(UTC)
        self.notify: Dispatcher | None = None  # the [[notify]] queue, set by the daemon

    @classmethod
    def open(cls, config: Config, metrics: Metrics) -> ServiceState:
        config.daemon.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        catalog = open_migrated(config.daemon.effective_catalog_url)
        return cls(config, catalog, open_storage(config.storage), metrics)

    @property
    def config(self) -> Config:
        """The config in force (a snapshot: hold on to it, it never changes)."""
        with self._lock:
            return self._config

    def config_and_time(self) -> tuple[Config, datetime]:
        """The config in force and when it was loaded, read together."""
        with self._lock:
            return self._config, self._loaded_at

    def swap_config(self, new: Config) -> datetime:
        """Put ``new`` in force; the time it was loaded."""
        with self._lock:
            self._config, self._loaded_at = new, datetime.now(UTC)
            return self._loaded_at

    def close(self) -> None:
        self.catalog.close()

"""What the daemon holds between jobs: the config in force, the catalog, the storage, metrics.

The config is one reference swapped on reload (together with the time it was loaded); each
job keeps the snapshot it started with.  :func:`check_reloadable` names the settings bound at
start-up (:data:`RESTART_ONLY`), which a reload may not change.  What the daemon does with
these at start-up is :mod:`.recovery`; what it does after each job is :mod:`.outcomes` and
:mod:`.jobkinds`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from pgwarden.catalog import Catalog, open_catalog
from pgwarden.config import Config
from pgwarden.errors import ConfigError
from pgwarden.metrics import Metrics
from pgwarden.notify import Dispatcher
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
        catalog = open_catalog(config.daemon.effective_catalog_url)
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

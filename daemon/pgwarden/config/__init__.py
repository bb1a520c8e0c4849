"""Configuration: the TOML file parsed once into frozen dataclasses, validated as a whole.

The package's public surface: the dataclasses of :mod:`.model`, :func:`load` and
:func:`parse` of :mod:`.loader`.  :mod:`.build` turns decoded TOML into the dataclasses
through the typed readers of :mod:`.reader`; :mod:`.cron` validates and evaluates schedules;
:mod:`.render` prints a config back (``config show``, ``config init``); :mod:`.offsite` and
:mod:`.offsite_build` hold ``[[offsite]]``, :mod:`.notify` ``[[notify]]``; :mod:`.secretfiles` reads secrets from the
environment, files and systemd credentials.  Nothing outside this
package reads the file.
"""

from pgwarden.config.loader import default_path, load, parse
from pgwarden.config.model import (
    BACKUP_FORMATS,
    COMPRESSIONS,
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    LOG_FORMATS,
    LOG_LEVELS,
    RESERVED_PG_DUMP_OPTIONS,
    ROW_COUNT_MODES,
    AppPool,
    BackupSettings,
    Config,
    Credentials,
    DaemonConfig,
    MetricsConfig,
    MigrationSettings,
    MonitorConfig,
    PgBouncerConfig,
    PoolSettings,
    RetentionSettings,
    Secret,
    SqlCheck,
    StorageConfig,
    TargetConfig,
    VerifySettings,
)
from pgwarden.config.notify import NotifyConfig
from pgwarden.config.offsite import (
    OffsiteConfig,
    OffsiteEncryption,
    OffsiteRetention,
    SecretSource,
)

__all__ = [
    "BACKUP_FORMATS",
    "COMPRESSIONS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "RESERVED_PG_DUMP_OPTIONS",
    "ROW_COUNT_MODES",
    "AppPool",
    "BackupSettings",
    "Config",
    "Credentials",
    "DaemonConfig",
    "MetricsConfig",
    "MigrationSettings",
    "MonitorConfig",
    "NotifyConfig",
    "OffsiteConfig",
    "OffsiteEncryption",
    "OffsiteRetention",
    "PgBouncerConfig",
    "PoolSettings",
    "RetentionSettings",
    "Secret",
    "SecretSource",
    "SqlCheck",
    "StorageConfig",
    "TargetConfig",
    "VerifySettings",
    "default_path",
    "load",
    "parse",
]

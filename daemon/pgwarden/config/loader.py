"""Reading the configuration file: the one place pgwarden opens its TOML.

:func:`load` reads and decodes the file and notes whether other users can read it (plaintext
passwords are refused then); :func:`parse` validates a decoded document through
:mod:`pgwarden.config.build` and raises one :class:`~pgwarden.errors.ConfigError` listing every
problem with its key path.  Validation is pure: no subprocess, no network, no writes.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from pgwarden.config.build import build
from pgwarden.config.model import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config
from pgwarden.config.reader import Reader
from pgwarden.errors import ConfigError


def default_path() -> Path:
    """The config path from ``$PGWARDEN_CONFIG``, else ``/etc/pgwarden/pgwarden.toml``."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: Path | str | None = None) -> Config:
    """Read, parse and validate a config file; raise :class:`ConfigError` listing all problems."""
    file = Path(path) if path is not None else default_path()
    try:
        raw = file.read_bytes()
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(file, [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 4301+ digits, deep nesting
        raise ConfigError(file, [f"not valid TOML: {exc}"]) from exc
    return parse(data, file, world_readable=bool(mode & (stat.S_IROTH | stat.S_IWOTH)))


def parse(data: dict[str, object], source: Path, *, world_readable: bool = False) -> Config:
    """Validate an already-decoded TOML document.  Pure: no I/O."""
    reader = Reader(data)
    config = build(reader, source, world_readable)
    if reader.errors:
        raise ConfigError(source, reader.errors)
    assert config is not None
    return config

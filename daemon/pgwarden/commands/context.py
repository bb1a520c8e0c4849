"""What one-shot commands share: the config, logging to stderr, the catalog and the storage.

Opening them reaps what dead runs left behind (:mod:`pgwarden.backup.reap`,
:mod:`pgwarden.restore.drillreap`), so a one-shot backup or drill killed from the shell leaves
no ``running`` row nor ``.partial`` past the next command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pgwarden import config as config_mod
from pgwarden import logsetup
from pgwarden.backup.reap import log_reaped, reap_dead_runs
from pgwarden.catalog import Catalog, open_catalog
from pgwarden.config import Config
from pgwarden.errors import describe
from pgwarden.restore.drillreap import log_reaped_drills, reap_dead_drills
from pgwarden.storage import Storage, open_storage

log = logsetup.get_logger("pgwarden.state")


@dataclass
class CommandEnv:
    config: Config
    catalog: Catalog
    storage: Storage


def load_config(args: argparse.Namespace) -> Config:
    config = config_mod.load(args.config or config_mod.default_path())
    # a one-shot command's stdout is its answer; logs go to stderr
    logsetup.configure(config.daemon.log_level, config.daemon.log_format, sys.stderr)
    return config


@contextmanager
def command_env(args: argparse.Namespace) -> Iterator[CommandEnv]:
    config = load_config(args)
    config.daemon.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    catalog = open_catalog(config.daemon.effective_catalog_url)
    try:
        storage = open_storage(config.storage)
        reap(config, catalog, storage)
        yield CommandEnv(config, catalog, storage)
    finally:
        catalog.close()


def reap(config: Config, catalog: Catalog, storage: Storage) -> None:
    """Reap what dead runs left (their partials, their ``running`` rows); never fatal."""
    try:
        log_reaped(reap_dead_runs(config, catalog, storage))
        log_reaped_drills(reap_dead_drills(config, catalog))
    except Exception as exc:  # noqa: BLE001 - the command itself may still work
        log.warning("cannot reap what dead runs left", error=describe(exc))


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)

"""``pgwarden backup TARGET`` (one-shot, no daemon needed) and ``pgwarden backups``.

The listing says where each backup's copies are (``COPIES``): ``local`` when the local storage
holds it, and each ``[[offsite]]`` destination where its copy is confirmed.  A backup only
off-site (removed locally by retention, or listed by a ``catalog rebuild`` from the bucket on
a new machine) shows as ``off-site``: ``pgwarden restore`` fetches it from there.

``pgwarden backup --priority low|normal`` overrides ``[targets.backup] priority`` for this run
(whose ``auto`` is normal: an operator started it); the summary line says which it ran at.
``--max-rate SIZE`` overrides ``[targets.backup] max_rate`` (:mod:`pgwarden.config.rates`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
from dataclasses import fields, is_dataclass
from datetime import datetime

from pgwarden.backup.request import request_priority, run_request
from pgwarden.backup.server import ServerBackupFailed, take_server_backup
from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.catalog.offsite import copies
from pgwarden.catalog.records import BackupRecord
from pgwarden.catalog.states import CopyState
from pgwarden.commands.context import command_env, human_bytes, table
from pgwarden.config import TargetConfig
from pgwarden.config.names import SUB_TARGET_SEP
from pgwarden.config.rates import cap_refusal, format_rate, parse_rate
from pgwarden.errors import EXIT_FAILED, EXIT_OK, UsageError


def cmd_backup(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        target = _capped(env.config.target(args.target), args.max_rate)
        tags = tuple(dict.fromkeys(["manual", *args.tag]))
        request = BackupRequest(target, env.config, env.catalog, env.storage, tags)
        request.priority = request_priority(target, tags, args.priority)
        request.cancel = threading.Event()  # set on Ctrl-C while a low-priority run is waited for
        if target.whole_server:
            return _server_backup(args, request)
        outcome = run_request(request, take_backup)
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2))
    else:
        print(
            f"backup {outcome.backup_id[:8]} of {outcome.target}: {outcome.path} "
            f"({human_bytes(outcome.size_bytes)}, {outcome.tables} tables, "
            f"{outcome.duration_s:.1f} s, {outcome.priority} priority, {_cap_text(target)}"
            f"sha256 {outcome.sha256[:16]}...)"
        )
    return EXIT_OK


def _capped(target: TargetConfig, given: str | None) -> TargetConfig:
    """The target with ``--max-rate`` for this run; refused where a cap cannot apply."""
    if given is None:
        return target
    try:
        rate = parse_rate(given)
    except ValueError as exc:
        raise UsageError(f"--max-rate: {exc}") from None
    settings = target.backup
    if (why := cap_refusal(rate, settings.format, settings.compression)) is not None:
        raise UsageError(f"--max-rate: {why}")
    return dataclasses.replace(target, backup=dataclasses.replace(settings, max_rate=rate))


def _cap_text(target: TargetConfig) -> str:
    rate = target.backup.max_rate
    return f"max rate {format_rate(rate)}, " if rate > 0 else ""


def _server_backup(args: argparse.Namespace, request: BackupRequest) -> int:
    """A whole-server target: every database, then the globals; exit 1 if one failed."""
    try:
        outcome = run_request(request, take_server_backup)
    except ServerBackupFailed as exc:
        outcome, code = exc.outcome, EXIT_FAILED
    else:
        code = EXIT_OK
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2))
        return code
    print(f"{outcome.target}: globals {outcome.globals_path}")
    for b in outcome.backups:
        print(
            f"backup {b.backup_id[:8]} of {b.target}: {b.path} "
            f"({human_bytes(b.size_bytes)}, {b.tables} tables, {b.duration_s:.1f} s)"
        )
    for f in outcome.failures:
        print(f"{outcome.target}/{f.database}: backup failed: {f.error}")
    if outcome.discovery.excluded:
        print(f"excluded: {', '.join(outcome.discovery.excluded)}")
    return code


def cmd_backups(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        target = env.config.target(args.target) if args.target else None
        if target is not None and target.whole_server:  # every database's, newest first
            prefix = f"{target.name}{SUB_TARGET_SEP}"
            records = [r for r in env.catalog.list_backups(None) if r.target.startswith(prefix)]
        else:
            records = env.catalog.list_backups(args.target)
        whole = target is not None and target.whole_server
        remote = _remote_copies(env.catalog, None if whole else args.target)
    if args.json:
        listed = [{**_record_dict(r), "copies": _where(r, remote.get(r.id, []))} for r in records]
        print(json.dumps(listed, indent=2, default=str))
        return EXIT_OK
    rows = [
        [
            r.id[:8],
            r.target,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _status_text(r, remote.get(r.id, [])),
            " ".join(_where(r, remote.get(r.id, []))) or "-",
            human_bytes(r.size_bytes),
            r.verify_status or "-",
            "yes" if r.pinned else "",
            ",".join(r.tags),
            r.path or "",
            (r.error or "")[:60],
        ]
        for r in records
    ]
    headers = [
        "ID",
        "TARGET",
        "STARTED (UTC)",
        "STATUS",
        "COPIES",
        "SIZE",
        "VERIFIED",
        "PINNED",
        "TAGS",
        "FILE",
        "ERROR",
    ]
    print(table(rows, headers) if rows else "no backups")
    return EXIT_OK


def _remote_copies(catalog: Catalog, target: str | None) -> dict[str, list[str]]:
    """The destinations holding a confirmed off-site copy, by backup id."""
    found: dict[str, list[str]] = {}
    for copy in copies(catalog, target=target, states=(CopyState.CONFIRMED,)):
        found.setdefault(copy.backup_id, []).append(copy.destination)
    return found


def _where(record: BackupRecord, destinations: list[str]) -> list[str]:
    """Where the backup's copies are: ``local`` (the local storage) and destination names."""
    local = ["local"] if record.status == BackupStatus.COMPLETE else []
    return local + sorted(destinations)


def _status_text(record: BackupRecord, destinations: list[str]) -> str:
    """``off-site`` for a backup gone from the local storage whose copy is off-site."""
    if record.status == BackupStatus.DELETED and destinations:
        return "off-site"
    return str(record.status)


def _record_dict(record: object) -> dict[str, object]:
    """The record's fields as JSON values, one level deep: ``asdict`` deep-copies every value
    and took a third of ``backups --json`` over 100,000 runs."""
    assert is_dataclass(record) and not isinstance(record, type)
    data: dict[str, object] = {}
    for name in (f.name for f in fields(record)):
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        data[name] = value
    return data

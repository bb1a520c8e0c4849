"""``pgwarden backup TARGET`` (one-shot, no daemon needed) and ``pgwarden backups``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, is_dataclass

from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.commands.context import command_env, human_bytes, table
from pgwarden.errors import EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        target = env.config.target(args.target)
        tags = tuple(dict.fromkeys(["manual", *args.tag]))
        outcome = take_backup(BackupRequest(target, env.config, env.catalog, env.storage, tags))
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2))
    else:
        print(
            f"backup {outcome.backup_id[:8]} of {outcome.target}: {outcome.path} "
            f"({human_bytes(outcome.size_bytes)}, {outcome.tables} tables, "
            f"{outcome.duration_s:.1f} s, sha256 {outcome.sha256[:16]}...)"
        )
    return EXIT_OK


def cmd_backups(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        if args.target:
            env.config.target(args.target)
        records = env.catalog.list_backups(args.target)
    if args.json:
        print(json.dumps([_record_dict(r) for r in records], indent=2, default=str))
        return EXIT_OK
    rows = [
        [
            r.id[:8],
            r.target,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.status,
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
        "SIZE",
        "VERIFIED",
        "PINNED",
        "TAGS",
        "FILE",
        "ERROR",
    ]
    print(table(rows, headers) if rows else "no backups")
    return EXIT_OK


def _record_dict(record: object) -> dict[str, object]:
    assert is_dataclass(record) and not isinstance(record, type)
    data = asdict(record)
    for key, value in list(data.items()):
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
        elif isinstance(value, tuple):
            data[key] = list(value)
    return data

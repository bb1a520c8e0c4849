"""A catalog with a long history, for the scale benchmark: ``runs`` backup runs over targets.

The rows go through pgwarden's own catalog (``open_catalog`` creates the schema by its
migrations, the ORM models write the rows, in one transaction: recording 100,000 runs one
commit each would take the benchmark longer than the daemon's whole life).  The history is
what years of nightly backups leave: one run a day per target, the last seven ``complete``
(retention keeps a week), the older ones ``deleted``, about one in thirty ``failed``, and a
weekly restore drill (``passed``, now and then ``failed``) on the successful ones.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from pgwarden.catalog import BackupStatus, DrillStatus, open_catalog
from pgwarden.catalog.models import Backup, Verification
from pgwarden.config import load


def _rows(
    names: list[str], runs: int, now: datetime
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    rng = random.Random(19)
    per_target = runs // len(names)
    backups: list[dict[str, object]] = []
    drills: list[dict[str, object]] = []
    for target in names:
        for day in range(per_target):
            age = per_target - 1 - day  # days before now
            started = now - timedelta(days=age, hours=-3, seconds=rng.randint(0, 600))
            failed = rng.random() < 1 / 30
            status = (
                BackupStatus.FAILED
                if failed
                else BackupStatus.COMPLETE
                if age < 7
                else BackupStatus.DELETED
            )
            duration = rng.uniform(2, 40)
            backup_id = uuid.UUID(int=rng.getrandbits(128)).hex
            stamp = started.strftime("%Y%m%dT%H%M%SZ")
            drilled = not failed and day % 7 == 0
            verdict = DrillStatus.FAILED if drilled and rng.random() < 0.02 else DrillStatus.PASSED
            finished = started + timedelta(seconds=duration)
            backups.append(
                {
                    "id": backup_id,
                    "target": target,
                    "database": target,
                    "started_at": started,
                    "finished_at": finished,
                    "status": status,
                    "tags": ["scheduled"],
                    "format": "custom",
                    "compression": None if failed else "zstd",
                    "path": None if failed else f"{target}/{stamp}-{backup_id[:8]}.dump.zst",
                    "size_bytes": None if failed else rng.randint(2_000_000, 9_000_000),
                    "sha256": None if failed else rng.randbytes(32).hex(),
                    "pinned": False,
                    "verified_at": finished + timedelta(hours=2) if drilled else None,
                    "verify_status": verdict if drilled else None,
                    "error": "pg_dump: error: connection refused" if failed else None,
                    "attempt": 1,
                    "duration_s": duration,
                    "deleted_at": now - timedelta(days=age - 7)
                    if age >= 7 and not failed
                    else None,
                }
            )
            if drilled:
                drills.append(
                    {
                        "backup_id": backup_id,
                        "started_at": finished + timedelta(hours=1),
                        "finished_at": finished + timedelta(hours=2),
                        "status": verdict,
                        "details": {"checks": [], "tables": 2},
                        "error": None if verdict == DrillStatus.PASSED else "row count differs",
                    }
                )
    return backups, drills


def fill_catalog(config_path: Path, names: list[str], runs: int) -> None:
    """Write ``runs`` backup runs (and their drills) over ``names`` into the config's catalog."""
    config = load(config_path)
    config.daemon.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    catalog = open_catalog(config.daemon.effective_catalog_url)
    try:
        backups, drills = _rows(names, runs, datetime.now(UTC) - timedelta(days=1))
        with Session(catalog.engine) as session, session.begin():
            session.execute(insert(Backup), backups)
            session.execute(insert(Verification), drills)
    finally:
        catalog.close()

"""``make run``: the demo backs up the embedded PostgreSQL, proves the backup by a restore
drill, serves metrics, and stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(workdir: Path) -> None:
    env = {**os.environ, "PGWARDEN_DEMO_KEEP": "0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgwarden.cli",
            "demo",
            "--dir",
            str(workdir / "demo"),
            "--duration",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "demo: backup" in out and "written" in out
    assert "demo: restore drill of" in out and "passed" in out
    assert 'pgwarden_backup_last_success_timestamp_seconds{target="shop"}' in out
    backups = list((workdir / "demo" / "backups" / "shop").glob("*.dump.zst"))
    assert len(backups) == 1
    assert backups[0].with_name(backups[0].name + ".manifest.json").exists()

"""``pgwarden check`` reports catalog/storage disagreements; ``catalog rebuild`` repairs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pgwarden.backup.take import BackupRequest, take_backup
from tests.helpers import make_config, open_env, target_doc
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db


def _check(config_path: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "check", "-c", str(config_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return json.loads(out.stdout)


def test_missing_manifest_is_reported_by_check(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "agree", rows=10, vectors=False)
    doc = target_doc(pg18, "agree", backup={"retries": 0})
    config = make_config(workdir, [doc])
    env = open_env(config)
    outcome = take_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))
    config_path = workdir / "pgwarden.toml"
    config_path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\n[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "agree"\ndsn = "{doc["dsn"]}"\nbin_dir = "{doc["bin_dir"]}"\n'
    )
    items = {r["check"]: r for r in _check(config_path)["results"]}  # type: ignore[index, union-attr]
    assert items["storage"]["status"] == "pass"
    outcome.manifest_path.unlink()  # the file is now an orphan, the catalog row dangles
    items = {r["check"]: r for r in _check(config_path)["results"]}  # type: ignore[index, union-attr]
    assert items["storage"]["status"] in ("fail", "warn")
    assert "catalog rebuild" in items["storage"]["detail"]

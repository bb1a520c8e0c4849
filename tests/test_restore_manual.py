"""The manual path in ``README.md`` (stock tools only) runs as written against a
real backup: the checksum matches, the restore works, the row counts match the manifest (the
query prints nothing), and the vector probe returns the recorded neighbours."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from pgwarden.backup.take import BackupRequest, take_backup
from tests.helpers import make_config, open_env, target_doc
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

README = Path(__file__).resolve().parents[1] / "README.md"


def _manual_script() -> str:
    text = README.read_text()
    start = text.index("### The manual path")
    return re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)  # type: ignore[union-attr]


def test_the_manual_path_runs_as_written(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "manual_src", rows=500)
    pg18.drop_database("restore_test")
    env = open_env(make_config(workdir, [target_doc(pg18, "manual_src", backup={"retries": 0})]))
    backup = take_backup(BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage))
    manifest = json.loads(backup.manifest_path.read_text())
    probe = manifest["vector_probes"][0]
    script = _manual_script()
    script = re.sub(r"^B=.*$", f"B={backup.path}", script, count=1, flags=re.M)
    script = script.replace("/var/tmp/", f"{workdir}/")
    script = script.replace("id::text = '42'", f"id::text = '{probe['key']}'")
    shell_env = {
        "PATH": f"{pg18.bin_dir}:/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(pg18.port),
        "PGUSER": "postgres",
        "HOME": os.environ.get("HOME", "/root"),
    }
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        env=shell_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # step 1 prints the file's hash, then the manifest's: the same
    assert lines[0].split()[0] == lines[1] == backup.sha256
    # step 5 prints nothing when every count matches; step 6 prints the recorded ids, then
    # the same ids from the exact search on the restored copy
    recorded = next(line for line in lines if line.startswith("public.documents.embedding"))
    assert json.loads(recorded.split(": ", 1)[1]) == probe["neighbours"]
    found = [line.strip() for line in lines[lines.index(recorded) + 1 :] if line.strip().isdigit()]
    assert found == probe["neighbours"]
    assert "restore_test" not in pg18.databases()

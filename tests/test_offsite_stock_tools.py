"""An off-site copy restores with stock tools only, as the disaster-recovery runbook says.

pgwarden takes the backup and copies it, encrypted, to a real S3 endpoint (``moto_server``);
then nothing of pgwarden is used: the object and its manifest are fetched with an ordinary S3
client (boto3 here, ``aws s3 cp`` in the runbook), the object's sha256 is compared with the
manifest's by ``sha256sum``, and ``age -d -i key.txt X.dump.zst.age | zstd -d | pg_restore -d DB``
(plain format: ``age -d | gunzip | psql``) brings back every table as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.pgservers import PgServer
from tests.s3server import S3Server
from tests.sampledata import make_sample_db, table_fingerprints
from tests.test_offsite_recovery import PREFIX, backup_offsite, make_site, object_key

AGE = "/usr/bin/age"


def _shell(pg: PgServer, script: str, cwd: Path) -> str:
    """``script`` under bash with only the stock tools on ``PATH``; its stdout."""
    env = {
        "PATH": f"{pg.bin_dir}:/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(pg.port),
        "PGUSER": "postgres",
        "HOME": os.environ.get("HOME", "/root"),
    }
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.parametrize(
    ("backup_format", "pipeline"),
    [
        ("custom", f"{AGE} -d -i key.txt {{obj}} | zstd -d | pg_restore -d {{db}}"),
        ("plain", f"{AGE} -d -i key.txt {{obj}} | gunzip | psql -q -v ON_ERROR_STOP=1 -d {{db}}"),
    ],
)
def test_a_copy_restores_with_stock_tools_only(
    pg18: PgServer,
    workdir: Path,
    s3_server: S3Server,
    s3_bucket: str,
    backup_format: str,
    pipeline: str,
) -> None:
    source, restored = f"stock_{backup_format}_src", f"stock_{backup_format}_new"
    make_sample_db(pg18, source, rows=300)
    pg18.drop_database(restored)
    site = make_site(workdir, pg18, s3_server, s3_bucket, source, backup_format=backup_format)
    backup = backup_offsite(site)
    site.lose_the_machine()  # the bucket and the key are all there is

    client = s3_server.client()
    key = object_key(site, backup)
    name = key.rsplit("/", 1)[-1]
    assert name.endswith({"custom": ".dump.zst.age", "plain": ".sql.gz.age"}[backup_format])
    manifest_key = key.removesuffix(".age") + ".manifest.json"
    client.download_file(s3_bucket, key, str(workdir / name))
    client.download_file(s3_bucket, manifest_key, str(workdir / "manifest.json"))
    manifest: dict[str, Any] = json.loads((workdir / "manifest.json").read_text())
    assert manifest["offsite"]["object"] == key.removeprefix(PREFIX)

    # the object is what was uploaded, and decrypts to the artifact the manifest describes
    out = _shell(
        pg18,
        f"sha256sum {name} | cut -d' ' -f1\n{AGE} -d -i key.txt {name} | sha256sum | cut -d' ' -f1",
        workdir,
    )
    object_sha, artifact_sha = out.split()
    assert object_sha == manifest["offsite"]["object_sha256"]
    assert artifact_sha == manifest["sha256"] == backup["sha256"]

    _shell(
        pg18,
        f"createdb -T template0 {restored}\n" + pipeline.format(obj=name, db=restored),
        workdir,
    )
    assert table_fingerprints(pg18, restored) == table_fingerprints(pg18, source)
    assert len(table_fingerprints(pg18, source)) >= 2

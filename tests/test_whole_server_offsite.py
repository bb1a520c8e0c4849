"""Off-site copies of a whole-server target: ``pgwarden offsite sync vps1`` sends every
database's backups (``<prefix>vps1/<database>/<artifact>`` beside its manifest), and a second
sync has nothing left to send."""

from __future__ import annotations

import json
from pathlib import Path

from pgwarden.cli import main
from tests.pgservers import PgServer
from tests.s3server import S3Server
from tests.sampledata import make_sample_db
from tests.test_offsite_job import _destination
from tests.test_whole_server import server as _server

server = _server  # the module's own PostgreSQL 15, so "databases" sees only its databases


def test_offsite_sync_sends_every_database_of_a_whole_server_target(
    server: PgServer,
    s3_server: S3Server,
    workdir: Path,
    capsys: object,
) -> None:
    for name in ("app1", "app3"):
        if name not in server.databases():
            make_sample_db(server, name, rows=30, vectors=False)
    bucket = s3_server.unique_bucket("ws")
    path = workdir / "pgwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "vps1"\ndsn = "{server.uri("postgres")}"\n'
        f'bin_dir = "{server.bin_dir}"\ndatabases = ["app1", "app3"]\n'
        + _destination("moto", s3_server.endpoint, bucket)
    )
    path.chmod(0o600)
    assert main(["backup", "-c", str(path), "vps1"]) == 0
    assert main(["offsite", "sync", "-c", str(path), "vps1"]) == 0
    keys = sorted(
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    )
    for name in ("app1", "app3"):
        mine = [k for k in keys if k.startswith(f"vps1/vps1/{name}/")]
        assert len(mine) == 2, keys  # the artifact and its manifest
        assert any(k.endswith(".manifest.json") for k in mine), mine
    assert main(["offsite", "sync", "-c", str(path), "vps1"]) == 0  # nothing left to send
    capsys.readouterr()  # type: ignore[attr-defined]
    assert main(["offsite", "list", "-c", str(path), "vps1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    rows = listed if isinstance(listed, list) else listed.get("copies", listed)
    confirmed = {r["target"] for r in rows if r.get("state") == "confirmed"}
    assert confirmed == {"vps1/app1", "vps1/app3"}, rows

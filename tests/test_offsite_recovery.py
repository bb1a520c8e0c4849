"""Recovery on a new machine from the bucket alone (issue 15, item 4), through the real CLI.

A backup encrypted with age is copied to a real S3 endpoint (``moto_server`` on loopback);
then the state directory and the local backups are deleted, as on a new machine with only the
config put back.  ``pgwarden catalog rebuild`` lists the backup again from its remote manifest,
``pgwarden backups`` shows it off-site, and ``pgwarden restore --identity`` fetches it
(checksum first), decrypts it and restores it: every table of the new database equals the
source's (row count and md5 of its ordered content).  A wrong or missing identity, and a
damaged object, fail before any database is created; ``pgwarden verify --from`` drills the
remote copy.  The rebuild itself, in-process: only copies whose object is there count, damaged
manifests are reported, copies gone from the bucket become deleted, an empty listing keeps rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from pgwarden.archive.encrypt import encrypt_stream
from pgwarden.archive.manifest import MANIFEST_VERSION
from pgwarden.catalog import BackupStatus, open_catalog
from pgwarden.catalog.offsite import copies
from pgwarden.catalog.states import CopyState
from pgwarden.restore.remote_catalog import rebuild_destination
from pgwarden.storage import open_object_store
from tests.pgservers import PgServer
from tests.s3server import KEY_ID_ENV, REGION, SECRET_ENV, S3Server
from tests.sampledata import make_sample_db, table_fingerprints

AGE_KEYGEN = "/usr/bin/age-keygen"
PGWARDEN = Path(sys.executable).parent / "pgwarden"
PREFIX = "vps1/"
CLI_TIMEOUT = 300


def keygen(path: Path) -> str:
    """A key pair made by the stock tool into ``path`` (0600); its public recipient."""
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    return subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


@dataclass
class Site:
    """A config with one target copied to one encrypted destination, and its paths."""

    workdir: Path
    config: Path
    target: str
    bucket: str
    key: Path  # the age identity (kept off the server in real life)

    def cli(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``pgwarden ARGV -c CONFIG`` as a separate process, its output captured."""
        return subprocess.run(
            [str(PGWARDEN), *argv, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def ok(self, *argv: str, env: dict[str, str] | None = None) -> str:
        done = self.cli(*argv, env=env)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done.stdout

    def lose_the_machine(self) -> None:
        """What a new machine has: the config, no state directory, no local backups."""
        shutil.rmtree(self.workdir / "state")
        shutil.rmtree(self.workdir / "backups")

    def spool_debris(self) -> list[Path]:
        """Files a restore left in the local storage (there must be none)."""
        root = self.workdir / "backups"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def make_site(
    workdir: Path,
    pg: PgServer,
    s3: S3Server,
    bucket: str,
    db: str,
    *,
    backup_format: str = "custom",
    encrypted: bool = True,
) -> Site:
    """Write the config of target ``db`` with the destination ``moto`` on ``bucket``."""
    key = workdir / "key.txt"
    recipient = keygen(key)
    destination: dict[str, Any] = {
        "name": "moto",
        "kind": "s3",
        "bucket": bucket,
        "prefix": PREFIX,
        "endpoint_url": s3.endpoint,
        "region": REGION,
        "addressing_style": "path",
        "access_key_id_env": KEY_ID_ENV,
        "secret_access_key_env": SECRET_ENV,
        "timeout": 10,
        "retries": 1,
    }
    if encrypted:
        destination["encryption"] = {"recipients": [recipient]}
    doc = {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "socket": str(workdir / "ctl.sock"),
            "log_level": "warning",
        },
        "storage": {"path": str(workdir / "backups")},
        "metrics": {"listen": "127.0.0.1:0"},
        "offsite": [destination],
        "targets": [
            {
                "name": db,
                "dsn": pg.uri(db),
                "bin_dir": str(pg.bin_dir),
                "backup": {"retries": 0, "format": backup_format},
            }
        ],
    }
    config = workdir / "pgwarden.toml"
    config.write_text(tomli_w.dumps(doc))
    config.chmod(0o600)
    return Site(workdir, config, db, bucket, key)


def backup_offsite(site: Site) -> dict[str, Any]:
    """``pgwarden backup`` then ``pgwarden offsite sync``; the backup's JSON outcome."""
    backup: dict[str, Any] = json.loads(site.ok("backup", site.target, "--json"))
    site.ok("offsite", "sync", site.target)
    return backup


def object_key(site: Site, backup: dict[str, Any], *, encrypted: bool = True) -> str:
    """The bucket key of ``backup``'s object (the prefix included)."""
    name = Path(backup["path"]).name
    return f"{PREFIX}{site.target}/{name}{'.age' if encrypted else ''}"


def test_new_machine_rebuilds_the_catalog_and_restores_from_the_bucket(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    make_sample_db(pg18, "ofr_src", rows=400)
    pg18.drop_database("ofr_new")
    site = make_site(workdir, pg18, s3_server, s3_bucket, "ofr_src")
    backup = backup_offsite(site)
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix=PREFIX)
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert object_key(site, backup) in keys

    site.lose_the_machine()
    rebuilt = json.loads(site.ok("catalog", "rebuild", "--json"))
    assert rebuilt["manifests"] == 0  # nothing local
    [remote] = rebuilt["offsite"]
    assert remote["ok"] and remote["added"] == [backup["backup_id"]]
    assert remote["confirmed"] == [backup["backup_id"]]

    [row] = json.loads(site.ok("backups", "--json"))
    assert row["id"] == backup["backup_id"] and row["copies"] == ["moto"]
    text = site.ok("backups")
    assert backup["backup_id"][:8] in text and "off-site" in text and "moto" in text

    restored = site.ok("restore", site.target, "--into", "ofr_new", "--identity", str(site.key))
    assert "read from the off-site copy on moto" in restored, restored
    assert "decrypted with age" in restored
    assert table_fingerprints(pg18, "ofr_new") == table_fingerprints(pg18, "ofr_src")
    assert table_fingerprints(pg18, "ofr_src")  # the comparison compared something
    assert site.spool_debris() == []
    # a drill of a backup that is only off-site reads it from there without --from
    drill = json.loads(site.ok("verify", site.target, "--identity", str(site.key), "--json"))
    assert drill["status"] == "passed" and drill["backup_id"] == backup["backup_id"]
    row["verify_status"], row["verified_at"] = "passed", drill["finished_at"]

    again = json.loads(site.ok("catalog", "rebuild", "--json"))  # idempotent
    assert again["offsite"][0]["added"] == []
    assert again["offsite"][0]["confirmed"] == [backup["backup_id"]]
    # a fetch spool a killed restore left behind is removed by the next command
    name = Path(backup["path"]).name
    debris = workdir / "backups" / site.target / f"{name}.restore-0123abcd.partial"
    debris.write_bytes(b"half a download")
    assert json.loads(site.ok("backups", "--json")) == [row]
    assert not debris.exists()


def test_wrong_or_missing_identity_fails_before_touching_the_database(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    make_sample_db(pg18, "ofr_id_src", rows=50)
    pg18.drop_database("ofr_id_new")
    site = make_site(workdir, pg18, s3_server, s3_bucket, "ofr_id_src")
    backup_offsite(site)
    site.lose_the_machine()
    site.ok("catalog", "rebuild")
    wrong = workdir / "other.txt"
    other_recipient = keygen(wrong)
    manifest = _remote_manifest(s3_server, site)
    [needed] = manifest["offsite"]["encryption"]["recipients"]
    assert needed["fingerprint"].startswith("sha256:")

    done = site.cli("restore", site.target, "--into", "ofr_id_new", "--identity", str(wrong))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert needed["fingerprint"] in done.stderr
    assert "AGE-SECRET-KEY" not in done.stderr + done.stdout
    assert other_recipient in done.stderr or "sha256:" in done.stderr
    assert not _exists(pg18, "ofr_id_new")

    done = site.cli("restore", site.target, "--into", "ofr_id_new")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert needed["fingerprint"] in done.stderr and "--identity" in done.stderr
    assert not _exists(pg18, "ofr_id_new")

    outside = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    argv = ["restore", site.target, "--into", "ofr_id_new", "--identity-credential", "age"]
    done = subprocess.run(
        [str(PGWARDEN), *argv, "-c", str(site.config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=outside,
        check=False,
    )
    assert done.returncode == 1 and "CREDENTIALS_DIRECTORY" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not _exists(pg18, "ofr_id_new")
    assert site.spool_debris() == []


def test_a_damaged_object_fails_the_checksum_before_any_restore(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    make_sample_db(pg18, "ofr_bad_src", rows=300)
    pg18.drop_database("ofr_bad_new")
    site = make_site(workdir, pg18, s3_server, s3_bucket, "ofr_bad_src")
    backup = backup_offsite(site)
    client = s3_server.client()
    key = object_key(site, backup)
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    middle = len(body) // 2
    body[middle : middle + 16] = bytes(b ^ 0xFF for b in body[middle : middle + 16])
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    site.lose_the_machine()
    site.ok("catalog", "rebuild")

    done = site.cli("restore", site.target, "--into", "ofr_bad_new", "--identity", str(site.key))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "checksum" in done.stderr and "not what was uploaded" in done.stderr
    assert not _exists(pg18, "ofr_bad_new")
    assert site.spool_debris() == []


def test_a_fetch_that_would_fill_the_disk_is_refused_before_it_starts(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str, small_disk: Path
) -> None:
    make_sample_db(pg18, "ofr_full_src", rows=50)
    pg18.drop_database("ofr_full_new")
    site = make_site(workdir, pg18, s3_server, s3_bucket, "ofr_full_src")
    backup_offsite(site)
    site.lose_the_machine()
    # the new machine's backup disk is small: the spool must leave 5% (at least 1 GiB) free
    text = site.config.read_text().replace(str(workdir / "backups"), str(small_disk))
    site.config.write_text(text)
    site.ok("catalog", "rebuild")
    done = site.cli("restore", site.target, "--into", "ofr_full_new", "--identity", str(site.key))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "not enough free space" in done.stderr and str(small_disk) in done.stderr
    assert not _exists(pg18, "ofr_full_new")
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []


def test_verify_drills_the_remote_copy_and_restore_reads_it_with_from(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    make_sample_db(pg18, "ofr_drill_src", rows=120)
    pg18.drop_database("ofr_drill_new")
    site = make_site(workdir, pg18, s3_server, s3_bucket, "ofr_drill_src")
    backup = backup_offsite(site)
    # the local backup is still there: --from reads the copy anyway, here through a
    # systemd credential ($CREDENTIALS_DIRECTORY/NAME) instead of --identity
    credentials = workdir / "creds"
    credentials.mkdir(mode=0o700)
    shutil.copy2(site.key, credentials / "age-identity")
    (credentials / "age-identity").chmod(0o600)
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    report = json.loads(
        site.ok(
            "verify",
            site.target,
            "--from",
            "moto",
            "--identity-credential",
            "age-identity",
            "--json",
            env=env,
        )
    )
    assert report["status"] == "passed", report
    assert report["backup_id"] == backup["backup_id"]
    assert any("off-site copy on moto" in note for note in report["notes"])
    checks = {c["name"]: c["passed"] for c in report["checks"]}
    assert checks["checksum"] and checks["restore"] and checks["row_counts"]

    done = site.cli("restore", site.target, "--into", "ofr_drill_new", "--from", "nowhere")
    assert done.returncode == 2 and "nowhere" in done.stderr

    site.ok(
        "restore",
        site.target,
        backup["backup_id"][:8],
        "--into",
        "ofr_drill_new",
        "--from",
        "moto",
        "--identity",
        str(site.key),
    )
    assert table_fingerprints(pg18, "ofr_drill_new") == table_fingerprints(pg18, "ofr_drill_src")
    local = [p.name for p in site.spool_debris()]
    assert sorted(local) == sorted(
        [Path(backup["path"]).name, Path(backup["path"]).name + ".manifest.json"]
    )


def _exists(pg: PgServer, name: str) -> bool:
    return bool(pg.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def _remote_manifest(s3: S3Server, site: Site) -> dict[str, Any]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=site.bucket, Prefix=f"{PREFIX}{site.target}/")
    [key] = [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".manifest.json")]
    document: dict[str, Any] = json.loads(
        client.get_object(Bucket=site.bucket, Key=key)["Body"].read()
    )
    return document


def _put_copy(
    s3: S3Server, bucket: str, target: str, backup_id: str, *, with_object: bool = True
) -> str:
    """A copy as the upload leaves it (object, then manifest) for a made-up backup."""
    name = f"20261101T0{len(backup_id) % 10}0000Z-{backup_id[:8]}.dump.zst"
    body = backup_id.encode() * 4
    client = s3.client()
    if with_object:
        client.put_object(Bucket=bucket, Key=f"{PREFIX}{target}/{name}", Body=body)
    manifest = {
        "id": backup_id,
        "target": target,
        "database": target,
        "started_at": f"2026-11-0{int(backup_id[0], 16) % 9 + 1}T03:00:00+00:00",
        "finished_at": None,
        "format": "custom",
        "path": name,
        "size_bytes": 1,
        "sha256": "0" * 64,
        "offsite": {
            "destination": "moto",
            "object": f"{target}/{name}",
            "object_size": len(body),
            "object_sha256": hashlib.sha256(body).hexdigest(),
            "checksum": "sha256-composite",
            "encryption": None,
        },
    }
    key = f"{PREFIX}{target}/{name}.manifest.json"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    return key


def test_rebuild_from_a_destination_indexes_confirmed_copies_only_and_notices_gone_ones(
    workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    catalog = open_catalog(f"sqlite:///{workdir / 'catalog.db'}")
    store = open_object_store(s3_server.offsite_config(s3_bucket, prefix=PREFIX))
    good, lone, other = "a" * 32, "b" * 32, "c" * 32
    good_key = _put_copy(s3_server, s3_bucket, "app", good)
    _put_copy(s3_server, s3_bucket, "app", lone, with_object=False)
    _put_copy(s3_server, s3_bucket, "app", other)
    s3_server.client().put_object(
        Bucket=s3_bucket, Key=f"{PREFIX}app/broken.dump.zst.manifest.json", Body=b"{not json"
    )
    try:
        first = rebuild_destination(catalog, store, "moto", ["app"])
        assert sorted(first.added) == [good, other] and sorted(first.confirmed) == [good, other]
        assert first.manifests == 4 and not first.ok
        assert any("object" in p and "missing" in p for p in first.problems)
        assert any("broken" in p and "not valid JSON" in p for p in first.problems)
        record = catalog.get_backup(good)
        assert record.status == BackupStatus.DELETED and record.target == "app"

        again = rebuild_destination(catalog, store, "moto", ["app"])
        assert again.added == [] and sorted(again.confirmed) == [good, other]

        s3_server.client().delete_object(Bucket=s3_bucket, Key=good_key)
        third = rebuild_destination(catalog, store, "moto", ["app"])
        assert third.gone == [good]
        states = {c.backup_id: c.state for c in copies(catalog, target="app")}
        assert states == {good: CopyState.DELETED, other: CopyState.CONFIRMED}

        # a bucket holding nothing for the target (a wrong prefix looks like that) keeps rows
        empty = open_object_store(s3_server.offsite_config(s3_bucket, prefix="elsewhere/"))
        fourth = rebuild_destination(catalog, empty, "moto", ["app"])
        assert fourth.gone == [] and "holds nothing for target app" in fourth.problems[0]
        assert copies(catalog, target="app", states=(CopyState.CONFIRMED,))[0].backup_id == other
    finally:
        catalog.close()


FETCH_PROBE = """
import json, resource, sys
from datetime import UTC, datetime
from pathlib import Path
from pgwarden.archive.encrypt import load_identities
from pgwarden.catalog.records import BackupRecord
from pgwarden.catalog.states import BackupStatus
from pgwarden.config.offsite import OffsiteConfig, SecretSource
from pgwarden.restore.fetch import fetched
from pgwarden.restore.remote_locate import read_copy
from pgwarden.storage import open_object_store

args = json.loads(sys.argv[1])
offsite = OffsiteConfig(
    name="moto", bucket=args["bucket"], prefix=args["prefix"], endpoint_url=args["endpoint"],
    region="us-east-1", addressing_style="path",
    access_key_id=SecretSource(env=args["key_env"]),
    secret_access_key=SecretSource(env=args["secret_env"]),
)
now = datetime.now(UTC)
record = BackupRecord(
    args["id"], "app", "app", now, now, BackupStatus.DELETED, (), "custom", "zstd",
    args["name"], None, None, False, None, None, None, 1, None, None,
)
store = open_object_store(offsite)
copy = read_copy(store, "moto", record)
identities = load_identities(Path(args["key"]))
spool = Path(args["spool"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with fetched(copy, store, spool, identities) as path:
    size = path.stat().st_size
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "size": size,
                  "left": sorted(p.name for p in spool.iterdir())}))
"""


class _Pattern(io.RawIOBase):
    """``size`` pseudo-random bytes, generated as they are read, hashed on the way."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.digest = hashlib.sha256()
        self._block = random.Random(7).randbytes(1 << 20)
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left, len(self._block))
        self._turn += 1
        start = (self._turn * 4099) % (len(self._block) - count + 1)
        data = self._block[start : start + count]
        memoryview(buffer)[:count] = data
        self.digest.update(data)
        self.left -= count
        return count


def test_a_fetch_streams_a_large_copy_in_bounded_memory(
    workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    size = 160 << 20
    key_file = workdir / "key.txt"
    recipient = keygen(key_file)
    offsite = s3_server.offsite_config(s3_bucket, prefix=PREFIX)
    store = open_object_store(offsite)
    backup_id, name = "d" * 32, "20261101T030000Z-dddddddd.dump.zst"
    source = _Pattern(size)
    with store.upload(f"app/{name}.age", expected_size=size) as sink:
        encrypt_stream(io.BufferedReader(source), sink, (recipient,))  # type: ignore[arg-type]
        put = sink.complete()
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "id": backup_id,
        "target": "app",
        "database": "app",
        "started_at": "2026-11-01T03:00:00+00:00",
        "format": "custom",
        "compression": "zstd",
        "path": name,
        "size_bytes": size,
        "sha256": source.digest.hexdigest(),
        "offsite": {
            "destination": "moto",
            "object": put.key,
            "object_size": put.size,
            "object_sha256": put.sha256,
            "checksum": str(put.checksum),
            "encryption": {"scheme": "age-v1", "recipients": [{"fingerprint": "sha256:x"}]},
        },
    }
    store.put_small(f"app/{name}.manifest.json", json.dumps(manifest).encode())
    spool = workdir / "spool"
    spool.mkdir()
    probe = {
        "bucket": s3_bucket,
        "prefix": PREFIX,
        "endpoint": s3_server.endpoint,
        "key_env": KEY_ID_ENV,
        "secret_env": SECRET_ENV,
        "id": backup_id,
        "name": name,
        "key": str(key_file),
        "spool": str(spool),
    }
    done = subprocess.run(
        [sys.executable, "-c", FETCH_PROBE, json.dumps(probe)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size"] == size and report["left"] == []  # checked, then removed
    assert report["after_kib"] - report["before_kib"] < 64 * 1024, report  # a 160 MiB copy

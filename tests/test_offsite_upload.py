"""Off-site uploads against a real S3 endpoint (``moto_server`` on loopback): a real backup of a
real database sent encrypted and decrypted with the stock ``age``; an unreachable endpoint; a
server killed in the middle of a multipart upload; a cancel; stale uploads of a dead process."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyrage
import pytest

from pgwarden.archive.encrypt import AGE_SCHEME, recipient_fingerprint
from pgwarden.backup.offsite import CopyRequest, upload_backup
from pgwarden.backup.offsite_run import upload_pending
from pgwarden.catalog.offsite import CopyState, copies
from pgwarden.config.offsite import OffsiteConfig, OffsiteEncryption
from pgwarden.errors import OffsiteError
from pgwarden.storage import open_object_store
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectStore
from tests.helpers import Env, target_env
from tests.pgservers import PgServer, free_port
from tests.s3server import KEY_ID, SECRET, S3Server
from tests.sampledata import make_sample_db

MIB = 1024 * 1024


def age_key(workdir: Path) -> tuple[str, Path]:
    """A fresh age identity in ``workdir/key.txt`` (0600) and its recipient."""
    identity = pyrage.x25519.Identity.generate()
    path = workdir / "key.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


def with_destination(env: Env, destination: OffsiteConfig) -> Env:
    return replace(env, config=replace(env.config, offsite=(destination,)))


def run(env: Env, destination: OffsiteConfig, **kwargs: object):  # type: ignore[no-untyped-def]
    """One upload_pending of the env's target to ``destination`` (store opened here)."""
    store = open_object_store(destination)
    return upload_pending(
        env.config.targets[0],
        env.config,
        env.catalog,
        env.storage,
        {destination.name: store},
        **kwargs,  # type: ignore[arg-type]
    )


def keys(s3: S3Server, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def open_uploads(s3: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def small_env(workdir: Path, pg18: PgServer, db: str) -> Env:
    make_sample_db(pg18, db, rows=50, vectors=False)
    env = target_env(workdir, pg18, db)
    env.backup()
    return env


def test_an_encrypted_copy_decrypts_with_stock_age(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    env = small_env(workdir, pg18, "offsite_enc")
    recipient, key_file = age_key(workdir)
    destination = s3_server.offsite_config(
        s3_bucket, prefix="vps1/", encryption=OffsiteEncryption((recipient,))
    )
    env = with_destination(env, destination)
    [record] = env.catalog.list_backups("offsite_enc")
    outcome = run(env, destination)
    assert outcome.ok, outcome
    [copy] = outcome.copies
    name = record.path
    assert name is not None
    assert copy.key == f"offsite_enc/{name}.age"
    assert copy.encrypted
    assert keys(s3_server, s3_bucket) == [
        f"vps1/offsite_enc/{name}.age",
        f"vps1/offsite_enc/{name}.manifest.json",
    ]
    client = s3_server.client()
    manifest = json.loads(
        client.get_object(Bucket=s3_bucket, Key=f"vps1/offsite_enc/{name}.manifest.json")[
            "Body"
        ].read()
    )
    local = json.loads((workdir / "backups" / "offsite_enc" / f"{name}.manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "offsite"} == local
    section = manifest["offsite"]
    assert section["destination"] == destination.name
    assert section["object"] == f"offsite_enc/{name}.age"
    assert section["object_size"] == copy.size_bytes
    assert section["object_sha256"] == copy.object_sha256
    assert section["checksum"] in ("sha256-composite", "md5-etag")
    assert section["encryption"] == {
        "scheme": AGE_SCHEME,
        "recipients": [{"fingerprint": recipient_fingerprint(recipient)}],
    }
    assert recipient not in json.dumps(manifest)
    encrypted = workdir / "object.age"
    encrypted.write_bytes(
        client.get_object(Bucket=s3_bucket, Key=f"vps1/offsite_enc/{name}.age")["Body"].read()
    )
    assert encrypted.stat().st_size == copy.size_bytes
    plain = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(encrypted)], check=True, capture_output=True
    ).stdout
    assert plain == (workdir / "backups" / "offsite_enc" / name).read_bytes()
    [row] = copies(env.catalog, target="offsite_enc")
    assert (row.state, row.encrypted, row.attempts) == (CopyState.CONFIRMED, True, 1)
    assert row.object_sha256 == copy.object_sha256
    # nothing is missing any more: the next run sends nothing
    assert run(env, destination).copies == ()


def test_an_unreachable_endpoint_fails_the_copy_and_the_next_run_sends_it(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    env = small_env(workdir, pg18, "offsite_down")
    good = s3_server.offsite_config(s3_bucket)
    closed = replace(good, endpoint_url=f"http://127.0.0.1:{free_port()}", retries=0, timeout=5)
    env = with_destination(env, closed)
    outcome = run(env, closed)
    assert not outcome.ok
    assert outcome.unreachable == (closed.name,)
    assert outcome.reasons and outcome.reasons[0].startswith(f"{closed.name}: ")
    [record] = env.catalog.list_backups("offsite_down")
    assert record.status == "complete"  # the local backup is untouched
    [row] = copies(env.catalog, target="offsite_down")
    assert row.state == CopyState.FAILED
    assert row.error is not None and row.error.startswith("unreachable")
    for text in (row.error, *outcome.reasons):
        assert SECRET not in text and KEY_ID not in text
    env = with_destination(env, good)
    outcome = run(env, good)
    assert outcome.ok, outcome
    [row] = copies(env.catalog, target="offsite_down")
    assert (row.state, row.error) == (CopyState.CONFIRMED, None)
    assert len(keys(s3_server, s3_bucket)) == 2


def big_env(workdir: Path, pg18: PgServer, db: str, megabytes: int = 24) -> Env:
    """A database whose dump is about ``megabytes`` MiB however it is compressed."""
    pg18.create_database(db)
    with pg18.connect(db) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)")
        conn.execute("ALTER TABLE blobs ALTER data SET STORAGE EXTERNAL")
        with conn.cursor().copy("COPY blobs (id, data) FROM STDIN") as copy:
            for i in range(megabytes):
                copy.write_row((i, os.urandom(MIB)))
    env = target_env(workdir, pg18, db)
    env.backup()
    return env


def killer(after_bytes: int, action: Callable[[], None]) -> Callable[[int], None]:
    """A progress callback that runs ``action`` once ``after_bytes`` were sent."""
    sent = [0]
    done = threading.Event()

    def progress(count: int) -> None:
        sent[0] += count
        if sent[0] >= after_bytes and not done.is_set():
            done.set()
            action()

    return progress


def test_a_server_killed_midway_leaves_no_complete_copy(
    pg18: PgServer, workdir: Path, s3_server: S3Server
) -> None:
    env = big_env(workdir, pg18, "offsite_kill")
    [record] = env.catalog.list_backups("offsite_kill")
    assert record.size_bytes is not None and record.size_bytes >= 20 * MIB
    bucket = s3_server.unique_bucket()
    destination = s3_server.offsite_config(bucket, part_size=5 * MIB, retries=0, timeout=5)
    env = with_destination(env, destination)
    try:
        outcome = run(env, destination, progress=killer(5 * MIB, s3_server.kill))
        assert not outcome.ok
        [failed] = outcome.copies
        assert not failed.ok and failed.error
        [row] = copies(env.catalog, target="offsite_kill")
        assert row.state == CopyState.FAILED
        assert row.error == failed.error
    finally:
        s3_server.restart()  # an empty server: what the dead one held is gone
    s3_server.bucket(bucket)
    outcome = run(env, destination)
    assert outcome.ok, outcome
    [copy] = outcome.copies
    assert copy.size_bytes == record.size_bytes
    assert open_uploads(s3_server, bucket) == []
    [row] = copies(env.catalog, target="offsite_kill")
    assert (row.state, row.attempts) == (CopyState.CONFIRMED, 2)


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_cancel_aborts_the_multipart_upload(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str, encrypted: bool
) -> None:
    env = big_env(workdir, pg18, "offsite_cancel")
    encryption = OffsiteEncryption((age_key(workdir)[0],)) if encrypted else None
    destination = s3_server.offsite_config(s3_bucket, part_size=5 * MIB, encryption=encryption)
    env = with_destination(env, destination)
    [record] = env.catalog.list_backups("offsite_cancel")
    cancel = threading.Event()
    request = CopyRequest(
        record,
        destination,
        open_object_store(destination),
        env.catalog,
        env.storage,
        BackupLocks(env.config.daemon.state_dir),
        cancel,
        killer(5 * MIB, cancel.set),
    )
    with pytest.raises(OffsiteError, match="cancelled"):
        upload_backup(request)
    assert open_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []  # neither object nor manifest
    [row] = copies(env.catalog, target="offsite_cancel")
    assert row.state == CopyState.FAILED
    assert row.error is not None and "cancelled" in row.error


def test_stale_uploads_of_a_dead_process_are_aborted_first(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    env = small_env(workdir, pg18, "offsite_stale")
    destination = s3_server.offsite_config(s3_bucket, prefix="p/")
    env = with_destination(env, destination)
    client = s3_server.client()
    stale = client.create_multipart_upload(Bucket=s3_bucket, Key="p/offsite_stale/x.dump")
    client.upload_part(
        Bucket=s3_bucket,
        Key="p/offsite_stale/x.dump",
        UploadId=stale["UploadId"],
        PartNumber=1,
        Body=b"x" * (5 * MIB),
    )
    other = client.create_multipart_upload(Bucket=s3_bucket, Key="p/elsewhere/y.dump")
    assert len(open_uploads(s3_server, s3_bucket)) == 2
    outcome = run(env, destination)
    assert outcome.ok, outcome
    # only the target's own prefix is cleaned; another target's upload may be live
    assert open_uploads(s3_server, s3_bucket) == ["p/elsewhere/y.dump"]
    client.abort_multipart_upload(
        Bucket=s3_bucket, Key="p/elsewhere/y.dump", UploadId=other["UploadId"]
    )


def test_an_unencrypted_copy_is_the_local_artifact(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    env = small_env(workdir, pg18, "offsite_plain")
    destination = s3_server.offsite_config(s3_bucket)
    env = with_destination(env, destination)
    store: ObjectStore = open_object_store(destination)
    outcome = upload_pending(
        env.config.targets[0],
        env.config,
        env.catalog,
        env.storage,
        {destination.name: store},
    )
    assert outcome.ok, outcome
    [copy] = outcome.copies
    [record] = env.catalog.list_backups("offsite_plain")
    assert not copy.encrypted
    assert copy.object_sha256 == record.sha256
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=copy.key)["Body"].read()
    assert body == (workdir / "backups" / "offsite_plain" / str(record.path)).read_bytes()
    manifest = json.loads(store.get_small(f"offsite_plain/{record.path}.manifest.json"))
    assert manifest["offsite"]["encryption"] is None

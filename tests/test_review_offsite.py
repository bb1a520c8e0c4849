"""Review of the off-site feature (issue 15): defects found reading ``main``, each shown by a
test against a real backup of a real database and a real S3 endpoint (``moto_server`` on
loopback)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest

from pgwarden import logsetup
from pgwarden.archive.encrypt import load_identities, load_identity_credential
from pgwarden.catalog.offsite import CopyState, copies, record_copy
from pgwarden.catalog.offsite_summary import destination_summaries
from pgwarden.commands.check_offsite import copy_checks
from pgwarden.config import parse
from pgwarden.config.offsite import OffsiteEncryption, OffsiteRetention
from pgwarden.errors import CredentialError, PgwardenError
from pgwarden.metrics import Metrics
from pgwarden.restore.remote_catalog import rebuild_destination
from pgwarden.restore.remote_locate import read_copy
from pgwarden.retention.remote import prune_remote
from pgwarden.service.offsite_job import OffsiteRun, run_offsite
from pgwarden.service.state import ServiceState
from pgwarden.storage import open_object_store
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.s3 import S3ObjectStore
from pgwarden.storage.s3upload import MAX_PARTS, MIB, choose_part_size
from tests.pgservers import PgServer
from tests.s3server import KEY_ID, S3Server
from tests.test_config_offsite import dest, problems, target
from tests.test_offsite_ops import T0, add_backup, two_destinations
from tests.test_offsite_upload import age_key, keys, run, small_env, with_destination
from tests.test_retention_remote import Remote


def _flip_one_byte(path: Path) -> None:
    """Damage the artifact in place, its size unchanged (bit rot on the backup disk)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_encrypted_copy_of_a_changed_artifact_is_not_confirmed(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """The unencrypted upload refuses an artifact whose sha256 differs from its manifest; the
    encrypted one must too, or a damaged copy is confirmed and found out only at restore."""
    env = small_env(workdir, pg18, "review_enc_rot")
    recipient, _ = age_key(workdir)
    destination = s3_server.offsite_config(
        s3_bucket, prefix="vps1/", encryption=OffsiteEncryption((recipient,))
    )
    env = with_destination(env, destination)
    [record] = env.catalog.list_backups("review_enc_rot")
    assert record.path is not None
    _flip_one_byte(workdir / "backups" / "review_enc_rot" / record.path)
    outcome = run(env, destination)
    assert not outcome.ok
    [copy] = outcome.copies
    assert copy.error is not None and "checksum" in copy.error, copy.error
    [row] = copies(env.catalog, target="review_enc_rot", destination=destination.name)
    assert row.state == CopyState.FAILED
    # no remote manifest: nothing on the destination looks like a complete copy
    assert not [k for k in keys(s3_server, s3_bucket) if k.endswith(".manifest.json")]
    assert open_object_store(destination).head(f"review_enc_rot/{record.path}.age") is None


def test_remote_prune_touches_only_what_pgwarden_wrote_under_the_target(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """Retention touches only what the plan names: under ``<target>/`` pgwarden writes
    ``<stamp>-<id>.<ext>[.age]`` and its manifest, nothing deeper.  Another tool's file there,
    or another host's copies one level down (its prefix ``vps1/app/`` inside this one's
    ``vps1/``), are not orphans of this target and must survive its prune, without errors."""

    remote = Remote(S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/")))
    remote.copy(0)
    foreign = ["app/README.txt", "app/logs/2026-01-01.log"]
    for key in foreign:
        remote.store.put_small(key, b"not pgwarden's")
    nested = Remote(S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/app/")))
    nested.copy(0, target="db")
    nested_keys = [f"app/{info.key}" for info in nested.store.list("db/")]
    assert len(nested_keys) == 2
    outcome = prune_remote(
        remote.store,
        "moto",
        "app",
        OffsiteRetention(keep_days=30, min_keep=1),
        now=datetime.now(UTC) + timedelta(days=2),  # everything is older than ORPHAN_GRACE
        pinned=set(),
        verified=set(),
    )
    assert outcome.ok, outcome.errors
    assert outcome.orphans == ()
    left = remote.listing()
    for key in [*foreign, *nested_keys]:
        assert key in left, key
    assert outcome.inventory is not None and outcome.inventory.copies == 1


def test_a_remote_manifest_naming_another_artifact_path_is_refused(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """The fetch spool is named after the remote manifest's ``path``: a manifest in the bucket
    (anyone who can write there) saying ``../../x`` must not make a restore create files
    outside the target's storage directory.  A manifest whose ``path`` is not the artifact
    its key names is not that backup's copy."""

    env = small_env(workdir, pg18, "review_path")
    destination = s3_server.offsite_config(s3_bucket, prefix="vps1/")
    env = with_destination(env, destination)
    assert run(env, destination).ok
    [record] = env.catalog.list_backups("review_path")
    key = f"vps1/review_path/{record.path}.manifest.json"
    client = s3_server.client()
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    manifest["path"] = "../../escaped"
    client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(manifest).encode())
    store = open_object_store(destination)
    with pytest.raises(PgwardenError, match="escaped"):
        read_copy(store, destination.name, record)


def test_remote_prune_keeps_a_copy_a_restore_is_reading(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """A restore or a drill reading an off-site copy holds the backup's shared lock (as local
    reads do); the off-site job's remote prune must not delete the object under it, as the
    local prune does not: the copy is kept this time and deleted by a later run."""

    env = small_env(workdir, pg18, "review_lock")
    destination = replace(
        s3_server.offsite_config(s3_bucket, prefix="vps1/"),
        retention=OffsiteRetention(keep_days=30, min_keep=1),
    )
    env = with_destination(env, destination)
    remote = Remote(S3ObjectStore(destination))
    reading = remote.copy(40, target="review_lock")  # past keep_days: the plan deletes it
    expired = remote.copy(50, target="review_lock")
    target = env.config.targets[0]
    locks = BackupLocks(env.config.daemon.state_dir)
    with locks.shared(reading):  # a restore fetching it right now
        outcome = run_offsite(OffsiteRun(target, env.config, env.catalog, env.storage))
    [prune] = outcome.prunes
    assert expired in prune.deleted
    assert reading not in prune.deleted, prune
    assert any(reading[:8] in key for key in keys(s3_server, s3_bucket))
    again = run_offsite(OffsiteRun(target, env.config, env.catalog, env.storage))
    assert reading in again.prunes[0].deleted


def test_a_damaged_local_artifact_does_not_hold_back_older_copies(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """A run stops a destination's turn at the first failed copy (the endpoint is likely
    gone).  A local artifact that no longer matches its manifest says nothing about the
    endpoint: the older pending backups must still be sent, or every run fails on the same
    damaged file and the older copies never leave the machine."""
    env = small_env(workdir, pg18, "review_rot_order")
    env.backup()
    older, newer = sorted(env.catalog.list_backups("review_rot_order"), key=lambda r: r.started_at)
    assert newer.path is not None
    _flip_one_byte(workdir / "backups" / "review_rot_order" / newer.path)
    destination = s3_server.offsite_config(s3_bucket, prefix="vps1/")
    env = with_destination(env, destination)
    outcome = run(env, destination)
    assert not outcome.ok
    results = {c.backup_id: c for c in outcome.copies}
    assert not results[newer.id].ok
    assert older.id in results and results[older.id].ok, outcome
    states = {c.backup_id: c.state for c in copies(env.catalog, target="review_rot_order")}
    assert states == {newer.id: CopyState.FAILED, older.id: CopyState.CONFIRMED}


def test_check_warns_when_no_copy_is_kept_on_a_destination(workdir: Path) -> None:
    """``pgwarden catalog rebuild`` marks copies gone from the bucket (a lifecycle rule, a
    hand deletion) ``deleted``.  The newest upload is then recent while the destination holds
    nothing: ``pgwarden check`` must not pass it as a fresh copy ("0 copies kept")."""

    state = ServiceState.open(two_destinations(workdir), Metrics())
    try:
        backup = add_backup(state, "shop", T0)
        for copy_state in (CopyState.CONFIRMED, CopyState.DELETED):  # confirmed, then gone
            record_copy(
                state.catalog,
                backup_id=backup,
                destination="b2",
                key="k",
                state=copy_state,
                size_bytes=1,
                uploaded_at=T0,
            )
        (summary,) = destination_summaries(state.catalog, [("shop", "b2")])
    finally:
        state.close()
    assert summary.copies == 0 and summary.last_upload == T0
    (newest,) = copy_checks(summary, T0 + timedelta(hours=1))
    assert newest.status == "warn", newest
    assert "no copy" in newest.detail, newest


def test_a_configured_part_size_never_hits_the_part_cap() -> None:
    """``part_size`` set small (R2 users pick 8 MiB) and a database that grew: 100 GiB in 5 MiB
    parts is 20,480 parts, over S3's 10,000, so every upload failed after sending 50 GiB.
    The configured size is a floor; the artifact's size raises it to fit the cap."""

    size = 100 * 1024**3
    assert choose_part_size(size, 5 * MIB) * MAX_PARTS >= size
    assert choose_part_size(size, 64 * MIB) == 64 * MIB  # large enough: as configured
    assert choose_part_size(10 * MIB, 5 * MIB) == 5 * MIB


def test_two_destinations_on_the_same_bucket_and_prefix_are_refused() -> None:
    """Two ``[[offsite]]`` tables naming the same place (``b2-daily`` keep_days 7 and
    ``b2-archive`` keep_days 365, same bucket and prefix) write the same keys: the short
    policy's prune deletes the copies the long one counts as confirmed.  Config check says so,
    with the key path."""

    doc = {
        "offsite": [
            dest(name="b2-daily", prefix="vps1", retention={"keep_days": 7}),
            dest(name="b2-archive", prefix="vps1/", retention={"keep_days": 365}),
        ],
        "targets": [target()],
    }
    found = problems(doc)
    assert any(p.startswith("offsite[1].prefix:") and "b2-daily" in p for p in found), found
    # another prefix, another bucket or another endpoint is another place

    for other in (
        dest(name="b2-archive", prefix="vps1-archive/"),
        dest(name="b2-archive", prefix="vps1/", bucket="acme-archive"),
        dest(name="b2-archive", prefix="vps1/", endpoint_url="https://s3.example.net"),
    ):
        parse({"offsite": [doc["offsite"][0], other], "targets": [target()]}, Path("x"))


def test_catalog_rebuild_keeps_a_copy_whose_manifest_it_cannot_read(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """A remote manifest that cannot be read (damaged, or a read that failed) is reported and
    "never deleted"; the catalog's confirmed copy must not become ``deleted`` either: its
    object is still in the bucket, and a copy marked deleted is never uploaded again."""

    env = small_env(workdir, pg18, "review_rebuild")
    destination = s3_server.offsite_config(s3_bucket, prefix="vps1/")
    env = with_destination(env, destination)
    assert run(env, destination).ok
    [record] = env.catalog.list_backups("review_rebuild")
    key = f"vps1/review_rebuild/{record.path}.manifest.json"
    s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=b"{damaged")
    store = open_object_store(destination)
    report = rebuild_destination(env.catalog, store, destination.name, ["review_rebuild"])
    assert report.problems and not report.gone, report
    [row] = copies(env.catalog, target="review_rebuild", destination=destination.name)
    assert row.state == CopyState.CONFIRMED


def test_an_identity_credential_as_systemd_hands_it_over_is_accepted(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``User=`` (pgwarden.service has one) systemd exposes a ``LoadCredential=`` file as
    ``-r--r-----+ root root``: mode 0440, readable through an ACL, in a directory private to the
    unit (systemd/systemd#29096).  Refusing group access there made
    ``--identity-credential`` unusable under systemd; an identity *file* stays 0600-only."""

    identity = pyrage.x25519.Identity.generate()
    creds = workdir / "credentials"
    creds.mkdir(mode=0o700)
    key = creds / "age-key"
    key.write_text(f"{identity}\n")
    key.chmod(0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (loaded,) = load_identity_credential("age-key")
    assert loaded.recipient == str(identity.to_public())
    with pytest.raises(CredentialError, match="accessible by other users"):
        load_identities(key)  # the same mode on an ordinary file: refused
    key.chmod(0o444)
    with pytest.raises(CredentialError, match="accessible by other users"):
        load_identity_credential("age-key")  # world-readable: never


def test_debug_logging_keeps_s3_keys_and_backup_bytes_out_of_the_log(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """``log_level = "debug"`` routes every stdlib logger through pgwarden's handler.  botocore
    logs each request at DEBUG with its headers (the access key id in ``Authorization``) and
    its body -- a whole part of the backup, up to 5 GiB, formatted into one line -- and urllib3
    and the response parser add more.  The library loggers stay at WARNING, as alembic's and
    sqlalchemy's do."""

    out = io.StringIO()
    saved = logging.getLogger().level, list(logging.getLogger().handlers)
    try:
        logsetup.configure("debug", "json", stream=out)
        store = S3ObjectStore(s3_server.offsite_config(s3_bucket))
        body = b"ROW-FROM-THE-DUMP-" * 1000
        store.put_small("review/body", body)
        assert store.get_small("review/body") == body
    finally:
        logsetup.configure("info", "json", stream=io.StringIO())
        logging.getLogger().setLevel(saved[0])
        logging.getLogger().handlers[:] = saved[1]
    text = out.getvalue()
    assert "ROW-FROM-THE-DUMP-" not in text
    assert KEY_ID not in text
    assert len(text) < 20_000, len(text)


def test_catalog_rebuild_ignores_another_hosts_copies_under_a_deeper_prefix(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """Another host writing under ``vps1/review_deep/`` puts its target ``db``'s manifests at
    ``vps1/review_deep/db/...``, inside this host's ``vps1/`` + target ``review_deep``.  They
    are not this target's copies: a rebuild must neither index them nor report problems."""
    env = small_env(workdir, pg18, "review_deep")
    destination = s3_server.offsite_config(s3_bucket, prefix="vps1/")
    env = with_destination(env, destination)
    assert run(env, destination).ok
    [record] = env.catalog.list_backups("review_deep")
    nested = Remote(S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/review_deep/")))
    nested.copy(1, target="db")
    store = open_object_store(destination)
    report = rebuild_destination(env.catalog, store, destination.name, ["review_deep"])
    assert report.ok, report.problems
    assert report.manifests == 1 and report.confirmed == [record.id]


def test_stale_upload_abort_leaves_a_deeper_prefix_alone(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """Every run first aborts the multipart uploads a killed run left under ``<target>/``.
    An upload another host has in flight under a deeper prefix (its ``vps1/app/`` inside this
    host's ``vps1/`` + target ``app``) is not this target's and must go on."""
    client = s3_server.client()
    theirs = client.create_multipart_upload(Bucket=s3_bucket, Key="vps1/app/db/x.dump")
    ours = client.create_multipart_upload(Bucket=s3_bucket, Key="vps1/app/y.dump")
    store = S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/"))
    assert store.abort_stale_uploads("app/") == 1
    left = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [theirs["UploadId"]]
    assert ours["UploadId"] not in [u["UploadId"] for u in left]

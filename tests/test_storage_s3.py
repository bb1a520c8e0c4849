"""The S3 object store (:mod:`pgwarden.storage.s3`) against a real ``moto_server`` process."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pgwarden.config.offsite import SecretSource
from pgwarden.errors import CredentialError, OffsiteError
from pgwarden.redaction import Secret
from pgwarden.storage import open_object_store
from pgwarden.storage.objects import ChecksumMode, Upload
from pgwarden.storage.s3 import S3ObjectStore
from pgwarden.storage.s3upload import MIB, choose_part_size
from tests.pgservers import free_port
from tests.s3server import KEY_ID, SECRET, S3Server

PART = 5 * MIB


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from part to part (cheap to make)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    whole, rest = divmod(size, MIB)
    chunks = [bytes([i % 251]) + block[1:] for i in range(whole)]
    return b"".join(chunks) + block[:rest]


def feed(sink_write: object, data: bytes, chunk: int = 256 * 1024) -> None:
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        sink_write(view[start : start + chunk])  # type: ignore[operator]


def send(sink: Upload, data: bytes, *, fail: str | None = None, check: object = None) -> None:
    """Write ``data`` into ``sink`` then complete it, or raise ``RuntimeError(fail)`` before
    completing (a source dying midway); ``check()`` runs after the writes."""
    with sink:
        feed(sink.write, data)
        if callable(check):
            check()
        if fail is not None:
            raise RuntimeError(fail)
        sink.complete()


def open_uploads(s3_server: S3Server, bucket: str) -> list[str]:
    answer = s3_server.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in answer.get("Uploads", [])]


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/", part_size=PART))


def test_fixture_server_answers_and_restarts_empty(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a", Body=b"x")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a"]
    s3_server.restart()
    assert s3_server.is_running()
    assert client.list_buckets()["Buckets"] == []


def test_part_size_keeps_under_the_part_cap() -> None:
    assert choose_part_size(0, None) == 8 * MIB
    assert choose_part_size(10 * MIB, None) == 8 * MIB
    assert choose_part_size(100 * 1024**3, None) == 12 * MIB  # 100 GiB / 9,000 rounded up
    assert choose_part_size(100 * 1024**3, None) * 9_000 >= 100 * 1024**3
    assert choose_part_size(10**14, None) == 5 * 1024**3  # capped at S3's maximum
    assert choose_part_size(100 * 1024**3, 64 * MIB) == 64 * MIB  # configured wins


def test_multipart_parts_are_equal_but_the_last_and_checksums_match(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    data = payload(18 * MIB)
    client = s3_server.client()
    sent: list[int] = []
    with store.upload("app/x.dump", expected_size=len(data), progress=sent.append) as sink:
        feed(sink.write, data)
        # before completing: the first three parts are on the server, each exactly 5 MiB
        (upload,) = client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
        assert upload["Key"] == "vps1/app/x.dump"
        parts = client.list_parts(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert [p["Size"] for p in parts["Parts"]] == [PART, PART, PART]
        result = sink.complete()
    assert result.parts == 4
    assert result.part_size == PART
    assert result.size == len(data)
    assert sent == [PART, PART, PART, 3 * MIB]
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.checksum is ChecksumMode.SHA256_COMPOSITE
    digests = b"".join(
        hashlib.sha256(data[i : i + PART]).digest() for i in range(0, len(data), PART)
    )
    head = client.head_object(Bucket=s3_bucket, Key="vps1/app/x.dump", ChecksumMode="ENABLED")
    composite = base64.b64encode(hashlib.sha256(digests).digest()).decode()
    assert head["ChecksumSHA256"].split("-")[0] == composite
    assert open_uploads(s3_server, s3_bucket) == []
    out = io.BytesIO()
    assert store.download("app/x.dump", out) == len(data)
    assert hashlib.sha256(out.getvalue()).hexdigest() == result.sha256
    with store.open_read("app/x.dump") as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == result.sha256


def test_md5_mode_proves_the_upload_by_its_multipart_etag(
    s3_server: S3Server, s3_bucket: str
) -> None:
    config = s3_server.offsite_config(s3_bucket, checksum="md5", part_size=PART)
    store = S3ObjectStore(config)
    data = payload(11 * MIB, seed=1)
    with store.upload("t/y.dump", expected_size=len(data)) as sink:
        feed(sink.write, data)
        result = sink.complete()
    assert result.checksum is ChecksumMode.MD5_ETAG
    assert result.parts == 3
    md5s = b"".join(hashlib.md5(data[i : i + PART]).digest() for i in range(0, len(data), PART))
    etag = s3_server.client().head_object(Bucket=s3_bucket, Key="t/y.dump")["ETag"]
    assert etag.strip('"') == f"{hashlib.md5(md5s).hexdigest()}-3"
    small = store.put_small("t/y.dump.manifest.json", b'{"id": 1}')
    assert (small.parts, small.checksum) == (1, ChecksumMode.MD5_ETAG)


def test_a_small_object_is_one_put_with_its_sha256(
    store: S3ObjectStore, s3_server: S3Server, s3_bucket: str
) -> None:
    result = store.put_small("t/m.manifest.json", b'{"a": 1}')
    assert (result.parts, result.checksum, result.size) == (1, ChecksumMode.SHA256_COMPOSITE, 8)
    assert result.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert store.get_small("t/m.manifest.json") == b'{"a": 1}'
    with pytest.raises(OffsiteError, match="more than the 4 expected"):
        store.get_small("t/m.manifest.json", max_bytes=4)
    with pytest.raises(OffsiteError, match=r"NoSuchKey.*|.*t/missing"):
        store.get_small("t/missing")
    assert store.head("t/missing") is None
    info = store.head("t/m.manifest.json")
    assert info is not None and info.size == 8
    # an object of exactly one part is still a single PUT
    one = store.upload("t/one", expected_size=PART)
    with one:
        one.write(payload(PART))
        assert open_uploads(s3_server, s3_bucket) == []
        assert one.complete().parts == 1


def test_a_failing_source_aborts_the_multipart_upload(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    data = payload(12 * MIB)
    seen: list[list[str]] = []
    sink = store.upload("t/z.dump", expected_size=len(data))
    with pytest.raises(RuntimeError, match="pg_dump died"):
        send(
            sink,
            data,
            fail="pg_dump died",
            check=lambda: seen.append(open_uploads(s3_server, s3_bucket)),
        )
    assert seen == [["vps1/t/z.dump"]]
    assert open_uploads(s3_server, s3_bucket) == []
    assert store.head("t/z.dump") is None


def test_a_set_cancel_event_stops_the_upload_and_aborts(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    cancel = threading.Event()
    data = payload(12 * MIB)

    def progress(_: int) -> None:
        cancel.set()  # after the first part

    sink = store.upload("t/c.dump", expected_size=len(data), cancel=cancel, progress=progress)
    with pytest.raises(OffsiteError, match="cancelled"):
        send(sink, data)
    assert open_uploads(s3_server, s3_bucket) == []
    assert store.head("t/c.dump") is None


def test_leaving_without_complete_aborts(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    with store.upload("t/l.dump", expected_size=0) as sink:
        feed(sink.write, payload(7 * MIB))
    assert open_uploads(s3_server, s3_bucket) == []
    with pytest.raises(OffsiteError, match="already aborted"):
        sink.complete()


def test_no_progress_within_stall_timeout_stops_the_transfer(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = S3ObjectStore(s3_server.offsite_config(s3_bucket, stall_timeout=0.0))
    with pytest.raises(OffsiteError, match="no progress for 0 s"):
        store.put_small("t/s", b"x")


def test_server_killed_mid_upload_fails_cleanly(s3_server: S3Server) -> None:
    """The "endpoint lost" fault: the server dies after the 2nd part.  A restarted moto_server
    is empty (it keeps data in memory), so afterwards nothing can look complete: the check is
    that the error is clear, secret-free, and that the fresh server holds no upload or object."""
    if not s3_server.is_running():
        s3_server.restart()
    bucket = s3_server.unique_bucket()
    store = S3ObjectStore(s3_server.offsite_config(bucket, part_size=PART, retries=1))
    data = payload(18 * MIB)
    done: list[int] = []

    def progress(n: int) -> None:
        done.append(n)
        if len(done) == 2:
            s3_server.kill()

    try:
        sink = store.upload("t/k.dump", expected_size=len(data), progress=progress)
        with pytest.raises(OffsiteError) as caught:
            send(sink, data)
        message = str(caught.value)
        assert "upload part 3 of s3://" in message
        assert f"{bucket}/t/k.dump" in message
        assert SECRET not in message and KEY_ID not in message
    finally:
        s3_server.restart()
    s3_server.bucket(bucket)
    assert open_uploads(s3_server, bucket) == []
    assert store.head("t/k.dump") is None


def test_abort_stale_uploads_aborts_only_under_the_prefix(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    client = s3_server.client()
    for key in ("vps1/app/a.dump", "vps1/app/b.dump", "vps1/other/c.dump"):
        upload_id = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        client.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024
        )
    assert store.abort_stale_uploads("app/") == 2
    assert open_uploads(s3_server, s3_bucket) == ["vps1/other/c.dump"]


def test_listing_follows_every_page(
    s3_server: S3Server, s3_bucket: str, store: S3ObjectStore
) -> None:
    client = s3_server.client(max_pool_connections=16)
    keys = [f"vps1/many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=s3_bucket, Key=k, Body=b"x"), keys))
    client.put_object(Bucket=s3_bucket, Key="vps1/manx", Body=b"not under many/")
    listed = list(store.list("many/"))
    assert [o.key for o in listed] == [k.removeprefix("vps1/") for k in keys]
    assert all(o.size == 1 for o in listed)
    assert len(list(store.list())) == 1101


def test_delete_on_a_versioned_bucket_removes_every_version(s3_server: S3Server) -> None:
    bucket = s3_server.unique_bucket("ver", versioned=True)
    store = S3ObjectStore(s3_server.offsite_config(bucket))
    client = s3_server.client()
    for body in (b"one", b"two", b"three"):
        store.put_small("t/a.dump", body)
    client.delete_object(Bucket=bucket, Key="t/a.dump")  # a delete marker
    store.put_small("t/a.dump", b"four")
    store.put_small("t/a.dump.manifest.json", b"{}")  # same prefix, another key: stays
    store.delete("t/a.dump")
    versions = client.list_object_versions(Bucket=bucket, Prefix="t/")
    left = [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
    assert left == ["t/a.dump.manifest.json"]
    store.delete("t/a.dump")  # missing is not an error
    assert store.probe().versioning == "Enabled"


def test_delete_on_an_unversioned_bucket(store: S3ObjectStore) -> None:
    store.put_small("t/b", b"x")
    store.delete("t/b")
    store.delete("t/b")
    assert store.head("t/b") is None


def test_probe_reports_a_good_and_a_missing_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    good = open_object_store(s3_server.offsite_config(s3_bucket, prefix="p/"))
    result = good.probe()
    assert (result.writable, result.versioning, result.error) == (True, None, None)
    assert list(good.list()) == []  # the probe object is gone
    missing = open_object_store(s3_server.offsite_config("no-such-bucket-pgw"))
    result = missing.probe()
    assert not result.writable
    assert result.error is not None
    assert "NoSuchBucket" in result.error and "s3://no-such-bucket-pgw/" in result.error
    assert SECRET not in result.error


def test_location_names_bucket_prefix_and_endpoint_host(
    s3_server: S3Server, s3_bucket: str
) -> None:
    config = s3_server.offsite_config(
        s3_bucket, prefix="vps1/", endpoint_url=f"http://u:pw@127.0.0.1:{s3_server.port}"
    )
    assert S3ObjectStore(config).location == f"s3://{s3_bucket}/vps1 (127.0.0.1:{s3_server.port})"


# -- credentials reach boto3 (moto does not check them) --------------------------------------


def credentials_of(store: S3ObjectStore) -> tuple[str, str]:
    creds = store.client._get_credentials()  # type: ignore[attr-defined]
    return creds.access_key, creds.secret_key


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_configured_credentials_reach_the_client(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_aws_env: None
) -> None:
    base = s3_server.offsite_config("bkt")
    assert credentials_of(S3ObjectStore(base)) == (KEY_ID, SECRET)  # from the environment
    key_file = tmp_path / "key_id"
    key_file.write_text("AKIAFROMFILE\n")
    key_file.chmod(0o600)
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "s3-secret").write_text("secret-from-credential")
    (creds_dir / "s3-secret").chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    from_files = base.__class__(
        **{
            **base.__dict__,
            "access_key_id": SecretSource(file=key_file),
            "secret_access_key": SecretSource(credential="s3-secret"),
        }
    )
    assert credentials_of(S3ObjectStore(from_files)) == ("AKIAFROMFILE", "secret-from-credential")
    inline = base.__class__(
        **{
            **base.__dict__,
            "access_key_id": SecretSource(value=Secret("AKIAINLINE")),
            "secret_access_key": SecretSource(value=Secret("inline-secret")),
        }
    )
    assert credentials_of(S3ObjectStore(inline)) == ("AKIAINLINE", "inline-secret")
    # none configured: boto3's own chain (here its AWS_* variables)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    chain = base.__class__(
        **{**base.__dict__, "access_key_id": SecretSource(), "secret_access_key": SecretSource()}
    )
    assert credentials_of(S3ObjectStore(chain)) == ("AKIACHAIN", "chain-secret")


def test_a_missing_key_variable_is_a_clear_error(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGWARDEN_TEST_S3_SECRET")
    match = r"offsite\[moto\]\.secret_access_key_env: environment variable PGWARDEN_TEST_S3_SECRET"
    with pytest.raises(CredentialError, match=match):
        S3ObjectStore(s3_server.offsite_config("bkt"))


def test_an_unreachable_endpoint_is_a_clear_secret_free_error(s3_server: S3Server) -> None:
    port = free_port()  # nothing listens there
    config = s3_server.offsite_config(
        "bkt", endpoint_url=f"http://user:pw-in-url@127.0.0.1:{port}", retries=0, timeout=2.0
    )
    store = S3ObjectStore(config)
    with pytest.raises(OffsiteError) as caught:
        store.head("t/a")
    message = str(caught.value)
    assert message.startswith("head s3://bkt/t/a: Could not connect to the endpoint URL")
    assert "pw-in-url" not in message and SECRET not in message and KEY_ID not in message
    result = store.probe()
    assert not result.writable and result.error and "pw-in-url" not in result.error


def test_download_streams_and_stops_on_cancel(store: S3ObjectStore) -> None:
    data = payload(6 * MIB)
    store.put_small("t/d.dump", data)
    cancel = threading.Event()
    chunks: list[int] = []

    def progress(n: int) -> None:
        chunks.append(n)
        cancel.set()

    sink = io.BytesIO()
    with pytest.raises(OffsiteError, match="cancelled"):
        store.download("t/d.dump", sink, cancel=cancel, progress=progress)
    assert chunks == [MIB]  # streamed in 1 MiB chunks, stopped after the first
    with pytest.raises(OffsiteError, match="NoSuchKey"):
        store.download("t/missing", io.BytesIO())

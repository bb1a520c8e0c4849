"""The S3 object store (:mod:`pgwarden.storage.s3`) against a real ``moto_server`` process."""

from __future__ import annotations

from tests.s3server import S3Server


def test_fixture_server_answers_and_restarts_empty(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a", Body=b"x")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a"]
    s3_server.restart()
    assert s3_server.is_running()
    assert client.list_buckets()["Buckets"] == []

"""How an upload is proven when the provider lacks S3 additional checksums.

A small HTTP proxy on loopback stands between boto3 and the real ``moto_server``: in mode
``refuse`` it answers ``400 InvalidRequest`` to any request carrying a SHA-256 checksum header
(a provider rejecting them), in mode ``strip`` it silently drops those headers (a provider
ignoring them).  ``checksum = "auto"`` must then prove the copy by its MD5 ETag;
``"sha256"`` must refuse to call it confirmed.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pgwarden.errors import OffsiteError
from pgwarden.storage.objects import ChecksumMode
from pgwarden.storage.s3 import S3ObjectStore
from pgwarden.storage.s3upload import MIB
from tests.s3server import S3Server

PART = 5 * MIB
_CHECKSUM_HEADERS = ("x-amz-checksum-sha256", "x-amz-checksum-algorithm", "x-amz-sdk-checksum")
_HOP = frozenset({"connection", "transfer-encoding", "content-length", "keep-alive"})


class ChecksumProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.mode = mode
        self.refused = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ChecksumProxy

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        flagged = [k for k in headers if k.lower().startswith(_CHECKSUM_HEADERS)]
        if flagged and self.server.mode == "refuse":
            self.server.refused += 1
            self._reply(400, b"<Error><Code>InvalidRequest</Code><Message>no</Message></Error>")
            return
        for key in flagged:
            del headers[key]
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            size = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", size or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    def _reply(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815 (http.server names)


@pytest.fixture(params=["refuse", "strip"])
def proxy(request: pytest.FixtureRequest, s3_server: S3Server) -> Iterator[ChecksumProxy]:
    if not s3_server.is_running():
        s3_server.restart()
    server = ChecksumProxy(s3_server.port, request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def store_via(proxy: ChecksumProxy, s3_server: S3Server, bucket: str, mode: str) -> S3ObjectStore:
    config = s3_server.offsite_config(
        bucket, endpoint_url=proxy.endpoint, checksum=mode, part_size=PART
    )
    return S3ObjectStore(config)


def test_auto_falls_back_to_the_md5_etag(
    proxy: ChecksumProxy, s3_server: S3Server, s3_bucket: str
) -> None:
    store = store_via(proxy, s3_server, s3_bucket, "auto")
    data = b"".join(bytes([i]) * MIB for i in range(12))
    with store.upload("t/x.dump", expected_size=len(data)) as sink:
        sink.write(data)
        result = sink.complete()
    assert (result.checksum, result.parts) == (ChecksumMode.MD5_ETAG, 3)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    small = store.put_small("t/x.dump.manifest.json", b"{}")
    assert small.checksum is ChecksumMode.MD5_ETAG
    if proxy.mode == "refuse":
        assert proxy.refused == 1  # learnt once: the manifest went without the header
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_sha256_mode_refuses_to_confirm_without_sha256(
    proxy: ChecksumProxy, s3_server: S3Server, s3_bucket: str
) -> None:
    store = store_via(proxy, s3_server, s3_bucket, "sha256")
    expected = "InvalidRequest" if proxy.mode == "refuse" else "confirmed no SHA-256"
    with pytest.raises(OffsiteError, match=expected):
        store.put_small("t/y", b"data")
    assert store.head("t/y") is None  # an unconfirmed object is not left behind

"""A real S3 endpoint for tests: one ``moto_server`` process per session on a loopback port.

``moto_server -H 127.0.0.1 -p PORT`` (from ``moto[server]``, the script beside
``sys.executable``) runs as a separate process and speaks the S3 protocol over HTTP; boto3 talks
to it exactly as to AWS (``endpoint_url``, region ``us-east-1``, path addressing).  It keeps every
object in memory and does not check credentials (a unit test shows the configured ones reach
boto3 instead).

Fixtures (a pytest plugin: ``pytest_plugins = ["tests.s3server"]`` in the root conftest):

* ``s3_server`` (session) -- an :class:`S3Server`: ``.endpoint``, ``.pid``, ``.client()``,
  ``.bucket(name, versioned=False)``, ``.offsite_config(bucket, ...)``, and the "endpoint lost"
  fault ``.kill()`` (SIGKILL) / ``.restart()``.  **A restarted server is empty**: moto keeps its
  data in memory, so every bucket, object and open multipart upload is gone after ``kill()``;
  tests that kill it must create their buckets afterwards (and ``restart()`` when done:
  ``s3_bucket`` restarts a dead server before handing out a bucket).  So a bucket never
  outlives the test that made it: no module- or session-scoped buckets.
* ``s3_bucket`` (function) -- a fresh, uniquely named, unversioned bucket on that server.

The fixture exports :data:`KEY_ID_ENV` / :data:`SECRET_ENV` (dummy keys) so an
:class:`~pgwarden.config.offsite.OffsiteConfig` can name them like a real config does, and sets
``AWS_EC2_METADATA_DISABLED`` so boto3 never looks for an instance role off the machine.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from pgwarden.config.offsite import OffsiteConfig, SecretSource
from tests.pgservers import free_port, temp_base

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
#: environment variables holding the (dummy) keys, as a config's ``*_env`` keys name them
KEY_ID_ENV = "PGWARDEN_TEST_S3_KEY_ID"
SECRET_ENV = "PGWARDEN_TEST_S3_SECRET"
KEY_ID = "AKIAPGWARDENTEST0001"
SECRET = "pgwarden-test-secret-key-0123456789abcdef"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_names = itertools.count(1)


def moto_server_binary() -> Path:
    """``moto_server`` beside the running interpreter (the venv's ``bin``); raise if missing."""
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: pip install 'moto[server]' (dev extra)")
    return path


@dataclass
class S3Server:
    """One ``moto_server`` process on ``127.0.0.1:port``; its output goes to ``base/moto.log``."""

    base: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("moto_server is not running")
        return self.process.pid

    @property
    def log(self) -> Path:
        return self.base / "moto.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers HTTP; fail with its log if it does not."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(moto_server_binary()), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not start on {self.endpoint}:\n{self.log.read_text()}")

    def kill(self) -> None:
        """The "endpoint lost" fault: SIGKILL, no goodbye.  Everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Kill (if running) and start again on the same port: an *empty* server."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **config: Any) -> S3Client:
        """A raw boto3 S3 client for this server (no retries unless ``config`` asks)."""
        options: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "max_attempts": 1},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        options.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=BotoConfig(**options),
        )

    def bucket(self, name: str, *, versioned: bool = False) -> str:
        """Create bucket ``name`` (3+ characters) and return its name."""
        client = self.client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def unique_bucket(self, stem: str = "pgw", *, versioned: bool = False) -> str:
        """A new bucket with a name no other test in this session uses."""
        return self.bucket(f"{stem}-{os.getpid()}-{next(_names)}", versioned=versioned)

    def offsite_config(self, bucket: str, name: str = "moto", **changes: Any) -> OffsiteConfig:
        """An ``[[offsite]]`` destination on this server, keys from :data:`KEY_ID_ENV` /
        :data:`SECRET_ENV`; ``changes`` override any field (``prefix``, ``part_size``...)."""
        config = OffsiteConfig(
            name=name,
            bucket=bucket,
            endpoint_url=self.endpoint,
            region=REGION,
            addressing_style="path",
            access_key_id=SecretSource(env=KEY_ID_ENV),
            secret_access_key=SecretSource(env=SECRET_ENV),
            timeout=10.0,
            stall_timeout=30.0,
            retries=2,
        )
        return replace(config, **changes)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A ``moto_server`` for the whole session (see the module docstring)."""
    saved = {k: os.environ.get(k) for k in (KEY_ID_ENV, SECRET_ENV, "AWS_EC2_METADATA_DISABLED")}
    os.environ[KEY_ID_ENV] = KEY_ID
    os.environ[SECRET_ENV] = SECRET
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    server = S3Server(base=temp_base("pgwarden-moto-"))
    try:
        server.start()
    except Exception as exc:
        pytest.exit(f"cannot start moto_server: {exc}", returncode=1)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh unversioned bucket (the server is restarted first if a test killed it)."""
    if not s3_server.is_running():
        s3_server.restart()
    return s3_server.unique_bucket()

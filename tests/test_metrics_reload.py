"""A reload puts new metrics TLS and basic-auth settings in force (issue 16, item 3).

A real :class:`Daemon` runs in-process with its metrics listener on 127.0.0.1 (port 0); each
reload is asked through the service API, as ``pgwarden ctl reload`` does, and checked over real
HTTP(S): auth added, TLS added, a certificate renewed under the same path, and a certificate
that cannot be loaded rejecting the reload while the listener keeps serving as before.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.control.api import ReloadStatus
from pgwarden.service.daemon import Daemon
from tests.test_control_support import short_dir
from tests.test_metrics import basic, bcrypt_hash, get, self_signed


def _config(root: Path, metrics: str = "") -> str:
    return f"""
[daemon]
state_dir = "{root}/state"
socket = "{root}/ctl.sock"

[metrics]
listen = "127.0.0.1:0"
{metrics}

[monitor]
enabled = false

[storage]
path = "{root}/backups"

[[targets]]
name = "app"
dsn = "postgresql://backup@127.0.0.1:1/app"
"""


@pytest.fixture
def daemon_root() -> Iterator[tuple[Daemon, Path]]:
    root = short_dir()
    (root / "pgwarden.toml").write_text(_config(root))
    daemon = Daemon(root / "pgwarden.toml", install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()), name="daemon")
    thread.start()
    try:
        assert daemon.started.wait(60)
        yield daemon, root
    finally:
        daemon.request_stop()
        thread.join(60)
        shutil.rmtree(root, ignore_errors=True)
    assert box.get("code") == 0


def served_cert(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
    assert cert is not None
    return cert


def test_reload_applies_auth_and_tls_and_a_bad_certificate_rejects_it(
    daemon_root: tuple[Daemon, Path],
) -> None:
    daemon, root = daemon_root
    path = root / "pgwarden.toml"
    server = daemon._metrics_server
    assert server is not None
    port = server.port
    plain = f"http://127.0.0.1:{port}/healthz"
    assert get(plain)[0] == 200

    users = f'[metrics.basic_auth_users]\nprom = "{bcrypt_hash("pw")}"\n'
    path.write_text(_config(root) + users)
    answer = daemon.api.reload(30)
    assert answer.status is ReloadStatus.APPLIED, answer.error
    assert "metrics TLS and basic auth updated" in answer.notes
    assert get(plain)[0] == 401
    assert get(plain, basic("prom", "pw"))[0] == 200

    tls_dir = root / "tls"
    tls_dir.mkdir()
    cert, key = self_signed(tls_dir)
    tls_keys = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
    path.write_text(_config(root, tls_keys) + users)
    assert daemon.api.reload(30).status is ReloadStatus.APPLIED
    secure = f"https://127.0.0.1:{port}/healthz"
    trusting = ssl.create_default_context(cafile=str(cert))
    assert get(secure, basic("prom", "pw"), context=trusting)[0] == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=10)
    first = served_cert(port)

    # a renewed certificate under the same paths: the same config, a reload serves it
    renewed_dir = root / "renewed"
    renewed_dir.mkdir()
    new_cert, new_key = self_signed(renewed_dir)
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    renewed = daemon.api.reload(30)
    assert renewed.status is ReloadStatus.APPLIED
    assert "metrics TLS and basic auth updated" not in renewed.notes  # same keys
    assert served_cert(port) != first

    # a certificate that cannot be loaded: rejected, naming the key; the listener is unchanged
    broken = f'tls_cert_file = "{root}/missing.crt"\ntls_key_file = "{key}"\n'
    path.write_text(_config(root, broken))
    rejected = daemon.api.reload(30)
    assert rejected.status is ReloadStatus.REJECTED
    assert "metrics.tls_cert_file: cannot load" in (rejected.error or "")
    trusting = ssl.create_default_context(cafile=str(cert))
    assert get(secure, context=trusting)[0] == 401  # auth still in force
    assert get(secure, basic("prom", "pw"), context=trusting)[0] == 200

    # back to plain HTTP without auth
    path.write_text(_config(root))
    assert daemon.api.reload(30).status is ReloadStatus.APPLIED
    assert get(plain)[0] == 200
    assert daemon.healthy()

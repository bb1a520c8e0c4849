"""Metrics from real job outcomes, restored from a real catalog, served over real HTTP.

Every test builds a fresh :class:`Metrics` registry and reads it with ``get_sample_value`` or
through a real :class:`MetricsServer` on 127.0.0.1 (port 0).  TLS certificates are made with
``openssl req -x509``; password hashes with the ``bcrypt`` package (cost 4: fast tests).
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from structlog.testing import capture_logs

from pgwarden.backup.take import BackupOutcome
from pgwarden.catalog import BackupRecord
from pgwarden.config import Config
from pgwarden.errors import ConfigError
from pgwarden.metrics import Metrics, MetricsServer
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.http import is_loopback, tls_context
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.retention import plan as retention
from pgwarden.retention.prune import Entry, PruneOutcome
from pgwarden.service import outcomes
from pgwarden.service.jobs import Job, JobResult
from pgwarden.service.state import ServiceState
from pgwarden.storage.base import backup_name, manifest_name
from tests.helpers import make_config

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
BCRYPT = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"  # what htpasswd -B makes
NOWHERE = "postgresql://postgres@127.0.0.1:1/{db}"  # never connected to: no PostgreSQL here


def config_for(workdir: Path, *names: str, **top: Any) -> Config:
    targets = [{"name": n, "dsn": NOWHERE.format(db=n)} for n in names]
    return make_config(workdir, targets, **top)


@pytest.fixture
def state(workdir: Path) -> Iterator[ServiceState]:
    st = ServiceState.open(config_for(workdir, "shop", "app"), Metrics())
    try:
        yield st
    finally:
        st.close()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def add_backup(
    st: ServiceState, target: str, started: datetime, status: str = "complete", size: int = 1000
) -> str:
    """A backup recorded in the catalog; a complete one also written to storage."""
    backup_id = uuid.uuid4().hex
    name = backup_name(started, backup_id[:8], "dump")
    st.catalog.record_backup_start(
        backup_id, target=target, database=target, started_at=started, format="custom"
    )
    if status == "complete":
        with st.storage.writing(target, name) as partial:
            st.storage.write_stream(partial, [b"x" * size])
            st.storage.publish(partial)
        st.storage.write_manifest_atomic(target, manifest_name(name), b"{}")
    st.catalog.record_backup_finish(
        backup_id,
        status=status,
        finished_at=started + timedelta(minutes=2),
        size_bytes=size if status == "complete" else None,
        duration_s=120.0,
        error=None if status == "complete" else "boom",
    )
    return backup_id


def backed_up(size: int, duration_s: float, backup_id: str = "x") -> BackupOutcome:
    """A backup job's outcome (``backup_id`` "x" is in no catalog)."""
    path = Path("/nowhere/shop/x.dump")
    return BackupOutcome(
        backup_id, "shop", path, path, size, "0" * 64, duration_s, "custom", "zstd", 1, 1
    )


def drilled(status: str = "passed", duration_s: float = 90.0) -> VerifyOutcome:
    return VerifyOutcome("x", "shop", "x.dump", status, T0, T0, duration_s, checks=[])


def pruned(deleted: int, kept: int = 0, dry_run: bool = False) -> PruneOutcome:
    def entry(action: retention.Action, result: str) -> Entry:
        record = BackupRecord(
            id=uuid.uuid4().hex,
            target="shop",
            database="shop",
            started_at=T0,
            finished_at=T0,
            status="complete",
            tags=(),
            format="custom",
            compression=None,
            path=None,
            size_bytes=None,
            sha256=None,
            pinned=False,
            verified_at=None,
            verify_status=None,
            error=None,
            attempt=1,
            duration_s=None,
            deleted_at=None,
        )
        return Entry(record, action, "test", (), result=result)

    entries = [entry("delete", "deleted") for _ in range(deleted)]
    entries += [entry(retention.KEEP, "kept") for _ in range(kept)]
    return PruneOutcome("shop", dry_run, T0, entries=entries)


def finished_job(
    st: ServiceState,
    kind: str,
    target: str,
    job_state: str,
    result: JobResult = None,
    started: datetime = T0,
) -> Job:
    job = Job(kind, target, st.config, state=job_state, result=result)
    job.started_at, job.finished_at = started, started + timedelta(seconds=90)
    return job


# -- record_job --------------------------------------------------------------------------


def test_successful_backup_sets_history_and_storage_gauges(state: ServiceState) -> None:
    add_backup(state, "shop", T0 - timedelta(days=2), size=500)
    add_backup(state, "shop", T0, size=1500)
    add_backup(state, "shop", T0 - timedelta(days=1), status="failed")
    job = finished_job(
        state,
        "backup",
        "shop",
        "succeeded",
        backed_up(1500, 61.5),
    )
    outcomes.record_job(state, job)
    m = state.metrics
    assert job.finished_at is not None
    finished = job.finished_at.timestamp()
    assert value(m, "pgwarden_backup_runs_total", target="shop", result="success") == 1
    assert value(m, "pgwarden_backup_last_success_timestamp_seconds", target="shop") == finished
    assert value(m, "pgwarden_backup_last_attempt_timestamp_seconds", target="shop") == finished
    assert value(m, "pgwarden_backup_last_run_success", target="shop") == 1
    assert value(m, "pgwarden_backup_last_duration_seconds", target="shop") == 61.5
    assert value(m, "pgwarden_backup_last_size_bytes", target="shop") == 1500
    assert value(m, "pgwarden_backups", target="shop", state="complete") == 2
    assert value(m, "pgwarden_backups", target="shop", state="failed") == 1
    oldest = (T0 - timedelta(days=2)).timestamp()
    assert value(m, "pgwarden_backup_oldest_timestamp_seconds", target="shop") == oldest
    stored = value(m, "pgwarden_backup_stored_bytes", target="shop")
    assert stored == state.storage.stored_bytes("shop")
    assert stored is not None
    assert stored >= 2000  # both artifacts, plus their manifests
    free = value(m, "pgwarden_storage_free_bytes")
    assert free is not None
    assert free > 0
    # the other target is untouched
    assert value(m, "pgwarden_backup_last_run_success", target="app") is None


def test_failed_then_cancelled_backup(state: ServiceState) -> None:
    m = state.metrics
    ok = finished_job(state, "backup", "shop", "succeeded", backed_up(10, 1))
    outcomes.record_job(state, ok)
    later = T0 + timedelta(hours=1)
    outcomes.record_job(state, finished_job(state, "backup", "shop", "failed", started=later))
    assert ok.finished_at is not None
    assert value(m, "pgwarden_backup_last_run_success", target="shop") == 0
    assert value(m, "pgwarden_backup_runs_total", target="shop", result="failure") == 1
    # a failure moves the attempt, never the last success or its size
    last_success = value(m, "pgwarden_backup_last_success_timestamp_seconds", target="shop")
    assert last_success == ok.finished_at.timestamp()
    attempt = value(m, "pgwarden_backup_last_attempt_timestamp_seconds", target="shop")
    assert attempt == (later + timedelta(seconds=90)).timestamp()
    assert value(m, "pgwarden_backup_last_size_bytes", target="shop") == 10
    # a cancelled run (shutdown, operator) is counted but is not a failure or a success
    outcomes.record_job(state, finished_job(state, "backup", "shop", "cancelled"))
    assert value(m, "pgwarden_backup_runs_total", target="shop", result="cancelled") == 1
    assert value(m, "pgwarden_backup_last_run_success", target="shop") == 0
    # no backups at all: zero counts, no oldest series
    assert value(m, "pgwarden_backups", target="shop", state="complete") == 0
    assert value(m, "pgwarden_backup_oldest_timestamp_seconds", target="shop") is None


def test_verify_outcomes(state: ServiceState) -> None:
    m = state.metrics
    passed = finished_job(state, "verify", "shop", "succeeded", drilled(duration_s=42.0))
    outcomes.record_job(state, passed)
    assert passed.finished_at is not None
    assert value(m, "pgwarden_verify_runs_total", target="shop", result="success") == 1
    assert value(m, "pgwarden_verify_last_run_success", target="shop") == 1
    assert value(m, "pgwarden_verify_last_duration_seconds", target="shop") == 42.0
    at = passed.finished_at.timestamp()
    assert value(m, "pgwarden_verify_last_success_timestamp_seconds", target="shop") == at
    # a drill that ran to its end but found a problem is a failure
    found = finished_job(
        state, "verify", "shop", "succeeded", drilled("failed"), started=T0 + timedelta(days=1)
    )
    outcomes.record_job(state, found)
    assert value(m, "pgwarden_verify_runs_total", target="shop", result="failure") == 1
    assert value(m, "pgwarden_verify_last_run_success", target="shop") == 0
    assert value(m, "pgwarden_verify_last_duration_seconds", target="shop") == 90.0
    assert value(m, "pgwarden_verify_last_success_timestamp_seconds", target="shop") == at
    outcomes.record_job(state, finished_job(state, "verify", "shop", "failed"))
    assert value(m, "pgwarden_verify_runs_total", target="shop", result="failure") == 2
    outcomes.record_job(state, finished_job(state, "verify", "shop", "succeeded", drilled()))
    assert value(m, "pgwarden_verify_last_run_success", target="shop") == 1


def test_prune_counts_deletions(state: ServiceState) -> None:
    m = state.metrics
    outcomes.record_job(state, finished_job(state, "prune", "shop", "succeeded", pruned(2)))
    assert value(m, "pgwarden_retention_deleted_total", target="shop") == 2
    deleted_list = pruned(3, kept=1)
    outcomes.record_job(state, finished_job(state, "prune", "shop", "succeeded", deleted_list))
    assert value(m, "pgwarden_retention_deleted_total", target="shop") == 5
    dry = pruned(1, dry_run=True)
    outcomes.record_job(state, finished_job(state, "prune", "shop", "succeeded", dry))
    outcomes.record_job(state, finished_job(state, "prune", "shop", "failed"))
    assert value(m, "pgwarden_retention_deleted_total", target="shop") == 5


def test_unfinished_job_records_nothing(state: ServiceState) -> None:
    outcomes.record_job(state, Job("backup", "shop", state.config, state="running"))
    assert (
        value(state.metrics, "pgwarden_backup_runs_total", target="shop", result="success") is None
    )


# -- restore at start-up -----------------------------------------------------------------


def test_restore_gauges_from_the_catalog(workdir: Path) -> None:
    config = config_for(workdir, "shop", "app", "new")
    first = ServiceState.open(config, Metrics())
    try:
        old = add_backup(first, "shop", T0 - timedelta(days=1), size=700)
        good = add_backup(first, "shop", T0, size=900)
        add_backup(first, "shop", T0 + timedelta(hours=6), status="failed")
        add_backup(first, "shop", T0 + timedelta(hours=12), status="interrupted")
        first.catalog.record_verification(
            old, started_at=T0, finished_at=T0 + timedelta(minutes=5), status="passed"
        )
        first.catalog.record_verification(
            good,
            started_at=T0 + timedelta(hours=1),
            finished_at=T0 + timedelta(hours=1, minutes=3),
            status="failed",
        )
        add_backup(first, "app", T0, size=100)
        add_backup(first, "app", T0 + timedelta(hours=1), status="interrupted")
        add_backup(first, "gone", T0)  # a target no longer configured
    finally:
        first.close()

    restarted = ServiceState.open(config, Metrics())
    try:
        outcomes.restore_gauges(restarted)
        m = restarted.metrics
    finally:
        restarted.close()
    good_finish = (T0 + timedelta(minutes=2)).timestamp()
    assert value(m, "pgwarden_backup_last_success_timestamp_seconds", target="shop") == good_finish
    assert value(m, "pgwarden_backup_last_size_bytes", target="shop") == 900
    assert value(m, "pgwarden_backup_last_duration_seconds", target="shop") == 120.0
    # the newest decided attempt failed; the interrupted one after it is neither
    assert value(m, "pgwarden_backup_last_run_success", target="shop") == 0
    interrupted_end = (T0 + timedelta(hours=12, minutes=2)).timestamp()
    assert (
        value(m, "pgwarden_backup_last_attempt_timestamp_seconds", target="shop") == interrupted_end
    )
    assert value(m, "pgwarden_verify_last_run_success", target="shop") == 0
    passed_at = (T0 + timedelta(minutes=5)).timestamp()
    assert value(m, "pgwarden_verify_last_success_timestamp_seconds", target="shop") == passed_at
    assert value(m, "pgwarden_verify_last_duration_seconds", target="shop") == 180.0
    assert value(m, "pgwarden_backups", target="shop", state="complete") == 2
    assert value(m, "pgwarden_backups", target="shop", state="failed") == 1
    # a stop interrupting app's backup does not make it look failed after the restart
    assert value(m, "pgwarden_backup_last_run_success", target="app") == 1
    # counters start at 0 for every configured target; nothing for an unknown one
    for target in ("shop", "app", "new"):
        for result in ("success", "failure", "cancelled"):
            assert value(m, "pgwarden_backup_runs_total", target=target, result=result) == 0
            assert value(m, "pgwarden_verify_runs_total", target=target, result=result) == 0
        assert value(m, "pgwarden_retention_deleted_total", target=target) == 0
    assert value(m, "pgwarden_backup_last_success_timestamp_seconds", target="new") is None
    assert value(m, "pgwarden_backups", target="new", state="complete") == 0
    assert value(m, "pgwarden_backup_last_success_timestamp_seconds", target="gone") is None


def test_a_restart_restores_what_the_jobs_had_set(workdir: Path) -> None:
    """The values an alert reads are the same before and after a restart."""
    config = config_for(workdir, "shop")
    first = ServiceState.open(config, Metrics())
    try:
        backup_id = add_backup(first, "shop", T0, size=321)
        result = backed_up(321, 120.0, backup_id)
        # the job ends a little after the catalog records the backup complete
        job = finished_job(first, "backup", "shop", "succeeded", result, started=T0)
        job.finished_at = T0 + timedelta(minutes=2, seconds=1)
        outcomes.record_job(first, job)
        names = (
            "pgwarden_backup_last_success_timestamp_seconds",
            "pgwarden_backup_last_run_success",
            "pgwarden_backup_last_size_bytes",
            "pgwarden_backup_last_duration_seconds",
            "pgwarden_backup_oldest_timestamp_seconds",
            "pgwarden_backup_stored_bytes",
        )
        before = {n: value(first.metrics, n, target="shop") for n in names}
    finally:
        first.close()
    second = ServiceState.open(config, Metrics())
    try:
        outcomes.restore_gauges(second)
        after = {n: value(second.metrics, n, target="shop") for n in names}
    finally:
        second.close()
    assert None not in before.values()
    assert after == before


def test_forget_target_drops_every_series(state: ServiceState) -> None:
    outcomes.restore_gauges(state)
    outcomes.record_job(
        state, finished_job(state, "backup", "shop", "succeeded", backed_up(1, 90.0))
    )
    state.metrics.forget_target("shop")
    text = scrape_text(state.metrics)
    assert 'target="shop"' not in text
    assert 'target="app"' in text


# -- the HTTP server ---------------------------------------------------------------------


def scrape_text(metrics: Metrics) -> str:
    with serving(metrics) as server:
        return get(f"http://127.0.0.1:{server.port}/metrics")[1]


@contextmanager
def serving(
    metrics: Metrics, healthy: Any = lambda: True, **kwargs: Any
) -> Iterator[MetricsServer]:
    server = MetricsServer(metrics, "127.0.0.1", 0, healthy, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_healthz_follows_the_health_callback_and_unknown_paths_are_404() -> None:
    alive = threading.Event()
    alive.set()
    with serving(Metrics(), alive.is_set) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert get(f"{base}/healthz")[:2] == (200, "ok\n")
        alive.clear()
        assert get(f"{base}/healthz")[:2] == (503, "unhealthy\n")
        alive.set()
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/nope")[0] == 404
        status, body, headers = get(f"{base}/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'pgwarden_build_info{version="' in body
        assert "_created" not in body
        assert server.thread.name == "metrics-http"


def bcrypt_hash(password: str, prefix: str = "2b") -> str:
    salt = bcrypt.gensalt(rounds=4, prefix=prefix.encode())
    return bcrypt.hashpw(password.encode(), salt).decode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_protects_every_path() -> None:
    auth = BasicAuth({"prometheus": bcrypt_hash("scrape-me")})
    with serving(Metrics(), auth=auth) as server:
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/metrics", "/healthz"):
            status, _body, headers = get(base + path)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith('Basic realm="pgwarden"')
            assert get(base + path, basic("prometheus", "wrong"))[0] == 401
            assert get(base + path, basic("other", "scrape-me"))[0] == 401
            assert get(base + path, {"Authorization": "Basic !!!"})[0] == 401
            assert get(base + path, {"Authorization": "Bearer x"})[0] == 401
            assert get(base + path, basic("prometheus", "scrape-me"))[0] == 200
        # the remembered header is the whole one: a wrong password right after still fails
        assert get(base + "/metrics", basic("prometheus", "scrape-mf"))[0] == 401


def test_basic_auth_refuses_hashes_it_cannot_verify() -> None:
    for bad in ("$6$salt$hash", "plaintext", "$y$j9T$salt$hash", "$2b$"):
        with pytest.raises(ValueError, match="bcrypt"):
            BasicAuth({"u": bad})
    BasicAuth(
        {"u": BCRYPT, "v": bcrypt_hash("pw", "2a"), "w": bcrypt_hash("pw").replace("$2b$", "$2y$")}
    )


def self_signed(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_with_basic_auth(workdir: Path) -> None:
    cert, key = self_signed(workdir)
    auth = BasicAuth({"prometheus": bcrypt_hash("pw")})
    context = ssl.create_default_context(cafile=str(cert))
    with serving(Metrics(), tls=tls_context(cert, key), auth=auth) as server:
        url = f"https://127.0.0.1:{server.port}/metrics"
        status, body, _ = get(url, basic("prometheus", "pw"), context=context)
        assert status == 200
        assert "pgwarden_build_info" in body
        assert get(url, context=context)[0] == 401
        # plain HTTP gets no answer; an untrusting client refuses the certificate
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context())
        # the server lived through both
        assert get(url, basic("prometheus", "pw"), context=context)[0] == 200


def test_from_config_builds_tls_and_auth_or_names_the_bad_key(workdir: Path) -> None:
    cert, key = self_signed(workdir)
    good = config_for(
        workdir,
        "shop",
        metrics={
            "listen": "127.0.0.1:0",
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "basic_auth_user": "prometheus",
            "basic_auth_password_hash": bcrypt_hash("pw"),
        },
    )
    server = MetricsServer.from_config(Metrics(), good, lambda: True)
    server.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{server.port}/healthz"
        assert get(url, basic("prometheus", "pw"), context=context)[0] == 200
    finally:
        server.stop()
    with pytest.raises(
        ConfigError, match=r"metrics\.basic_auth_password_hash: SHA-crypt .*htpasswd -nBC"
    ):
        config_for(
            workdir,
            "shop",
            metrics={"basic_auth_user": "p", "basic_auth_password_hash": "$6$salt$hash"},
        )
    missing = config_for(
        workdir,
        "shop",
        metrics={
            "listen": "127.0.0.1:0",
            "tls_cert_file": str(workdir / "no.crt"),
            "tls_key_file": str(key),
        },
    )
    with pytest.raises(ConfigError, match=r"metrics\.tls_cert_file: cannot load"):
        MetricsServer.from_config(Metrics(), missing, lambda: True)


def test_exposure_warnings() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("")
    assert not is_loopback("192.0.2.10")
    auth = BasicAuth({"p": bcrypt_hash("pw")})
    cases = [
        ("127.0.0.1", None, None),
        ("0.0.0.0", None, "without basic auth"),
        ("0.0.0.0", auth, "in clear text"),
        ("::1", None, None),
    ]
    for host, given_auth, expected in cases:
        with capture_logs() as logs:
            server = MetricsServer(Metrics(), host, 0, lambda: True, auth=given_auth)
        server.start()
        server.stop()
        warnings = [e for e in logs if e["log_level"] == "warning"]
        if expected is None:
            assert warnings == [], host
        else:
            assert len(warnings) == 1, (host, logs)
            assert expected in warnings[0]["event"]

"""Off-site operations (issue 15, item 5): the ``pgwarden_offsite_*`` metrics from the off-site
job's typed outcome and from the catalog (restored at start-up), ``pgwarden check``'s off-site
lines against a real S3 endpoint, and the destinations in ``ctl status``.

S3 is a real ``moto_server`` process on loopback (:mod:`tests.s3server`); PostgreSQL the
embedded server; the daemon a real ``pgwarden run``.  Nothing is patched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgwarden.backup.offsite import CopyResult, UploadOutcome
from pgwarden.catalog.offsite import CopyState, record_copy
from pgwarden.catalog.offsite_summary import destination_summaries
from pgwarden.commands.check_offsite import (
    OffsiteChecks,
    copy_checks,
    credentials_check,
    merge_offsite,
    run_offsite_checks,
    versioning_check,
)
from pgwarden.config import Config
from pgwarden.control import render
from pgwarden.control.client import ControlClient
from pgwarden.metrics import Metrics
from pgwarden.monitor.verdicts import CheckResult
from pgwarden.retention.remote import RemoteInventory, RemotePruneOutcome
from pgwarden.service import outcomes
from pgwarden.service.offsite_job import OffsiteJobOutcome
from pgwarden.service.state import ServiceState
from tests.helpers import daemon_config_text, make_config
from tests.pgservers import PgServer, free_port
from tests.s3server import KEY_ID, KEY_ID_ENV, REGION, SECRET, SECRET_ENV, S3Server
from tests.test_metrics import T0, add_backup, finished_job, value
from tests.test_metrics_scrape import (
    METRIC_RE,
    dashboard_queries,
    get,
    pgwarden_run,
    promtool_check_metrics,
    rule_metrics,
    sample,
    scraped_names,
    wait_started,
)

NOWHERE_S3 = "http://127.0.0.1:1"  # never connected to: the recorder tests need no S3
UNSET_ENV = "PGWARDEN_TEST_OFFSITE_UNSET_KEY"


def offsite_doc(name: str, bucket: str, endpoint: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": REGION,
        "addressing_style": "path",
        "access_key_id_env": KEY_ID_ENV,
        "secret_access_key_env": SECRET_ENV,
        "timeout": 10,
        "retries": 1,
        **changes,
    }


def offsite_toml(doc: dict[str, Any]) -> str:
    lines = ["", "[[offsite]]"]
    for key, item in doc.items():
        lines.append(f"{key} = {json.dumps(item)}")
    return "\n".join(lines) + "\n"


def two_destinations(workdir: Path) -> Config:
    targets = [{"name": n, "dsn": f"postgresql://postgres@127.0.0.1:1/{n}"} for n in ("shop",)]
    docs = [offsite_doc(n, f"bucket-{n}", NOWHERE_S3) for n in ("b2", "r2")]
    return make_config(workdir, targets, offsite=docs)


def copy(backup_id: str, destination: str, ok: bool, size: int = 0) -> CopyResult:
    return CopyResult(
        backup_id=backup_id,
        target="shop",
        destination=destination,
        key=f"shop/{backup_id}.dump",
        ok=ok,
        size_bytes=size if ok else 0,
        object_sha256="0" * 64 if ok else None,
        encrypted=False,
        duration_s=1.0,
        error=None if ok else "connection reset",
    )


# -- the recorder, from typed outcomes and the catalog ---------------------------------------


def test_offsite_job_sets_metrics_and_a_restart_restores_them(workdir: Path) -> None:
    state = ServiceState.open(two_destinations(workdir), Metrics())
    try:
        outcomes.restore_gauges(state)
        old = add_backup(state, "shop", T0 - timedelta(days=1), size=700)
        new = add_backup(state, "shop", T0, size=900)
        uploaded = T0 + timedelta(minutes=5)
        for backup_id, size in ((old, 700), (new, 900)):
            record_copy(
                state.catalog,
                backup_id=backup_id,
                destination="b2",
                key=f"shop/{backup_id}.dump",
                state=CopyState.CONFIRMED,
                size_bytes=size,
                uploaded_at=uploaded if backup_id == new else T0 - timedelta(days=1),
            )
        record_copy(
            state.catalog,
            backup_id=new,
            destination="r2",
            key=f"shop/{new}.dump",
            state=CopyState.FAILED,
            error="r2: upload failed: connection reset",
        )
        inventory = RemoteInventory("b2", "shop", 2, 1700 + 2 * 512, T0 - timedelta(days=1), T0)
        outcome = OffsiteJobOutcome(
            "shop",
            UploadOutcome("shop", (copy(new, "b2", True, 900), copy(new, "r2", False))),
            (RemotePruneOutcome("b2", "shop", (), (old, new), (), inventory),),
        )
        outcomes.record_job(state, finished_job(state, "offsite", "shop", "failed", outcome))
        m = state.metrics

        def v(name: str, destination: str) -> float | None:
            return value(m, f"pgwarden_offsite_{name}", target="shop", destination=destination)

        assert v("upload_bytes_total", "b2") == 900
        assert v("upload_failures_total", "b2") == 0
        assert v("upload_failures_total", "r2") == 1
        assert v("upload_last_run_success", "b2") == 1
        assert v("upload_last_run_success", "r2") == 0
        assert v("last_upload_timestamp_seconds", "b2") == uploaded.timestamp()
        assert v("last_upload_timestamp_seconds", "r2") is None  # never confirmed there
        # b2: the bucket's inventory (manifests included); r2: the catalog (no copy)
        assert v("objects", "b2") == 2
        assert v("stored_bytes", "b2") == 1700 + 1024
        assert v("oldest_copy_timestamp_seconds", "b2") == (T0 - timedelta(days=1)).timestamp()
        assert v("newest_copy_timestamp_seconds", "b2") == T0.timestamp()
        assert v("objects", "r2") == 0
        assert v("prune_last_run_success", "b2") == 1
        assert v("prune_failures_total", "b2") == 0
        assert v("prune_failures_total", "r2") == 0  # created at 0: increase() sees the first

        # a remote prune that could not delete
        failed_prune = OffsiteJobOutcome(
            "shop",
            UploadOutcome("shop", ()),
            (RemotePruneOutcome("b2", "shop", (), (), ("b2: AccessDenied",), inventory),),
        )
        outcomes.record_job(state, finished_job(state, "offsite", "shop", "failed", failed_prune))
        assert v("prune_failures_total", "b2") == 1
        assert v("prune_last_run_success", "b2") == 0
        assert v("upload_last_run_success", "b2") == 1  # reached, nothing was pending

        # a restart: the history gauges come back from the catalog, no alert fires
        restarted = ServiceState(state.config, state.catalog, state.storage, Metrics())
        outcomes.restore_gauges(restarted)
        m = restarted.metrics
        assert v("last_upload_timestamp_seconds", "b2") == uploaded.timestamp()
        assert v("upload_last_run_success", "b2") == 1
        assert v("upload_last_run_success", "r2") == 0  # its newest attempt failed
        assert v("objects", "b2") == 2  # from the catalog: confirmed copies
        assert v("stored_bytes", "b2") == 1600  # objects only, until the next inventory
        assert v("newest_copy_timestamp_seconds", "b2") == T0.timestamp()
        assert v("upload_failures_total", "r2") == 0
        assert v("prune_last_run_success", "b2") is None  # not in the catalog
    finally:
        state.close()


def test_a_failed_job_without_outcome_counts_every_destination(workdir: Path) -> None:
    state = ServiceState.open(two_destinations(workdir), Metrics())
    try:
        outcomes.restore_gauges(state)
        outcomes.record_job(state, finished_job(state, "offsite", "shop", "failed"))
        for destination in ("b2", "r2"):
            labels = {"target": "shop", "destination": destination}
            m = state.metrics
            assert value(m, "pgwarden_offsite_upload_failures_total", **labels) == 1
            assert value(m, "pgwarden_offsite_upload_last_run_success", **labels) == 0
        # a cancelled run: what it confirmed counts, what it left unfinished is no failure
        backup = add_backup(state, "shop", T0)
        cancelled = OffsiteJobOutcome(
            "shop",
            UploadOutcome("shop", (copy(backup, "b2", True, 300), copy(backup, "r2", False))),
        )
        outcomes.record_job(state, finished_job(state, "offsite", "shop", "cancelled", cancelled))
        m = state.metrics
        b2 = {"target": "shop", "destination": "b2"}
        r2 = {"target": "shop", "destination": "r2"}
        assert value(m, "pgwarden_offsite_upload_bytes_total", **b2) == 300
        assert value(m, "pgwarden_offsite_upload_failures_total", **r2) == 1  # as before
        assert value(m, "pgwarden_offsite_upload_last_run_success", **b2) == 0  # as before
        # a target removed by a reload loses its off-site series
        state.metrics.forget_target("shop")
        assert state.metrics.offsite.pairs() == set()
    finally:
        state.close()


def test_summaries_see_failures_after_deletions_and_successes(workdir: Path) -> None:
    """The newest attempt decides "failing"; a remote prune's deletions are not attempts."""
    state = ServiceState.open(two_destinations(workdir), Metrics())
    try:
        ids = [add_backup(state, "shop", T0 + timedelta(hours=h)) for h in range(3)]

        def put(backup_id: str, copy_state: CopyState, error: str | None = None) -> None:
            record_copy(
                state.catalog,
                backup_id=backup_id,
                destination="b2",
                key=backup_id,
                state=copy_state,
                size_bytes=10,
                uploaded_at=T0 if copy_state != CopyState.FAILED else None,
                error=error,
            )

        put(ids[0], CopyState.FAILED, "b2: timeout")
        put(ids[0], CopyState.CONFIRMED)  # retried: fine
        put(ids[2], CopyState.FAILED, "b2: SlowDown")
        put(ids[1], CopyState.CONFIRMED)
        put(ids[1], CopyState.DELETED)  # the prune after the uploads
        (summary,) = destination_summaries(state.catalog, [("shop", "b2")])
        assert summary.failing and summary.last_error == "b2: SlowDown"
        assert summary.failed_backup == ids[2]
        assert summary.copies == 1 and summary.stored_bytes == 10
        put(ids[2], CopyState.CONFIRMED)
        (summary,) = destination_summaries(state.catalog, [("shop", "b2")])
        assert not summary.failing and summary.last_error is None and summary.copies == 2
        (empty,) = destination_summaries(state.catalog, [("shop", "r2")])
        assert empty.copies == 0 and empty.last_upload is None and not empty.failing
    finally:
        state.close()


# -- check items (pure parts) -----------------------------------------------------------------


def test_copy_age_and_versioning_items(workdir: Path) -> None:
    state = ServiceState.open(two_destinations(workdir), Metrics())
    try:
        backup = add_backup(state, "shop", T0)
        record_copy(
            state.catalog,
            backup_id=backup,
            destination="b2",
            key="k",
            state=CopyState.CONFIRMED,
            size_bytes=1,
            uploaded_at=T0,
        )
        (summary,) = destination_summaries(state.catalog, [("shop", "b2")])
    finally:
        state.close()
    (fresh,) = copy_checks(summary, T0 + timedelta(hours=25))
    assert fresh.status == "pass" and "25 h ago" in fresh.detail, fresh
    (stale,) = copy_checks(summary, T0 + timedelta(hours=27))
    assert stale.status == "warn" and "27 h ago" in stale.detail, stale
    failing = replace(
        summary,
        failing=True,
        last_error="unreachable: b2: connect timeout",
        last_error_at=T0 + timedelta(hours=24),
        failed_backup="0123456789abcdef",
    )
    newest, failed = copy_checks(failing, T0 + timedelta(hours=25))
    assert newest.status == "pass" and failed.status == "fail", failed
    assert failed.title == "Last off-site upload to" and failed.subject == "b2"
    assert "(01234567, 2026-11-21T03:00+00:00) failed: unreachable: b2" in failed.detail
    enabled = versioning_check("b2", "Enabled")
    assert enabled.status == "warn"
    assert "deletes every version of the objects it created" in enabled.detail
    assert versioning_check("b2", None).status == "pass"
    # grouping: destinations after the configuration items, copies after their target
    results = [
        CheckResult("credentials", "pass", "x"),
        CheckResult("backup.automation", "pass", "x", "shop"),
        CheckResult("storage", "pass", "x", "shop"),
    ]
    merged = merge_offsite(results, OffsiteChecks((enabled,), {"shop": (stale,)}))
    assert [r.check for r in merged] == [
        "credentials",
        "offsite.versioning",
        "backup.automation",
        "storage",
        "offsite.newest_copy",
    ]


# -- pgwarden check against a real S3 endpoint -----------------------------------------------


def run_check(config_path: Path) -> tuple[int, str, dict[str, Any]]:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgwarden.cli", "check", "-c", str(config_path), *extra],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={k: v for k, v in os.environ.items() if k != UNSET_ENV},
        )

    text, doc = run(), run("--json")
    return doc.returncode, text.stdout + text.stderr, json.loads(doc.stdout)


def test_check_shows_a_good_bucket_a_missing_one_and_missing_keys(
    pg18: PgServer, workdir: Path, s3_server: S3Server
) -> None:
    if not s3_server.is_running():
        s3_server.restart()
    good = s3_server.unique_bucket("good", versioned=True)
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    pg18.create_database("offsite_check")
    text = daemon_config_text(workdir, pg18, "offsite_check", free_port())
    text += offsite_toml(offsite_doc("good", good, s3_server.endpoint, prefix="vps1/"))
    text += offsite_toml(offsite_doc("gone", missing, s3_server.endpoint))
    text += offsite_toml(
        offsite_doc("nokeys", good, s3_server.endpoint, access_key_id_env=UNSET_ENV)
    )
    path = workdir / "pgwarden.toml"
    path.write_text(text)
    path.chmod(0o600)
    try:
        code, human, doc = run_check(path)
    finally:
        pg18.drop_database("offsite_check")
    assert code == 1, human  # a missing bucket and missing keys fail the check
    items = {(r["check"], r["subject"]): r for r in doc["results"] if r["check"].startswith("off")}

    def item(check: str, subject: str) -> tuple[str, str]:
        found = items[(f"offsite.{check}", subject)]
        return found["status"], found["detail"]

    assert item("credentials", "good") == (
        "pass",
        f"access_key_id from ${KEY_ID_ENV}; secret_access_key from ${SECRET_ENV}",
    )
    status, detail = item("reachable", "good")
    assert status == "pass" and f"s3://{good}/vps1/" in detail, detail
    status, detail = item("versioning", "good")
    assert status == "warn" and "every version" in detail, detail
    status, detail = item("reachable", "gone")
    assert status == "fail" and missing in detail, detail
    assert "NoSuchBucket" in detail or "does not exist" in detail, detail
    status, detail = item("credentials", "nokeys")
    assert status == "fail" and UNSET_ENV in detail and "not set" in detail, detail
    assert item("reachable", "nokeys")[0] == "unknown"
    # each target line names the destination; no copy yet is a warning, not a failure
    status, detail = item("newest_copy", "good")
    assert status == "warn" and "no copy confirmed on good yet" in detail, detail
    # the human report has the same lines, and never a key
    assert "Off-site write test on good: s3://" in human, human
    assert f"environment variable {UNSET_ENV} is not set" in human, human
    for secret in (KEY_ID, SECRET):
        assert secret not in human and secret not in json.dumps(doc)


# -- the daemon: /metrics after an off-site job, ctl status, a restart ------------------------


def wait_sample(port: int, name: str, labels: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while True:
        scrape = get(f"http://127.0.0.1:{port}/metrics")[1]
        if sample(scrape, name, labels) is not None:
            return scrape
        assert time.monotonic() < deadline, scrape
        time.sleep(0.2)


OFFSITE_HISTORY = (
    "pgwarden_offsite_last_upload_timestamp_seconds",
    "pgwarden_offsite_upload_last_run_success",
    "pgwarden_offsite_objects",
    "pgwarden_offsite_newest_copy_timestamp_seconds",
    "pgwarden_offsite_oldest_copy_timestamp_seconds",
)


def test_daemon_exports_offsite_metrics_and_status_after_a_backup(
    pg18: PgServer, workdir: Path, s3_server: S3Server
) -> None:
    if not s3_server.is_running():
        s3_server.restart()
    bucket = s3_server.unique_bucket("daemon")
    db = "offsite_daemon"
    pg18.create_database(db)
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", db)
    port = free_port()
    text = daemon_config_text(workdir, pg18, db, port)
    text += offsite_toml(offsite_doc("moto", bucket, s3_server.endpoint))
    labels = f'destination="moto",target="{db}"'
    try:
        with pgwarden_run(workdir, text) as proc:
            wait_started(proc, workdir)
            client = ControlClient(workdir / "ctl.sock")
            client.call("backup", {"target": db})  # the off-site run follows it
            scrape = wait_sample(port, "pgwarden_offsite_newest_copy_timestamp_seconds", labels)
            status = client.call("status")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        before = {name: sample(scrape, name, labels) for name in OFFSITE_HISTORY}
        with pgwarden_run(workdir, text) as proc:
            wait_started(proc, workdir)
            restarted = get(f"http://127.0.0.1:{port}/metrics")[1]
            after = {name: sample(restarted, name, labels) for name in OFFSITE_HISTORY}
    finally:
        pg18.drop_database(db)
    promtool_check_metrics(scrape)
    promtool_check_metrics(restarted)
    assert sample(scrape, "pgwarden_offsite_objects", labels) == 1
    assert (sample(scrape, "pgwarden_offsite_upload_bytes_total", labels) or 0) > 0
    assert sample(scrape, "pgwarden_offsite_upload_failures_total", labels) == 0
    assert sample(scrape, "pgwarden_offsite_upload_last_run_success", labels) == 1
    assert sample(scrape, "pgwarden_offsite_prune_last_run_success", labels) == 1
    stored = sample(scrape, "pgwarden_offsite_stored_bytes", labels) or 0
    assert stored > (sample(scrape, "pgwarden_offsite_upload_bytes_total", labels) or 0)
    # every off-site metric the rules and the dashboard read is exported
    used = set(METRIC_RE.findall(" ".join(dashboard_queries()))) | rule_metrics()
    offsite_used = {n for n in used if n.startswith("pgwarden_offsite_")}
    assert len(offsite_used) >= 6
    assert offsite_used <= scraped_names(scrape), offsite_used - scraped_names(scrape)
    # a restart keeps what the alerts read (the newest upload, the last run's success)
    assert None not in before.values(), before
    assert after == before
    # ctl status: one row per target and destination
    (row,) = status["offsite"]
    assert (row["target"], row["destination"], row["copies"]) == (db, "moto", 1)
    assert row["failing"] is False and row["last_upload"] is not None
    shown = render.status(status)
    assert "OFF-SITE" in shown and "moto" in shown, shown


def test_status_render_shows_a_failing_destination() -> None:
    when = datetime(2026, 12, 1, 3, 0, tzinfo=UTC).isoformat()
    shown = render.offsite(
        [
            {
                "target": "shop",
                "destination": "b2",
                "copies": 0,
                "stored_bytes": 0,
                "last_upload": None,
                "newest_copy": None,
                "failing": True,
                "last_error": "unreachable: b2: connect timeout",
                "last_error_at": when,
            }
        ]
    )
    assert "2026-12-01 03:00 UTC: unreachable: b2: connect timeout" in shown, shown
    assert shown.splitlines()[1].split()[:4] == ["shop", "b2", "-", "0"], shown


@pytest.fixture(autouse=True)
def _no_unset_key() -> None:
    assert UNSET_ENV not in os.environ


def test_check_of_one_target_probes_only_its_destinations(
    workdir: Path, s3_server: S3Server
) -> None:
    if not s3_server.is_running():
        s3_server.restart()
    bucket = s3_server.unique_bucket("mine")
    targets = [
        {"name": "shop", "dsn": "postgresql://postgres@127.0.0.1:1/shop", "offsite": ["mine"]},
        {"name": "blog", "dsn": "postgresql://postgres@127.0.0.1:1/blog", "offsite": ["theirs"]},
    ]
    docs = [
        offsite_doc("mine", bucket, s3_server.endpoint),
        offsite_doc("theirs", "never-probed", NOWHERE_S3),
    ]
    config = make_config(workdir, targets, offsite=docs)
    one = run_offsite_checks(config, "shop")
    assert {(r.check, r.subject, r.status) for r in one.destinations} == {
        ("offsite.credentials", "mine", "pass"),
        ("offsite.reachable", "mine", "pass"),
        ("offsite.versioning", "mine", "pass"),
    }
    assert set(one.targets) == {"shop"}
    (newest,) = one.targets["shop"]
    assert newest.status == "warn" and newest.subject == "mine"
    everything = run_offsite_checks(config, None)
    subjects = {r.subject for r in everything.destinations}
    assert subjects == {"mine", "theirs"}
    assert set(everything.targets) == {"shop", "blog"}


def test_inline_keys_are_a_warning_and_never_shown(workdir: Path) -> None:
    targets = [{"name": "shop", "dsn": "postgresql://postgres@127.0.0.1:1/shop"}]
    doc = offsite_doc("inline", "bucket-inline", NOWHERE_S3)
    del doc["access_key_id_env"], doc["secret_access_key_env"]
    doc |= {"access_key_id": "AKIAINLINEKEY0000001", "secret_access_key": "inline-secret-0123"}
    config = make_config(
        workdir, targets, offsite=[doc], daemon={"allow_plaintext_passwords": True}
    )
    item = credentials_check(config.offsite[0])
    assert item.status == "warn", item
    assert "move it to *_env, *_file or *_credential" in item.detail
    assert "inline-secret-0123" not in item.detail and "AKIAINLINEKEY" not in item.detail

"""The daemon tells its [[notify]] destinations: a backup's start and success with one ``rid``,
a failed backup's ``fail`` with the error redacted, its own start and stop; and a receiver
that does not answer delays no job."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from pgwarden.config.kinds import JobKind
from pgwarden.service.daemon import Daemon
from pgwarden.service.jobs import Job
from tests.helpers import daemon_config_text, write_config
from tests.notify_receiver import Receiver, running_receiver
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db

PASSWORD = "Pa55word-in-the-dsn"


def _secret(workdir: Path, name: str, value: str) -> Path:
    path = workdir / name
    path.write_text(value)
    path.chmod(0o600)
    return path


def _config(workdir: Path, pg: PgServer, db: str, rx: Receiver, *, broken: bool) -> Path:
    text = daemon_config_text(workdir, pg, db, free_port())
    text = text.replace("[daemon]\n", "[daemon]\nallow_plaintext_passwords = true\n", 1)
    text = text.replace("[monitor]\ninterval = 1\n", "[monitor]\nenabled = false\n", 1)
    if broken:
        text += f"""
[[targets]]
name = "broken"
dsn = "postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/no_such_database"
bin_dir = "{pg.bin_dir}"
  [targets.backup]
  retries = 0
"""
    hc = _secret(workdir, "hc.url", f"{rx.url}/hc/check-uuid")
    hook = _secret(workdir, "hook.url", f"{rx.url}/hook")
    text += f"""
[[notify]]
name = "hc"
kind = "healthchecks"
url_file = "{hc}"
events = ["backup.start", "backup.success", "backup.failure"]

[[notify]]
name = "hook"
kind = "webhook"
url_file = "{hook}"
events = ["backup.failure", "daemon.start", "daemon.stop"]
"""
    return write_config(workdir, text)


def _start(path: Path) -> tuple[Daemon, threading.Thread, dict[str, int]]:
    daemon = Daemon(path, install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
    thread.start()
    assert daemon.started.wait(60)
    return daemon, thread, box


def _backup(daemon: Daemon, target: str) -> Job:
    assert daemon.service is not None
    job, _ = daemon.service.submit(JobKind.BACKUP, target)
    seen = 0
    while not job.finished:
        seen = job.wait_change(seen, 60)
    return job


def test_backup_events_reach_healthchecks_and_the_webhook(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "notified", rows=20, vectors=False)
    with running_receiver() as rx:
        daemon, thread, box = _start(_config(workdir, pg18, "notified", rx, broken=True))
        try:
            [started] = rx.wait_for(1)  # daemon.start, to the webhook only
            good = _backup(daemon, "notified")
            assert good.state == "succeeded", good.error
            rx.wait_for(3)
            bad = _backup(daemon, "broken")
            assert bad.state == "failed"
            rx.wait_for(6)  # start + fail to hc, failure to the webhook
        finally:
            daemon.request_stop()
            thread.join(60)
        assert box.get("code") == 0
        requests = rx.wait_for(7)  # daemon.stop, flushed at shutdown
    assert json.loads(started.body)["event"] == "daemon.start"
    hc = [r for r in requests if r.path.startswith("/hc/")]
    assert [r.path for r in hc] == [
        "/hc/check-uuid/start",
        "/hc/check-uuid",
        "/hc/check-uuid/start",
        "/hc/check-uuid/fail",
    ]
    assert hc[0].query["rid"] == hc[1].query["rid"]
    assert hc[2].query["rid"] == hc[3].query["rid"] != hc[0].query["rid"]
    assert b"no_such_database" in hc[3].body and PASSWORD.encode() not in hc[3].body
    hooks = [json.loads(r.body) for r in requests if r.path == "/hook"]
    assert [h["event"] for h in hooks] == ["daemon.start", "backup.failure", "daemon.stop"]
    failure = hooks[1]
    assert failure["target"] == "broken" and failure["database"] == "no_such_database"
    assert "no_such_database" in failure["error"]
    assert all(PASSWORD not in r.body.decode() for r in requests)
    registry = daemon.metrics.registry
    assert (
        registry.get_sample_value(
            "pgwarden_notifications_total", {"destination": "hc", "result": "sent"}
        )
        == 4
    )


def test_a_silent_receiver_delays_no_backup(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "unheard", rows=20, vectors=False)
    with running_receiver() as rx:
        rx.hold.set()  # every request waits for release() (30 s at most)
        daemon, thread, box = _start(_config(workdir, pg18, "unheard", rx, broken=False))
        try:
            job = _backup(daemon, "unheard")
            assert job.state == "succeeded", job.error
            # the backup ended while the receiver had not answered a single request
            assert not rx.answered
            rx.wait_for(1)  # the start ping did go out, and is still waiting
        finally:
            daemon.request_stop()
            thread.join(60)
            rx.release()
        assert box.get("code") == 0


def test_reload_rebuilds_the_destinations(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "reloaded", rows=5, vectors=False)
    with running_receiver() as rx:
        path = _config(workdir, pg18, "reloaded", rx, broken=False)
        daemon, thread, box = _start(path)
        try:
            [first] = rx.wait_for(1)  # daemon.start to /hook
            # the receiver answers before the sender counts it: wait for the count, or it may
            # land after the reload dropped the old destination's series and bring it back
            registry = daemon.metrics.registry
            deadline = time.monotonic() + 30
            while not registry.get_sample_value(
                "pgwarden_notifications_total", {"destination": "hook", "result": "sent"}
            ):
                assert time.monotonic() < deadline, "daemon.start to /hook never counted"
                time.sleep(0.05)
            other = _secret(workdir, "other.url", f"{rx.url}/other")
            text = path.read_text().replace(str(workdir / "hook.url"), str(other))
            path.write_text(text.replace('name = "hook"', 'name = "moved"'))
            assert daemon.service is not None
            daemon.request_reload()
            while not registry.get_sample_value(
                "pgwarden_config_reloads_total", {"result": "success"}
            ):
                assert thread.is_alive()
                time.sleep(0.05)
            notify = daemon.service.state.notify
            assert notify is not None
            assert [d.name for d in notify.destinations] == ["hc", "moved"]
            assert (
                registry.get_sample_value(
                    "pgwarden_notifications_total", {"destination": "hook", "result": "sent"}
                )
                is None
            )
        finally:
            daemon.request_stop()
            thread.join(60)
        assert box.get("code") == 0
        requests = rx.wait_for(2)
    assert first.path == "/hook" and json.loads(first.body)["event"] == "daemon.start"
    assert requests[1].path == "/other" and json.loads(requests[1].body)["event"] == "daemon.stop"

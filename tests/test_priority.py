"""A backup must not starve production (issue 19, item 2): low CPU and I/O priority.

Observed from outside, as an operator would: ``/proc/<pid>/stat`` (nice) and util-linux's
``ionice -p`` for the live ``pg_dump`` and pgwarden's own threads of the run, while another
session holds ``ACCESS EXCLUSIVE`` on a table so that ``pg_dump`` waits and can be looked at.
A scheduled run is low (``priority = "auto"``), a manual one normal, ``--priority low`` lowers a
manual one; a tool's own session (autogroup) is as nice as the tool, or the nice would count for
nothing against the server's; the daemon's own threads (job workers, metrics HTTP) keep theirs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from pgwarden.cli import main
from pgwarden.config import parse
from pgwarden.config.kinds import JobKind
from pgwarden.errors import ConfigError
from pgwarden.pg.priority import Priority, resolve
from pgwarden.service.fanout import FanOutOutcome
from pgwarden.service.jobkinds import follow_ups
from pgwarden.service.jobs import Job, JobState, Trigger
from tests.helpers import daemon_config_text, finish_job, job_service, target_env, write_config
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db
from tests.test_backup_faults import table_locked

LOW_IO = "best-effort: prio 7"


def _nice(pid: int) -> int:
    """Field 19 of ``/proc/<pid>/stat`` (a thread id works too)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _autogroup_nice(pid: int) -> int:
    """The nice of the autogroup ``pid`` is in (its session's: tools start one of their own)."""
    with open(f"/proc/{pid}/autogroup") as autogroup:
        return int(autogroup.read().split()[-1])


def _ionice(pid: int) -> str:
    return subprocess.run(
        ["ionice", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _pg_dump(timeout: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.name() == "pg_dump":
                    return child
        time.sleep(0.05)
    raise AssertionError("pg_dump never started")


def _tools() -> list[psutil.Process]:
    """The pg_dump, pg_restore and psql under this process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() in ("pg_dump", "pg_restore", "psql"):
                found.append(child)
    return found


def _threads() -> dict[str, int]:
    """This process's Python threads: name -> kernel thread id."""
    return {t.name: t.native_id for t in threading.enumerate() if t.native_id is not None}


def test_a_scheduled_backup_runs_low_and_the_daemon_threads_keep_their_priority(
    pg18: PgServer, workdir: Path
) -> None:
    db = "prio_scheduled"
    make_sample_db(pg18, db, rows=50, vectors=False)
    env = target_env(workdir, pg18, db)
    mine = _ionice(os.getpid())
    # threads other tests of this session left running are neither the daemon's nor the run's
    before = set(_threads().values())
    with job_service(env, metrics_http=True) as service:
        with table_locked(pg18, db, "documents"):
            job, _ = service.submit(JobKind.BACKUP, db, trigger=Trigger.SCHEDULED)
            dump = _pg_dump()
            assert _nice(dump.pid) == 10
            assert _ionice(dump.pid) == LOW_IO
            assert _autogroup_nice(dump.pid) == 10  # nice counts within an autogroup only
            everyone = _threads()
            threads = {n: tid for n, tid in everyone.items() if tid not in before}
            daemon_threads = {n for n in threads if n.startswith("job-")}
            daemon_threads |= {"metrics-http", "MainThread"}
            for name in daemon_threads:
                assert (_nice(everyone[name]), _ionice(everyone[name])) == (0, mine), name
            # the run's own: backup-low, pg_dump's stderr and watch, the writer, the read-back
            run_threads = set(threads) - daemon_threads
            assert {"backup-low", "dump-writer_0"} <= run_threads, threads
            for name in run_threads:
                assert (_nice(threads[name]), _ionice(threads[name])) == (10, LOW_IO), name
            for tool in _tools():
                assert (_nice(tool.pid), _ionice(tool.pid)) == (10, LOW_IO), tool
                assert _autogroup_nice(tool.pid) == 10, tool
        finish_job(job)
        assert job.state == JobState.SUCCEEDED, job.as_dict()
        assert job.as_dict()["result"]["priority"] == "low"
        # the lowered thread ended with the run: every thread left is as it was
        left = _threads()
        assert "backup-low" not in left
        assert {n: _nice(t) for n, t in left.items()} == dict.fromkeys(left, 0)
    assert [r.tags for r in env.catalog.list_backups(db)] == [("scheduled",)]


def test_a_scheduled_drill_runs_low(pg18: PgServer, workdir: Path) -> None:
    db = "prio_drill"
    make_sample_db(pg18, db, rows=50, vectors=False)
    env = target_env(workdir, pg18, db)
    env.backup()
    with job_service(env, metrics_http=True) as service, capture_logs() as logs:
        job, _ = service.submit(JobKind.VERIFY, db, trigger=Trigger.SCHEDULED)
        finish_job(job)
    assert job.state == JobState.SUCCEEDED, job.as_dict()
    low = [e for e in logs if e["event"] == "running at low priority"]
    assert [e["thread"] for e in low] == ["drill-low"], logs
    assert low[0]["priority"] == "nice 10, io best-effort/7"


@pytest.mark.parametrize(
    ("flag", "nice", "word"), [((), 0, "normal"), (("--priority", "low"), 10, "low")]
)
def test_a_manual_backup_runs_normal_unless_asked_low(
    pg18: PgServer,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    flag: tuple[str, ...],
    nice: int,
    word: str,
) -> None:
    db = f"prio_manual_{word}"
    make_sample_db(pg18, db, rows=50, vectors=False)
    config = write_config(workdir, daemon_config_text(workdir, pg18, db, free_port()))
    codes: list[int] = []
    cli = threading.Thread(
        target=lambda: codes.append(main(["backup", "-c", str(config), db, *flag]))
    )
    with table_locked(pg18, db, "documents"):
        cli.start()
        dump = _pg_dump()
        assert _nice(dump.pid) == nice
        assert _autogroup_nice(dump.pid) == nice
        io = _ionice(dump.pid)
        assert (io == LOW_IO) == (word == "low"), io
    cli.join(60)
    assert codes == [0]
    assert f"{word} priority" in capsys.readouterr().out


def test_auto_is_low_only_for_scheduled_runs() -> None:
    assert resolve("auto", scheduled=True) is Priority.LOW
    assert resolve("auto", scheduled=False) is Priority.NORMAL
    assert resolve("low", scheduled=False) is Priority.LOW
    assert resolve("normal", scheduled=True) is Priority.NORMAL


def test_a_bad_priority_names_the_key_and_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "targets": [
            {
                "name": "app",
                "dsn": "postgresql://backup@localhost:5432/app",
                "backup": {"priority": "idle"},
            }
        ]
    }
    with pytest.raises(ConfigError) as raised:
        parse(doc, tmp_path / "pgwarden.toml")
    assert "targets[0].backup.priority: must be one of auto, low, normal (got 'idle')" in str(
        raised.value
    )
    doc["targets"][0]["backup"] = {"priority": "low"}  # type: ignore[index]
    doc["targets"][0]["verify"] = {"priority": "normal"}  # type: ignore[index]
    app = parse(doc, tmp_path / "pgwarden.toml").targets[0]
    assert (app.backup.priority, app.verify.priority) == ("low", "normal")
    doc["targets"][0]["verify"] = {"priority": 7}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"targets\[0\]\.verify\.priority: must be a string"):
        parse(doc, tmp_path / "pgwarden.toml")
    with pytest.raises(SystemExit) as exited:
        main(["backup", "-c", str(tmp_path / "x.toml"), "app", "--priority", "idle"])
    assert exited.value.code == 2
    assert "argument --priority: invalid choice: 'idle'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", [JobKind.BACKUP, JobKind.VERIFY])
def test_a_priority_asked_for_a_whole_server_run_reaches_each_database(
    tmp_path: Path, kind: JobKind
) -> None:
    doc = {"targets": [{"name": "vps", "dsn": "postgresql://backup@localhost:5432/postgres"}]}
    config = parse(doc, tmp_path / "pgwarden.toml")
    tags = {"tags": ["manual"]} if kind is JobKind.BACKUP else {}
    job = Job(kind, "vps", config, args={"priority": "low", **tags}, state=JobState.SUCCEEDED)
    job.result = FanOutOutcome(kind, "vps", ("vps/app", "vps/shop"))
    follows = follow_ups(config, job)
    assert [(f.kind, f.target, f.args.get("priority")) for f in follows] == [
        (kind, "vps/app", "low"),
        (kind, "vps/shop", "low"),
    ]
    job.args = dict(tags)  # none asked: each database's run takes its target's setting
    assert all("priority" not in f.args for f in follow_ups(config, job))

"""Which finished jobs tell what (pure: typed jobs in, events out), the healthchecks URL rules,
and a reload's new destinations taking over the metric's series."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from pgwarden.config import parse
from pgwarden.config.kinds import JobKind
from pgwarden.config.notify import NotifyConfig
from pgwarden.errors import StallError
from pgwarden.metrics.notify import NotifyMetrics
from pgwarden.notify import Dispatcher, Event
from pgwarden.notify.payload import ping_url
from pgwarden.service.jobs import Job, JobState
from pgwarden.service.notifications import job_events, run_id

CONFIG = parse(
    {
        "targets": [{"name": "app", "dsn": "postgresql://u:pw@localhost/appdb"}],
        "daemon": {"allow_plaintext_passwords": True},
    },
    Path("x"),
)


def _job(kind: JobKind, state: JobState, **fields: object) -> Job:
    job = Job(kind, "app", CONFIG, state=state)
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def test_finished_jobs_map_to_events() -> None:
    failed = _job(JobKind.BACKUP, JobState.FAILED, error="connect failed: password=pw")
    [event] = job_events(failed)
    assert (event.event, event.target, event.database) == ("backup.failure", "app", "appdb")
    assert event.error == "connect failed: password=***"
    assert event.run_id == run_id(failed) and event.job_id == failed.id
    stalled = _job(JobKind.BACKUP, JobState.FAILED, error="no progress", error_code=StallError.code)
    assert [e.event for e in job_events(stalled)] == ["backup.failure", "stalled"]
    assert [e.event for e in job_events(_job(JobKind.VERIFY, JobState.FAILED))] == [
        "verify.failure"
    ]
    assert [e.event for e in job_events(_job(JobKind.PRUNE, JobState.FAILED))] == ["prune.failure"]
    dry = _job(JobKind.PRUNE, JobState.FAILED, args={"dry_run": True})
    assert job_events(dry) == ()
    assert [e.event for e in job_events(_job(JobKind.OFFSITE, JobState.FAILED))] == [
        "offsite.failure"
    ]
    assert job_events(_job(JobKind.PRUNE, JobState.SUCCEEDED)) == ()
    assert job_events(_job(JobKind.BACKUP, JobState.CANCELLED)) == ()  # an operator stopped it


def test_ping_urls_keep_the_check_query_and_add_rid() -> None:
    base = "https://hc.example/ping/key/slug?create=1"
    assert ping_url(base, Event("backup.start", run_id="r1")) == (
        "https://hc.example/ping/key/slug/start?create=1&rid=r1"
    )
    assert ping_url(base, Event("stalled")) == "https://hc.example/ping/key/slug/fail?create=1"
    assert ping_url("https://hc.example/u/", Event("backup.success")) == "https://hc.example/u"
    assert ping_url("https://hc.example/u", Event("daemon.stop")) == "https://hc.example/u/log"


def test_reload_swaps_destinations_and_their_series() -> None:
    def notify(*names: str) -> tuple[NotifyConfig, ...]:
        tables = [{"name": n, "kind": "webhook", "url_env": "H"} for n in names]
        return parse({"notify": tables}, Path("x")).notify

    registry = CollectorRegistry()
    dispatcher = Dispatcher(notify("a", "b"), NotifyMetrics(registry))
    labels = {"destination": "a", "result": "sent"}
    assert registry.get_sample_value("pgwarden_notifications_total", labels) == 0
    dispatcher.configure(notify("b", "c"))
    assert registry.get_sample_value("pgwarden_notifications_total", labels) is None
    assert [d.name for d in dispatcher.destinations] == ["b", "c"]
    assert dispatcher.close()  # never started: nothing to flush


def test_cronitor_and_uptime_kuma_ping_styles() -> None:
    base = "https://cronitor.link/p/KEY/nightly"
    start = ping_url(base, Event("backup.start", target="app", run_id="r1"), "cronitor")
    assert start.startswith(base + "?state=run&series=r1&message=")
    fail = ping_url(base, Event("backup.failure", target="app", error="x"), "cronitor")
    assert "state=fail" in fail and "series" not in fail
    assert "state=complete" in ping_url(base, Event("backup.success"), "cronitor")
    kuma = "https://kuma.example/api/push/TOKEN"
    assert ping_url(kuma, Event("backup.success"), "uptime-kuma").startswith(
        kuma + "?status=up&msg="
    )
    assert "status=down" in ping_url(kuma, Event("stalled"), "uptime-kuma")

"""Notification delivery against a real HTTP receiver and a real SMTP server on loopback:
healthchecks pings, signed webhooks, apprise ``json://`` and ``mailto://``, retries, drops,
an unreachable or silent receiver, the metric and the status ``pgwarden check`` reads."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from prometheus_client import CollectorRegistry

from pgwarden.config.notify import NotifyConfig
from pgwarden.metrics.notify import NotifyMetrics
from pgwarden.notify import Dispatcher, Event
from pgwarden.notify.payload import SCHEMA
from pgwarden.notify.status import read_status, status_path
from tests.helpers import make_config
from tests.notify_receiver import running_receiver
from tests.pgservers import free_port

SECRET = "hmac-key-for-tests"


def _secret_file(workdir: Path, name: str, value: str) -> Path:
    path = workdir / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _dest(workdir: Path, name: str, kind: str, url: str, **extra: Any) -> NotifyConfig:
    key = "urls" if kind == "apprise" else "url"
    table = {"name": name, "kind": kind, f"{key}_file": str(_secret_file(workdir, name, url))}
    table.update(extra)
    [dest] = make_config(workdir, [], notify=[table]).notify
    return dest


def _sample(registry: CollectorRegistry, dest: str, result: str) -> float | None:
    return registry.get_sample_value(
        "pgwarden_notifications_total", {"destination": dest, "result": result}
    )


def _dispatcher(
    dests: list[NotifyConfig], workdir: Path, **kwargs: Any
) -> tuple[Dispatcher, CollectorRegistry]:
    registry = CollectorRegistry()
    (workdir / "state").mkdir(exist_ok=True)
    dispatcher = Dispatcher(
        dests, NotifyMetrics(registry), status_path(workdir / "state"), backoff=0.05, **kwargs
    )
    dispatcher.start()
    return dispatcher, registry


def test_healthchecks_pings_start_success_and_fail_with_rid(workdir: Path) -> None:
    with running_receiver() as rx:
        dest = _dest(
            workdir,
            "hc",
            "healthchecks",
            f"{rx.url}/ping/abc-uuid",
            events=["backup.start", "backup.success", "backup.failure"],
        )
        dispatcher, registry = _dispatcher([dest], workdir)
        rid = "0b6a4c6e-8d5a-4c1e-9f5e-4a0b3c2d1e0f"
        dispatcher.emit(Event("backup.start", target="app", run_id=rid))
        dispatcher.emit(Event("backup.success", target="app", run_id=rid, size_bytes=10))
        dispatcher.emit(Event("backup.failure", target="app", error="pg_dump: password=hunter2"))
        dispatcher.emit(Event("verify.failure", target="app"))  # not asked for
        start, success, fail = rx.wait_for(3)
        assert dispatcher.close()
    assert (start.path, success.path, fail.path) == (
        "/ping/abc-uuid/start",
        "/ping/abc-uuid",
        "/ping/abc-uuid/fail",
    )
    assert start.query["rid"] == success.query["rid"] == [rid]
    assert "rid" not in fail.query
    assert b"hunter2" not in fail.body and b"password=***" in fail.body
    assert len(rx.requests) == 3
    assert _sample(registry, "hc", "sent") == 3
    assert read_status(status_path(workdir / "state"))["hc"].ok


def test_webhook_is_signed_and_follows_the_schema(workdir: Path) -> None:
    with running_receiver() as rx:
        key = _secret_file(workdir, "hook.key", SECRET)
        dest = _dest(workdir, "hook", "webhook", f"{rx.url}/hook?token=t0k", secret_file=str(key))
        dispatcher, _ = _dispatcher([dest], workdir)
        dispatcher.emit(
            Event(
                "backup.failure",
                target="app",
                database="appdb",
                error="connection to postgresql://u:topsecret@db/app failed",
                duration_s=1.23456,
            )
        )
        [request] = rx.wait_for(1)
        assert dispatcher.close()
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-pgwarden-signature"] == f"sha256={expected}"
    assert request.headers["content-type"] == "application/json"
    doc = json.loads(request.body)
    assert doc["schema"] == SCHEMA == "pgwarden.notification/1"
    assert (doc["event"], doc["target"], doc["database"]) == ("backup.failure", "app", "appdb")
    assert doc["duration_s"] == 1.235 and doc["backup_id"] is None and doc["host"]
    assert "topsecret" not in request.body.decode() and "***" in doc["error"]
    assert "t0k" not in request.body.decode()
    assert set(doc) >= {"size_bytes", "time", "run_id", "message", "destination"}


def test_retries_5xx_but_not_4xx(workdir: Path) -> None:
    with running_receiver(status=[503, 429, 200]) as rx:
        dest = _dest(workdir, "hook", "webhook", f"{rx.url}/a")
        dispatcher, registry = _dispatcher([dest], workdir)
        dispatcher.emit(Event("backup.failure", target="app"))
        rx.wait_for(3)
        assert dispatcher.close()
    assert _sample(registry, "hook", "sent") == 1
    assert _sample(registry, "hook", "failed") == 0
    with running_receiver(status=[404]) as rx:
        dest = _dest(workdir, "gone", "webhook", f"{rx.url}/b", retries=3)
        dispatcher, registry = _dispatcher([dest], workdir)
        dispatcher.emit(Event("backup.failure", target="app"))
        rx.wait_for(1)
        assert dispatcher.close()
    assert len(rx.requests) == 1  # a 404 is not retried
    assert _sample(registry, "gone", "failed") == 1
    last = read_status(status_path(workdir / "state"))["gone"]
    assert not last.ok and last.error is not None and "404" in last.error


def test_unreachable_receiver_fails_without_showing_the_url(workdir: Path) -> None:
    port = free_port()  # nobody listens there
    dest = _dest(workdir, "down", "healthchecks", f"http://127.0.0.1:{port}/secret-uuid-42")
    dispatcher, registry = _dispatcher([dest], workdir)
    dispatcher.emit(Event("backup.failure", target="app"))
    assert dispatcher.close(timeout=30)
    assert _sample(registry, "down", "failed") == 1
    last = read_status(status_path(workdir / "state"))["down"]
    assert last.error is not None and "secret-uuid-42" not in last.error
    assert "secret-uuid-42" not in status_path(workdir / "state").read_text()


def test_full_queue_drops_and_a_silent_receiver_holds_up_nothing(workdir: Path) -> None:
    with running_receiver() as rx:
        rx.hold.set()  # answers nothing until released (30 s at most)
        dest = _dest(workdir, "slow", "webhook", f"{rx.url}/slow", timeout=60, retries=1)
        dispatcher, registry = _dispatcher([dest], workdir, queue_size=2)
        dispatcher.emit(Event("backup.failure", target="a"))
        rx.wait_for(1)  # the thread is stuck in that request now
        for _ in range(5):  # two fit in the queue, three are dropped
            dispatcher.emit(Event("backup.failure", target="a"))
        assert _sample(registry, "slow", "dropped") == 3
        assert not dispatcher.close(timeout=0.5)  # gives up: the receiver still holds
        assert not rx.answered  # close() returned while the receiver was still silent
        assert _sample(registry, "slow", "dropped") == 5  # the two queued, abandoned
        rx.release()


def test_apprise_json_reaches_the_receiver(workdir: Path) -> None:
    with running_receiver() as rx:
        url = f"json://127.0.0.1:{rx.port}/apprise"
        dest = _dest(workdir, "ap", "apprise", url, events=["backup.success"])
        dispatcher, registry = _dispatcher([dest], workdir)
        dispatcher.emit(Event("backup.success", target="app", backup_id="b1"))
        [request] = rx.wait_for(1)
        assert dispatcher.close()
    doc = json.loads(request.body)
    assert "backup.success" in doc["title"] and "app" in doc["message"]
    assert _sample(registry, "ap", "sent") == 1


def test_apprise_mailto_reaches_an_smtp_server(workdir: Path) -> None:
    received: list[bytes] = []
    done = threading.Event()

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(bytes(message))
            done.set()

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = (
            f"mailto://127.0.0.1:{port}?mode=insecure&from=pgwarden@example.com&to=ops@example.com"
        )
        dest = _dest(workdir, "mail", "apprise", url)
        dispatcher, registry = _dispatcher([dest], workdir)
        dispatcher.emit(Event("backup.failure", target="app", error="disk full"))
        assert done.wait(60)
        assert dispatcher.close()
    finally:
        controller.stop()
    mail = message_from_bytes(received[0])
    assert "backup.failure" in str(mail["Subject"]) and "ops@example.com" in str(mail["To"])
    assert b"disk full" in received[0]
    assert _sample(registry, "mail", "sent") == 1


def test_uptime_kuma_style_pings_with_get(workdir: Path) -> None:
    with running_receiver() as rx:
        push = f"{rx.url}/api/push/T0KEN"
        dest = _dest(workdir, "kuma", "healthchecks", push, ping_style="uptime-kuma")
        dispatcher, _ = _dispatcher([dest], workdir)
        dispatcher.emit(Event("backup.failure", target="app", error="disk full"))
        [request] = rx.wait_for(1)
        assert dispatcher.close()
    assert (request.method, request.path) == ("GET", "/api/push/T0KEN")
    assert request.query["status"] == ["down"] and "disk full" in request.query["msg"][0]

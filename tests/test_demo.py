"""``make run``: the demo backs up the embedded PostgreSQL, proves the backup by a restore
drill, serves metrics while a simulated application's traffic rises and falls, prints hints
that name an existing ``pgwarden`` executable, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pgwarden.commands.demo import WEBHOOK_SNIPPET, hints
from pgwarden.commands.demo_app import load_level

APP_SERIES = 'pgwarden_application_connections{application="shop-api",target="shop"}'
LAST_SAMPLE = "pgwarden_monitor_last_sample_timestamp_seconds"


class Output:
    """The demo's stdout, read line by line on a thread; ``wait_for`` blocks on a pattern."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # EOF marker
            self._changed.notify_all()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str) -> re.Match[str]:
        with self._changed:
            while True:
                found = re.search(pattern, self.text(), re.MULTILINE)
                if found is not None:
                    return found
                assert not (self.lines and self.lines[-1] == ""), (
                    f"the demo ended before printing {pattern!r}:\n{self.text()}"
                )
                self._changed.wait(5)

    def join(self) -> None:
        self._thread.join(60)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def application_counts(proc: subprocess.Popen[str], port: int, wanted: int) -> list[float]:
    """The application's connection count in successive monitor samples until it changed."""
    seen: list[float] = []
    last = None
    while len(set(seen)) < wanted:
        assert proc.poll() is None, "the demo stopped while sampling"
        values = scrape(port)
        taken = values.get(LAST_SAMPLE)
        if taken is not None and taken != last and APP_SERIES in values:
            last = taken
            seen.append(values[APP_SERIES])
        assert len(seen) < 60, f"the application's connections never changed: {seen}"
        threading.Event().wait(1.0)  # pacing between scrapes, not an assertion
    return seen


@contextmanager
def receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A webhook receiver on loopback: records every JSON body POSTed to it."""
    bodies: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_demo_runs_end_to_end(workdir: Path) -> None:
    with receiver() as (url, bodies):
        run_demo(workdir, url, bodies)


def run_demo(workdir: Path, url: str, bodies: list[dict[str, object]]) -> None:
    env = {
        **os.environ,
        "PGWARDEN_DEMO_KEEP": "0",
        "PYTHONUNBUFFERED": "1",
        "DEMO_WEBHOOK_URL": url,
    }
    args = [sys.executable, "-m", "pgwarden.cli", "demo", "--dir", str(workdir / "demo")]
    proc = subprocess.Popen(
        [*args, "--duration", "600"],  # an upper bound; the test stops it with Ctrl-C (SIGINT)
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out = Output(proc)
    try:
        port = int(out.wait_for(r"curl -s http://127\.0\.0\.1:(\d+)/metrics").group(1))
        # the hints name a pgwarden that exists, never a bare name
        for what in ("control", "backups", "check"):
            command = out.wait_for(rf"^  {what}:\s+(.*)$").group(1)
            exe = shlex.split(command)[0]
            assert os.path.isabs(exe), command
            assert Path(exe).is_file() and os.access(exe, os.X_OK), command
        assert "events are posted to $DEMO_WEBHOOK_URL" in out.text()
        assert 'kind = "webhook"' in out.text() and 'url_env = "DEMO_WEBHOOK_URL"' in out.text()
        out.wait_for(r"demo: metrics now served")
        counts = application_counts(proc, port, wanted=3)
        assert all(0 < n <= 15 for n in counts), counts
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        returncode = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join()
    assert proc.stdout is not None
    proc.stdout.close()
    text = out.text()
    assert returncode == 0, text
    assert "demo: backup" in text and "written" in text
    assert "demo: restore drill of" in text and "passed" in text
    assert 'pgwarden_backup_last_success_timestamp_seconds{target="shop"}' in text
    assert "demo: application stopped" in text
    assert "Traceback" not in text, text
    # the webhook receiver the demo was pointed at heard about the backup and its drill
    events = {(b["event"], b["target"]) for b in bodies}
    assert ("backup.success", "shop") in events, bodies
    assert ("verify.success", "shop") in events, bodies
    backups = list((workdir / "demo" / "backups" / "shop").glob("*.dump.zst"))
    assert len(backups) == 1
    assert backups[0].with_name(backups[0].name + ".manifest.json").exists()


def test_load_rises_and_falls() -> None:
    levels = [load_level(t, 15, 60.0) for t in range(0, 61, 5)]
    assert levels[0] == 1 and levels[6] == 15 and levels[-1] == 1
    assert levels[:7] == sorted(levels[:7]) and levels[6:] == sorted(levels[6:], reverse=True)


def test_hints_without_a_webhook_name_an_existing_pgwarden(tmp_path: Path) -> None:
    text = hints(tmp_path / "pgwarden.toml", tmp_path / "control.sock", 9188, None)
    command = re.search(r"^  control:\s+(\S+) ctl ", text, re.MULTILINE)
    assert command is not None, text
    exe = shlex.split(command.group(1))[0]
    assert Path(exe).is_file() and os.access(exe, os.X_OK), text
    assert f"DEMO_WEBHOOK_URL=http://127.0.0.1:8000/hook {command.group(1)} demo" in text
    for line in WEBHOOK_SNIPPET.splitlines():
        assert line in text

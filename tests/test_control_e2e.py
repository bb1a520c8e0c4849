"""The control socket of a real ``pgwarden run`` process, on real PostgreSQL 18.

One daemon serves the whole module (tests run in file order; the last one stops it).  Every
command goes through the socket and through ``pgwarden ctl``; real backups, a real restore
drill and a real retention plan stand behind the answers.  The issue's acceptance checks run
here against that process: the fuzz test, a peer dropped to ``nobody``, the canary password,
50 clients with a silent one, and exit code 3 once the daemon is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.control.client import ControlClient, Message
from pgwarden.errors import ControlError
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db
from tests.test_control_support import CANARY, raw_exchange, request_line, short_dir, wait_for

pytestmark = pytest.mark.slow


def _config(root: Path, server: PgServer) -> str:
    return f"""
[daemon]
state_dir = "{root}/state"
socket = "{root}/ctl.sock"
socket_mode = "0666"
shutdown_timeout = 10
log_format = "json"
allow_plaintext_passwords = true

[metrics]
listen = "127.0.0.1:{free_port()}"

[monitor]
interval = 2

[storage]
path = "{root}/backups"

[[targets]]
name = "shop"
dsn = "{server.uri("ctl_shop")}"
password = "{CANARY}"
bin_dir = "{server.bin_dir}"
  [targets.backup]
  retries = 0
  [targets.verify]
  checks = [{{ name = "users exist", sql = "SELECT count(*) FROM users", min = 1 }}]

[[targets]]
name = "gone"
dsn = "{server.uri("ctl_no_such_db")}"
bin_dir = "{server.bin_dir}"
  [targets.backup]
  retries = 0
"""


@dataclass
class Live:
    root: Path
    config: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    answers: list[str] = field(default_factory=list)  # every raw answer, for the canary check

    def client(self) -> ControlClient:
        return ControlClient(self.socket)

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        messages = self.stream(cmd, args)
        return messages[-1].data

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> list[Message]:
        try:
            messages = list(self.client().stream(cmd, args, timeout=120))
        except ControlError as exc:
            self.answers.append(str(exc))
            raise
        self.answers.extend(json.dumps(m.data) for m in messages)
        return messages

    def ctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "pgwarden.cli", "ctl", "--socket", str(self.socket), *argv],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        self.answers.extend([out.stdout, out.stderr])
        return out


@pytest.fixture(scope="module")
def live(pg18: PgServer) -> Iterator[Live]:
    make_sample_db(pg18, "ctl_shop", rows=200, vectors=False)
    root = short_dir()
    config = root / "pgwarden.toml"
    config.write_text(_config(root, pg18))
    config.chmod(0o600)
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    live = Live(root, config, root / "ctl.sock", proc)
    try:
        wait_for(lambda: _answers_hello(live) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, (root / "daemon.log").read_text()
        yield live
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _answers_hello(live: Live) -> bool:
    try:
        return live.client().call("hello")["server"] == "pgwarden"
    except Exception:  # not up yet
        return False


# -- every command through the socket ------------------------------------------------------
def test_every_command_through_the_socket(live: Live) -> None:
    hello = live.call("hello")
    assert hello["pid"] == live.proc.pid

    messages = live.stream("backup", {"target": "shop", "wait": True, "tags": ["pre-change"]})
    phases = {m.data.get("phase") for m in messages if m.kind == "progress"}
    assert "dumping" in phases
    job = messages[-1].data["job"]
    assert job["state"] == "succeeded", job
    backup_id = job["result"]["backup_id"]
    assert Path(job["result"]["path"]).is_file()
    assert job["result"]["size_bytes"] > 0

    jobs = live.call("jobs")["jobs"]
    assert job["id"] in [j["id"] for j in jobs]
    assert live.call("job", {"id": job["id"]})["job"]["state"] == "succeeded"

    backups = live.call("backups", {"target": "shop"})["backups"]
    assert backups[0]["id"] == backup_id
    assert set(backups[0]["tags"]) == {"manual", "pre-change"}
    assert live.call("pin", {"target": "shop", "backup": backup_id[:8]})["backup"]["pinned"]
    assert not live.call("unpin", {"target": "shop", "backup": backup_id[:8]})["backup"]["pinned"]

    drill = live.call("verify", {"target": "shop", "backup": backup_id[:8], "wait": True})["job"]
    assert drill["state"] == "succeeded", drill
    assert drill["result"]["status"] == "passed"

    plan = live.call("prune", {"target": "shop", "dry_run": True, "wait": True})
    result = plan["jobs"][0]["result"]
    assert result["dry_run"] is True
    assert [b["id"] for b in result["backups"]] == [backup_id]
    assert result["backups"][0]["decision"] == "keep"

    assert live.call("pause", {"target": "shop"})["paused"]["targets"] == ["shop"]
    status = live.call("status")
    shop = next(t for t in status["targets"] if t["name"] == "shop")
    assert shop["paused"] is True
    assert shop["last"]["backup"]["attempt_status"] == "complete"
    assert shop["last"]["verify"]["status"] == "passed"
    assert set(shop["next"]) >= {"backup", "verify"}
    assert live.call("resume")["paused"] == {"all": False, "targets": []}

    text = live.config.read_text()
    live.config.write_text(text.replace("interval = 2", "interval = 3"))
    reloaded = live.call("reload")
    assert reloaded["reloaded"] is True
    assert live.call("config")["config"]["monitor"]["interval"] == 3

    failed = live.call("backup", {"target": "gone", "wait": True})["job"]
    assert failed["state"] == "failed"
    assert failed["error"]


# -- every command through pgwarden ctl ----------------------------------------------------
def test_every_command_through_ctl(live: Live) -> None:
    out = live.ctl("status")
    assert out.returncode == 0, out.stderr
    assert "TARGET" in out.stdout
    assert "shop" in out.stdout
    assert json.loads(live.ctl("status", "--json").stdout)["pid"] == live.proc.pid

    out = live.ctl("backup", "shop", "--wait")
    assert out.returncode == 0, out.stderr
    assert "backup of shop succeeded" in out.stdout
    out = live.ctl("backup", "gone", "--wait")
    assert out.returncode == 1
    assert "backup of gone failed" in out.stdout

    queued = json.loads(live.ctl("backup", "shop", "--json").stdout)
    assert queued["job"]["state"] in ("queued", "running", "succeeded")
    assert live.ctl("job", queued["job"]["id"], "--wait").returncode == 0
    assert "shop" in live.ctl("jobs").stdout

    listing = json.loads(live.ctl("backups", "shop", "--json").stdout)["backups"]
    assert len(listing) >= 2
    short = listing[0]["short_id"]
    assert short in live.ctl("backups").stdout
    assert live.ctl("pin", "shop", short).stdout.startswith(f"pinned backup {short}")
    assert live.ctl("unpin", "shop", short).stdout.startswith(f"unpinned backup {short}")

    out = live.ctl("verify", "shop", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    out = live.ctl("prune", "shop", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DECISION" in out.stdout
    assert "keep" in out.stdout

    assert live.ctl("pause").stdout.strip() == "schedules PAUSED for all targets"
    assert live.ctl("resume").stdout.strip() == "schedules running for every target"
    assert "configuration reloaded" in live.ctl("reload").stdout
    shown = live.ctl("config").stdout
    assert "[daemon]" in shown
    assert 'password = "***"' in shown

    out = live.ctl("backup", "nosuch")
    assert out.returncode == 2
    assert "unknown target 'nosuch'" in out.stderr


def test_ctl_backup_and_verify_take_a_priority_for_one_run(live: Live) -> None:
    log = live.root / "daemon.log"
    out = live.ctl("backup", "shop", "--priority", "low", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)["job"]
    assert (job["args"]["priority"], job["result"]["priority"]) == ("low", "low")
    out = live.ctl("backup", "shop", "--wait", "--json")  # auto: normal for an operator's run
    assert json.loads(out.stdout)["job"]["result"]["priority"] == "normal"

    lowered = log.read_text().count("running at low priority")
    out = live.ctl("verify", "shop", "--priority", "low", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert log.read_text().count("running at low priority") == lowered + 1
    assert "drill-low" in log.read_text()

    with pytest.raises(
        ControlError, match=r"backup: priority must be low or normal \(got 'idle'\)"
    ):
        live.call("backup", {"target": "shop", "priority": "idle"})
    out = live.ctl("verify", "shop", "--priority", "idle")
    assert out.returncode == 2
    assert "argument --priority: invalid choice: 'idle'" in out.stderr


# -- the acceptance checks -----------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_requests = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(
            [
                "status",
                "jobs",
                "job",
                "backups",
                "pin",
                "unpin",
                "pause",
                "resume",
                "config",
                "hello",
                "nope",
                "",
            ]
        )
    },
    optional={
        "id": _json,
        "args": st.dictionaries(
            st.sampled_from(["target", "backup", "id", "wait", "dry_run", "tags", "all", "x"]),
            st.sampled_from(["shop", "gone", "nosuch", "", "0000"]) | _json,
            max_size=4,
        ),
    },
)
_junk = st.binary(max_size=2048) | _json.map(lambda v: json.dumps(v).encode())
_junk |= _requests.map(lambda v: json.dumps(v).encode())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.lists(_junk, min_size=1, max_size=4))
def test_fuzz_then_a_valid_request_is_answered(live: Live, junk: list[bytes]) -> None:
    payload = b"\n".join(junk) + b"\n" + request_line("status", rid="probe-7d1e")
    answers = raw_exchange(live.socket, payload, timeout=30)
    assert all(isinstance(a, dict) for a in answers)
    for answer in answers:
        if "error" in answer:
            assert answer["error"]["code"] != "internal", answer
    probe = answers[-1]
    assert probe["id"] == "probe-7d1e"
    assert probe["ok"] is True
    assert {t["name"] for t in probe["result"]["targets"]} == {"shop", "gone"}
    assert live.proc.poll() is None
    live.answers.extend(json.dumps(a) for a in answers)


PEER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"id": "who", "cmd": "status"}\\n')
except OSError:
    pass  # refused at accept: the answer is already waiting
print(s.makefile("rb").readline().decode(), end="")
"""


def test_a_peer_dropped_to_nobody_is_refused(live: Live) -> None:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", PEER, str(live.socket)],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    answer = json.loads(out.stdout)
    assert answer["id"] is None  # refused at accept, before its request was read
    assert answer["error"]["code"] == "forbidden"
    assert "nobody" in answer["error"]["message"]
    assert live.call("hello")["server"] == "pgwarden"


def test_fifty_clients_with_a_silent_one(live: Live) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(live.socket))
        barrier = threading.Barrier(50)
        results: list[dict[str, Any]] = []

        def one() -> None:
            barrier.wait()
            results.append(live.client().call("status"))

        threads = [threading.Thread(target=one) for _ in range(50)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started
    assert len(results) == 50, f"{len(results)} of 50 served"
    assert elapsed < 10, f"50 clients took {elapsed:.2f} s"


def _second_daemon(live: Live) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(live.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_daemon_on_the_same_socket_refuses_to_start(live: Live) -> None:
    out = _second_daemon(live)
    assert out.returncode != 0
    assert live.proc.poll() is None
    assert live.call("hello")["pid"] == live.proc.pid  # the first one still answers


def test_a_refused_second_daemon_leaves_the_running_backup_alone(
    live: Live, pg18: PgServer
) -> None:
    locker = psycopg.connect(pg18.dsn("ctl_shop"))
    locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
    try:
        job = live.call("backup", {"target": "shop"})["job"]
        wait_for(lambda: list((live.root / "backups").rglob("*.partial")), timeout=30)
        second = _second_daemon(live)
        assert second.returncode != 0
        assert "another pgwarden daemon is running" in second.stdout + second.stderr
    finally:
        locker.rollback()
        locker.close()
    done = live.call("job", {"id": job["id"], "wait": True})["job"]
    assert done["state"] == "succeeded", done["error"]


def test_the_canary_password_appears_in_no_answer_and_no_log(live: Live) -> None:
    assert len(live.answers) > 50
    for answer in live.answers:
        assert CANARY not in answer
    assert CANARY not in (live.root / "daemon.log").read_text()


def test_stop_removes_the_socket_and_ctl_then_exits_3(live: Live) -> None:
    live.proc.send_signal(signal.SIGTERM)
    assert live.proc.wait(60) == 0
    assert not live.socket.exists()
    out = live.ctl("status")
    assert out.returncode == 3
    assert str(live.socket) in out.stderr
    assert "not running" in out.stderr
    env = {**os.environ, "PGWARDEN_SOCKET": str(live.socket)}
    out = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "ctl", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3
    assert str(live.socket) in out.stderr

"""The control socket through a real Unix socket: every command, errors, limits, peers."""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgwarden.control import protocol
from pgwarden.control.calls import Call
from pgwarden.control.client import ControlClient
from pgwarden.control.commands import COMMANDS
from pgwarden.control.server import ControlServer
from pgwarden.errors import ControlError, PgwardenError
from tests.test_control_support import (
    CANARY,
    Harness,
    harness,
    no_canary,
    raw_exchange,
    request_line,
    short_dir,
    uid_of,
    wait_for,
)

__all__ = ["harness"]  # the fixture, imported for pytest


def call(h: Harness, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return ControlClient(h.socket).call(cmd, args)


def error_of(h: Harness, cmd: str, args: dict[str, Any] | None = None) -> ControlError:
    with pytest.raises(ControlError) as info:
        call(h, cmd, args)
    return info.value


# -- every command -------------------------------------------------------------------------
def test_hello_names_protocol_version_and_peer(harness: Harness) -> None:
    result = call(harness, "hello")
    assert result["server"] == "pgwarden"
    assert result["protocol"] == protocol.PROTOCOL_VERSION
    assert result["pid"] == os.getpid()
    assert set(result["commands"]) == set(COMMANDS)
    assert result["peer"] == {"uid": 0, "user": "root"}


def test_status_shows_targets_schedules_outcomes_and_jobs(harness: Harness) -> None:
    done = ControlClient(harness.socket).stream("backup", {"target": "app", "wait": True})
    assert list(done)[-1].data["job"]["state"] == "succeeded"
    harness.daemon.gate.clear()  # the next job stays running until the gate opens
    running = call(harness, "backup", {"target": "shop"})["job"]
    try:
        wait_for(lambda: call(harness, "job", {"id": running["id"]})["job"]["state"] == "running")
        result = call(harness, "status")
    finally:
        harness.daemon.gate.set()
    assert result["config"]["path"] == str(harness.config_path)
    assert result["config"]["loaded_at"]
    assert result["uptime_s"] >= 0
    assert result["paused"] == {"all": False, "targets": []}
    targets = {t["name"]: t for t in result["targets"]}
    assert set(targets) == {"app", "shop", "broken"}
    assert set(targets["app"]["next"]) == {"backup", "verify", "prune"}
    assert targets["app"]["last"]["backup"]["attempt_status"] == "complete"
    assert targets["app"]["last"]["backup"]["job"]["state"] == "succeeded"
    assert targets["shop"]["running"] == [running["id"]]
    assert [j["id"] for j in result["jobs"]["running"]] == [running["id"]]


def test_backup_answers_at_once_then_wait_streams_progress(harness: Harness) -> None:
    started = time.monotonic()
    queued = call(harness, "backup", {"target": "app"})
    assert time.monotonic() - started < 0.5
    assert queued["job"]["state"] in ("queued", "running")
    assert queued["existing"] is False
    again = call(harness, "backup", {"target": "app"})  # same target and kind: the same job
    assert again["job"]["id"] == queued["job"]["id"]
    assert again["existing"] is True
    messages = list(
        ControlClient(harness.socket).stream("job", {"id": queued["job"]["id"], "wait": True})
    )
    events = [m for m in messages if m.kind == "progress"]
    assert events, "no progress events"
    assert {"job", "kind", "target", "state"} <= set(events[0].data)
    phases = [e.data for e in events if e.data.get("phase") == "dumping"]
    assert phases
    assert {"bytes", "elapsed_s", "rate_bps"} <= set(phases[-1])
    final = messages[-1]
    assert final.kind == "result"
    assert final.data["job"]["state"] == "succeeded"
    assert final.data["job"]["result"]["size_bytes"] == 6_000_000


def test_failed_job_is_an_outcome_with_a_scrubbed_error(harness: Harness) -> None:
    messages = list(
        ControlClient(harness.socket).stream("backup", {"target": "broken", "wait": True})
    )
    job = messages[-1].data["job"]
    assert job["state"] == "failed"
    assert job["error_code"] == "backup_failed"
    assert "authentication failed" in job["error"]
    no_canary(json.dumps(job))


def test_verify_with_and_without_a_backup_reference(harness: Harness) -> None:
    messages = list(ControlClient(harness.socket).stream("backup", {"target": "app", "wait": True}))
    backup_id = messages[-1].data["job"]["result"]["backup_id"]
    result = list(
        ControlClient(harness.socket).stream(
            "verify", {"target": "app", "backup": backup_id[:6], "wait": True}
        )
    )[-1].data
    assert result["job"]["state"] == "succeeded"
    assert result["job"]["result"]["backup_id"] == backup_id  # the prefix was resolved
    plain = call(harness, "verify", {"target": "shop"})
    assert plain["job"]["kind"] == "verify"
    err = error_of(harness, "verify", {"target": "app", "backup": "ffffffff"})
    assert err.code == "not_found"


def test_prune_one_or_all_targets_and_dry_run(harness: Harness) -> None:
    one = call(harness, "prune", {"target": "app"})
    assert [j["target"] for j in one["jobs"]] == ["app"]
    wait_for(
        lambda: call(harness, "job", {"id": one["jobs"][0]["id"]})["job"]["state"] == "succeeded"
    )
    every = list(ControlClient(harness.socket).stream("prune", {"dry_run": True, "wait": True}))
    result = every[-1].data
    assert result["dry_run"] is True
    assert sorted(j["target"] for j in result["jobs"]) == ["app", "broken", "shop"]
    assert all(j["result"]["dry_run"] is True for j in result["jobs"])


def test_jobs_and_job(harness: Harness) -> None:
    job_id = call(harness, "backup", {"target": "shop"})["job"]["id"]
    listed = call(harness, "jobs")["jobs"]
    assert job_id in [j["id"] for j in listed]
    assert call(harness, "jobs", {"target": "app"})["jobs"] == []
    assert call(harness, "job", {"id": job_id})["job"]["target"] == "shop"
    assert error_of(harness, "job", {"id": "nope"}).code == "not_found"


def test_backups_pin_unpin(harness: Harness) -> None:
    for target in ("app", "shop"):
        list(ControlClient(harness.socket).stream("backup", {"target": target, "wait": True}))
    every = call(harness, "backups")["backups"]
    assert [b["target"] for b in every] == ["shop", "app"]  # newest first
    app = call(harness, "backups", {"target": "app"})["backups"]
    assert len(app) == 1
    assert app[0]["status"] == "complete"
    short = app[0]["short_id"]
    pinned = call(harness, "pin", {"target": "app", "backup": short})["backup"]
    assert pinned["pinned"] is True
    assert pinned["id"] == app[0]["id"]
    assert call(harness, "backups", {"target": "app"})["backups"][0]["pinned"] is True
    manifests = list((harness.root / "backups" / "app").glob("*.manifest.json"))
    assert json.loads(manifests[0].read_text())["pinned"] is True  # the manifest says so too
    assert call(harness, "unpin", {"target": "app", "backup": short})["backup"]["pinned"] is False
    assert json.loads(manifests[0].read_text())["pinned"] is False
    assert error_of(harness, "pin", {"target": "shop", "backup": short}).code == "not_found"
    assert error_of(harness, "backups", {"target": "nosuch"}).code == "not_found"
    assert call(harness, "backups", {"target": "broken"})["backups"] == []


def test_pause_and_resume_all_or_one(harness: Harness) -> None:
    assert call(harness, "pause", {"target": "app"})["paused"] == {"all": False, "targets": ["app"]}
    assert harness.daemon.paused == {"app"}
    assert call(harness, "pause")["paused"]["all"] is True
    # resuming one target while all are paused keeps the others paused, by name
    result = call(harness, "resume", {"target": "shop"})["paused"]
    assert result == {"all": False, "targets": ["app", "broken"]}
    status = {t["name"]: t["paused"] for t in call(harness, "status")["targets"]}
    assert status == {"app": True, "shop": False, "broken": True}
    assert call(harness, "resume")["paused"] == {"all": False, "targets": []}
    assert harness.daemon.paused == set()
    assert error_of(harness, "pause", {"target": "nosuch"}).code == "not_found"


def test_reload_applies_a_good_file_and_refuses_a_bad_one(harness: Harness) -> None:
    before = call(harness, "status")["config"]["loaded_at"]
    text = harness.config_path.read_text()
    harness.config_path.write_text(text.replace('name = "broken"', 'name = "mended"'))
    result = call(harness, "reload")
    assert result["reloaded"] is True
    assert result["targets"] == ["app", "shop", "mended"]
    assert result["loaded_at"] > before
    assert call(harness, "status")["config"]["loaded_at"] == result["loaded_at"]
    harness.config_path.write_text(text.replace("keep_days", "x") + "\n[nonsense]\n")
    err = error_of(harness, "reload")
    assert err.code == "config"
    assert err.exit_code == 2
    assert "nonsense" in str(err)
    assert [t["name"] for t in call(harness, "status")["targets"]] == ["app", "shop", "mended"]


def test_config_is_effective_and_redacted(harness: Harness) -> None:
    result = call(harness, "config")
    assert result["path"] == str(harness.config_path)
    config = result["config"]
    assert config["daemon"]["socket"] == str(harness.socket)
    assert [t["name"] for t in config["targets"]] == ["app", "shop", "broken"]
    assert config["targets"][0]["retention"]["keep_days"] == 7  # a default, filled in
    assert config["targets"][0]["password"] == "***"
    no_canary(json.dumps(result))


def test_no_answer_ever_contains_the_canary(harness: Harness) -> None:
    for target in ("app", "broken"):
        list(ControlClient(harness.socket).stream("backup", {"target": target, "wait": True}))
    short = call(harness, "backups", {"target": "app"})["backups"][0]["short_id"]
    requests = [
        ("hello", {}),
        ("status", {}),
        ("jobs", {}),
        ("backups", {}),
        ("config", {}),
        ("backup", {"target": "shop", "wait": True}),
        ("verify", {"target": "app", "wait": True}),
        ("prune", {"dry_run": True, "wait": True}),
        ("pin", {"target": "app", "backup": short}),
        ("unpin", {"target": "app", "backup": short}),
        ("pause", {}),
        ("resume", {}),
        ("reload", {}),
        ("backup", {"target": "nosuch"}),
        ("nosuch", {}),
    ]
    payload = b"".join(request_line(cmd, args, i) for i, (cmd, args) in enumerate(requests))
    answers = raw_exchange(harness.socket, payload)
    finals = [a for a in answers if "ok" in a]
    assert len(finals) == len(requests)
    assert [a["ok"] for a in finals].count(False) == 2  # the unknown target and command
    no_canary(json.dumps(answers))


# -- protocol errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json\n", "bad_request"),
        (b"\xff\xfe\n", "bad_request"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"id": 1}\n', "bad_request"),
        (b'{"id": 1, "cmd": "hello", "extra": 1}\n', "bad_request"),
        (b'{"id": 1, "cmd": "hello", "args": []}\n', "bad_request"),
        (b'{"id": [1], "cmd": "hello"}\n', "bad_request"),
        (b'{"id": 1, "cmd": "launch"}\n', "unknown_command"),
        (b'{"id": 1, "cmd": "backup"}\n', "bad_argument"),
        (b'{"id": 1, "cmd": "backup", "args": {"target": 5}}\n', "bad_argument"),
        (b'{"id": 1, "cmd": "backup", "args": {"target": "app", "wait": "yes"}}\n', "bad_argument"),
        (b'{"id": 1, "cmd": "prune", "args": {"dryrun": true}}\n', "bad_argument"),
        (b'{"id": 1, "cmd": "backup", "args": {"target": "nosuch"}}\n', "not_found"),
        (b'{"id": ' + b"9" * 4301 + b', "cmd": "hello"}\n', "bad_request"),
        (b'{"id": 1, "cmd": "backup", "args": {"target": ' + b"9" * 4301 + b"}}\n", "bad_request"),
        (b'{"id": 9007199254740992, "cmd": "hello"}\n', "bad_request"),
        (b'{"id": "\\ud800", "cmd": "hello"}\n', "bad_request"),
        (b'{"id": 1, "cmd": "\\ud800"}\n', "bad_request"),
        (b'{"id": 1, "cmd": "backup", "args": {"target": "a\\udfff"}}\n', "bad_request"),
        (b'{"id": 1, "cmd": "hello", "args": {"\\ud800": 1}}\n', "bad_request"),
    ],
)
def test_malformed_requests_get_structured_errors(
    harness: Harness, payload: bytes, code: str
) -> None:
    answers = raw_exchange(harness.socket, payload + request_line("hello", rid="after"))
    assert answers[0]["ok"] is False
    assert answers[0]["error"]["code"] == code
    assert answers[0]["error"]["message"]
    assert answers[-1]["id"] == "after"
    assert answers[-1]["ok"] is True


def test_request_line_over_64k_is_refused_and_the_server_lives_on(harness: Harness) -> None:
    big = b'{"id": 1, "cmd": "hello", "args": {"x": "' + b"a" * (70 * 1024) + b'"}}\n'
    answers = raw_exchange(harness.socket, big)
    assert [a["error"]["code"] for a in answers] == ["too_large"]
    assert call(harness, "hello")["server"] == "pgwarden"


def test_handler_exception_is_an_internal_answer(harness: Harness) -> None:
    def boom(call: Call) -> dict[str, Any]:
        raise RuntimeError(f"bug with password={CANARY}")

    root = short_dir()
    try:
        h = Harness(root, server={"commands": {**COMMANDS, "boom": boom}})
        try:
            answers = raw_exchange(h.socket, request_line("boom") + request_line("hello", rid=2))
        finally:
            h.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert answers[0]["error"]["code"] == "internal"
    assert "RuntimeError" in answers[0]["error"]["message"]
    no_canary(json.dumps(answers))
    assert answers[1]["ok"] is True


# -- timing and load -----------------------------------------------------------------------
def test_fifty_clients_at_once_with_a_silent_one_all_served(harness: Harness) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(harness.socket))
    barrier = threading.Barrier(50)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            barrier.wait()
            results.append(ControlClient(harness.socket).call("status"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(50)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert not errors
    assert len(results) == 50
    assert all(len(r["targets"]) == 3 for r in results)
    assert elapsed < 5, f"50 clients took {elapsed:.2f} s"
    silent.settimeout(0.1)
    with pytest.raises(TimeoutError):
        silent.recv(1)  # still connected, unanswered, and it blocked nobody
    silent.close()


def test_silent_client_is_dropped_with_a_timeout_answer() -> None:
    root = short_dir()
    h = Harness(root, server={"read_timeout": 0.5})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(h.socket))
            sock.sendall(b'{"id": 1, "cmd": "hel')  # a partial line, then silence
            data = sock.makefile("rb").readline()
        assert json.loads(data)["error"]["code"] == "timeout"
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)


def test_one_deadline_per_request_blank_lines_do_not_extend_it() -> None:
    root = short_dir()
    h = Harness(root, server={"read_timeout": 1.0})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.3)
            sock.connect(str(h.socket))
            started = time.monotonic()
            data = b""
            while b"\n" not in data and time.monotonic() - started < 4:
                with contextlib.suppress(OSError):
                    sock.sendall(b"\n")  # a newline every 0.3 s, never a request
                with contextlib.suppress(TimeoutError):
                    data += sock.recv(4096)
            elapsed = time.monotonic() - started
        assert b"\n" in data, "blank lines kept the connection open"
        assert json.loads(data.splitlines()[0])["error"]["code"] == "timeout"
        assert elapsed < 2.5
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)


def test_connections_over_the_limit_get_busy() -> None:
    root = short_dir()
    h = Harness(root, server={"max_connections": 2})
    holders = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(h.socket))
            holders.append(s)
        time.sleep(0.2)
        with pytest.raises(ControlError) as info:
            ControlClient(h.socket).call("hello")
        assert info.value.code == "busy"
        for s in holders:
            s.close()
        wait_for(lambda: _hello_ok(h.socket))
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)


def _hello_ok(path: Path) -> bool:
    try:
        return ControlClient(path).call("hello")["server"] == "pgwarden"
    except ControlError:
        return False


# -- peers ---------------------------------------------------------------------------------
PEER_SCRIPT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"id": 7, "cmd": "status"}\\n')
except OSError:
    pass  # refused at accept: the answer is already waiting
print(s.makefile("rb").readline().decode(), end="")
"""


def _as_nobody(path: Path, extra_groups: tuple[int, ...] = ()) -> dict[str, Any]:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", PEER_SCRIPT, str(path)],
        user="nobody",
        group="nogroup",
        extra_groups=list(extra_groups),
        capture_output=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def _peer_harness(extra: str) -> tuple[Path, Harness]:
    root = short_dir()
    return root, Harness(root, mode="0666", extra_daemon=extra)


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        ("", False),
        ('allowed_users = ["daemon"]\nallowed_groups = ["daemon"]', False),
        ('allowed_users = ["nobody"]', True),
        (f'allowed_users = ["{uid_of("nobody")}"]', True),
        ('allowed_groups = ["nogroup"]', True),
    ],
)
def test_peer_credentials_are_checked(extra: str, allowed: bool) -> None:
    root, h = _peer_harness(extra)
    try:
        answer = _as_nobody(h.socket)
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)
    if allowed:
        assert answer["id"] == 7
        assert answer["ok"] is True
        no_canary(json.dumps(answer))
    else:
        assert answer["id"] is None  # refused at accept, before any request was read
        assert answer["ok"] is False
        assert answer["error"]["code"] == "forbidden"
        assert "nobody" in answer["error"]["message"]
        assert "allowed_users" in answer["error"]["message"]


HOLDER_SCRIPT = """
import json, socket, sys, time
socks = []
for _ in range(4):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sys.argv[1])
    socks.append(s)
answers = []
for s in socks:
    try:
        s.sendall(b"\\n")  # holding on with blank lines, never a request
    except OSError:
        pass
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
        closed = True
    except OSError:
        closed = False
    answers.append({"data": data.decode(), "closed": closed})
print(json.dumps(answers))
"""


def test_a_refused_peer_is_answered_and_closed_at_accept_holding_no_slot() -> None:
    root = short_dir()
    h = Harness(root, mode="0666", server={"max_connections": 2})
    try:
        out = subprocess.run(
            ["/usr/bin/python3", "-c", HOLDER_SCRIPT, str(h.socket)],
            user="nobody",
            group="nogroup",
            extra_groups=[],
            capture_output=True,
            timeout=60,
            check=True,
            cwd="/",
        )
        assert call(h, "hello")["server"] == "pgwarden"
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)
    answers = json.loads(out.stdout)
    assert len(answers) == 4
    for answer in answers:
        assert answer["closed"], "a refused peer's connection was kept open"
        first = json.loads(answer["data"].splitlines()[0])
        assert first["error"]["code"] == "forbidden"


def test_a_supplementary_group_counts() -> None:
    """The groups the connecting process holds (SO_PEERGROUPS), not the group database."""
    name = f"pgwt{os.getpid() % 100000}"
    subprocess.run(["groupadd", "-U", "nobody", name], check=True)
    try:
        root, h = _peer_harness(f'allowed_groups = ["{name}"]')
        try:
            gid = grp.getgrnam(name).gr_gid
            assert _as_nobody(h.socket, (gid,))["ok"] is True  # primary group: nogroup
            assert _as_nobody(h.socket)["ok"] is False  # listed, but not held
        finally:
            h.close()
            shutil.rmtree(root, ignore_errors=True)
    finally:
        subprocess.run(["groupdel", name], check=True)


# -- the socket file -----------------------------------------------------------------------
def test_socket_mode_group_and_removal_at_stop() -> None:
    root = short_dir()
    h = Harness(root, mode="0640", extra_daemon='socket_group = "nogroup"')
    try:
        info = h.socket.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == grp.getgrnam("nogroup").gr_gid
        assert [p.name for p in root.iterdir() if p.name.startswith(".ctl")] == []
    finally:
        h.close()
    try:
        assert not h.socket.exists()
        assert not h.server.thread.is_alive()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_stale_socket_is_replaced() -> None:
    root = short_dir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(root / "ctl.sock"))
    stale.close()  # the file stays, nobody listens: what a crash leaves
    try:
        h = Harness(root)
        try:
            assert call(h, "hello")["server"] == "pgwarden"
        finally:
            h.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_second_server_on_a_live_socket_refuses_to_start(harness: Harness) -> None:
    assert harness.daemon.state is not None
    second = ControlServer(harness.daemon.api, harness.daemon.state.config.daemon)
    with pytest.raises(PgwardenError, match="another pgwarden daemon"):
        second.start()
    assert call(harness, "hello")["server"] == "pgwarden"  # the first one is untouched
    assert harness.socket.exists()


def test_claim_refuses_early_and_stop_releases_it(harness: Harness) -> None:
    assert harness.daemon.state is not None
    config = harness.daemon.state.config.daemon
    with pytest.raises(PgwardenError, match="another pgwarden daemon"):
        ControlServer(harness.daemon.api, config).claim()
    root = short_dir()
    try:
        other = dataclasses.replace(config, socket=root / "x.sock")
        first = ControlServer(harness.daemon.api, other)
        first.claim()  # the path is ours, nothing listens yet
        with pytest.raises(PgwardenError, match="another pgwarden daemon"):
            ControlServer(harness.daemon.api, other).claim()
        first.stop()
        again = ControlServer(harness.daemon.api, other)
        again.start()
        assert ControlClient(root / "x.sock").call("hello")["server"] == "pgwarden"
        again.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_live_listener_without_the_lock_is_not_replaced() -> None:
    root = short_dir()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(root / "ctl.sock"))
    other.listen(1)
    try:
        with pytest.raises(PgwardenError, match="answers on"):
            Harness(root)
        assert (root / "ctl.sock").exists()
    finally:
        other.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_regular_file_at_the_socket_path_is_never_deleted() -> None:
    root = short_dir()
    (root / "ctl.sock").write_text("precious")
    try:
        with pytest.raises(PgwardenError, match="not a socket"):
            Harness(root)
        assert (root / "ctl.sock").read_text() == "precious"
    finally:
        shutil.rmtree(root, ignore_errors=True)

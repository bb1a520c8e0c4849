"""``pgwarden ctl``: every subcommand, human and JSON output, exit codes, socket discovery."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time

import pytest

from pgwarden.cli import main
from tests.test_control_support import CANARY, Harness, harness, short_dir

__all__ = ["harness"]


def run_ctl(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``pgwarden ctl`` in its own process (this one runs the daemon and its log lines)."""
    out = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "ctl", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert CANARY not in out.stdout + out.stderr
    return out.returncode, out.stdout, out.stderr


def ctl(h: Harness, _capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run_ctl("--socket", str(h.socket), *argv)


def test_every_subcommand_human_and_json(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(harness, capsys, "backup", "app", "--wait")
    assert code == 0
    assert out.startswith("backup of app succeeded after")
    assert "5.7 MiB" in out

    code, out, _ = ctl(harness, capsys, "status")
    assert code == 0
    assert "TARGET" in out
    assert "complete" in out
    assert "schedules running for every target" in out

    code, out, _ = ctl(harness, capsys, "backup", "shop", "--tag", "pre-migration", "--json")
    job = json.loads(out)["job"]
    assert code == 0
    code, out, _ = ctl(harness, capsys, "job", job["id"], "--wait")
    assert code == 0
    assert "backup of shop succeeded" in out
    code, out, _ = ctl(harness, capsys, "jobs")
    assert job["id"] in out
    assert (
        json.loads(ctl(harness, capsys, "jobs", "shop", "--json")[1])["jobs"][0]["id"] == job["id"]
    )

    code, out, _ = ctl(harness, capsys, "backups")
    assert code == 0
    assert "pre-migration" in out
    listing = json.loads(ctl(harness, capsys, "backups", "app", "--json")[1])["backups"]
    short = listing[0]["short_id"]
    code, out, _ = ctl(harness, capsys, "pin", "app", short)
    assert (code, out.split(",")[0]) == (0, f"pinned backup {short} of app")
    code, out, _ = ctl(harness, capsys, "unpin", "app", short)
    assert (code, out.split(",")[0]) == (0, f"unpinned backup {short} of app")

    code, out, _ = ctl(harness, capsys, "verify", "app", short, "--wait")
    assert code == 0
    assert "verify of app succeeded" in out
    code, out, _ = ctl(harness, capsys, "prune", "--dry-run")
    assert code == 0
    assert out.count("prune of") == 3

    assert ctl(harness, capsys, "pause", "app")[1] == "schedules paused for: app\n"
    assert ctl(harness, capsys, "pause")[1] == "schedules PAUSED for all targets\n"
    assert ctl(harness, capsys, "resume")[1] == "schedules running for every target\n"
    code, out, _ = ctl(harness, capsys, "reload")
    assert (code, out.startswith("configuration reloaded")) == (0, True)
    code, out, _ = ctl(harness, capsys, "config")
    assert code == 0
    assert out.startswith("# effective configuration")
    assert 'password = "***"' in out
    assert json.loads(ctl(harness, capsys, "config", "--json")[1])["config"]["daemon"]


def test_exit_codes(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(harness, capsys, "backup", "broken", "--wait")
    assert code == 1
    assert "backup of broken failed" in out
    code, _, err = ctl(harness, capsys, "backup", "nosuch")
    assert code == 2
    assert "unknown target 'nosuch'" in err
    code, _, err = ctl(harness, capsys, "job", "nope")
    assert code == 2
    assert "no job 'nope'" in err
    harness.config_path.write_text(harness.config_path.read_text() + "\n[bogus]\n")
    code, _, err = ctl(harness, capsys, "reload")
    assert code == 2
    assert "bogus: unknown key" in err
    with pytest.raises(SystemExit) as info:
        main(["ctl", "--socket", str(harness.socket), "pin", "app"])
    assert info.value.code == 2
    assert main(["ctl", "--socket", str(harness.socket)]) == 2


def test_no_daemon_exits_3_naming_socket_and_cause(capsys: pytest.CaptureFixture[str]) -> None:
    root = short_dir()
    missing = root / "control.sock"
    assert main(["ctl", "--socket", str(missing), "status"]) == 3
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "not running" in err
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(missing))
    stale.close()
    assert main(["ctl", "--socket", str(missing), "status"]) == 3
    assert "stale socket" in capsys.readouterr().err
    missing.unlink()
    root.rmdir()


def test_socket_comes_from_option_config_env_or_default(
    harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_ctl("-c", str(harness.config_path), "pause")[1] == (
        "schedules PAUSED for all targets\n"
    )
    code, out, _ = run_ctl("pause", "-c", str(harness.config_path), "--json")  # after, too
    assert code == 0
    assert json.loads(out)["paused"]["all"] is True
    code, out, _ = run_ctl("resume", env={"PGWARDEN_SOCKET": str(harness.socket)})
    assert (code, out) == (0, "schedules running for every target\n")
    code, out, _ = run_ctl(
        "--socket", "/nonexistent/a.sock", "status", env={"PGWARDEN_SOCKET": str(harness.socket)}
    )
    assert code == 3  # --socket beats the environment
    monkeypatch.delenv("PGWARDEN_SOCKET", raising=False)
    assert main(["ctl", "status"]) == 3  # the default, /run/pgwarden/control.sock: no daemon
    assert "/run/pgwarden/control.sock" in capsys.readouterr().err
    broken = harness.root / "broken.toml"
    broken.write_text("[daemon]\nsocket = 5\n")
    assert main(["ctl", "-c", str(broken), "status"]) == 2
    assert "--socket" in capsys.readouterr().err


def test_backup_wait_shows_a_live_progress_line_on_a_tty(harness: Harness) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgwarden.cli",
            "ctl",
            "--socket",
            str(harness.socket),
            "backup",
            "app",
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=30)
    os.close(master)
    assert proc.returncode == 0
    assert b"\rbackup app: dumping" in seen
    assert b"MiB" in seen
    assert out.startswith("backup of app succeeded")


def test_progress_line_stays_off_when_not_a_tty(harness: Harness) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgwarden.cli",
            "ctl",
            "--socket",
            str(harness.socket),
            "backup",
            "shop",
            "--wait",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0
    assert out.stderr == ""
    assert out.stdout.startswith("backup of shop succeeded")

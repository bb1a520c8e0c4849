"""``pgwarden notify test [NAME]`` delivers (exit 0) or says why not (exit 1, no URL shown);
``pgwarden check`` has a line per destination and tells ``check.failure`` when it fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import write_config
from tests.notify_receiver import Receiver, running_receiver
from tests.pgservers import free_port


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config(workdir: Path, rx: Receiver, dead_port: int) -> Path:
    (workdir / "state").mkdir(mode=0o700)
    hook = workdir / "hook.url"
    hook.write_text(f"{rx.url}/hook/tok3n")
    dead = workdir / "dead.url"
    dead.write_text(f"http://127.0.0.1:{dead_port}/dead-uuid-77")
    for path in (hook, dead):
        path.chmod(0o600)
    return write_config(
        workdir,
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[storage]\npath = "{workdir}/backups"\n[monitor]\nenabled = false\n'
        f'[[notify]]\nname = "hook"\nkind = "webhook"\nurl_file = "{hook}"\n'
        f'[[notify]]\nname = "dead"\nkind = "healthchecks"\nurl_file = "{dead}"\nretries = 1\n'
        f'events = ["backup.failure"]\n',
    )


def test_notify_test_and_the_check_lines(workdir: Path) -> None:
    with running_receiver() as rx:
        config = str(_config(workdir, rx, free_port()))
        ok = _cli("notify", "test", "hook", "-c", config)
        assert ok.returncode == 0, ok.stderr
        assert "hook: sent" in ok.stdout
        [request] = rx.wait_for(1)
        assert json.loads(request.body)["event"] == "test"
        bad = _cli("notify", "test", "dead", "-c", config, "--json")
        assert bad.returncode == 1, bad.stderr
        [result] = json.loads(bad.stdout)["results"]
        assert result["destination"] == "dead" and not result["ok"] and result["error"]
        assert "dead-uuid-77" not in bad.stdout + bad.stderr
        unknown = _cli("notify", "test", "nope", "-c", config)
        assert unknown.returncode == 2 and "hook, dead" in unknown.stderr
        check = _cli("check", "-c", config, "--json")
        assert check.returncode == 1, check.stderr
        lines = {
            r["subject"]: r
            for r in json.loads(check.stdout)["results"]
            if r["check"] == "notify.delivery"
        }
        assert lines["hook"]["status"] == "pass" and "last delivery ok" in lines["hook"]["detail"]
        assert (
            lines["dead"]["status"] == "fail" and "last delivery failed" in lines["dead"]["detail"]
        )
        assert "dead-uuid-77" not in check.stdout + check.stderr
        # the failing check was told to the destinations that want check.failure (hook only)
        requests = rx.wait_for(2)
    told = json.loads(requests[1].body)
    assert told["event"] == "check.failure" and "dead" in told["error"]
    assert "tok3n" not in requests[1].body.decode()

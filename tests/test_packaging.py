"""The built wheel is complete: installed into a fresh venv, ``pgwarden run`` works from it.

The catalog migrations and the example/demo configs must be inside the wheel (an editable
install would find them in the source tree and hide their absence).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db

ROOT = Path(__file__).resolve().parents[1]


def _python() -> str:
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def test_wheel_installs_and_runs(pg18: PgServer, workdir: Path) -> None:
    dist = workdir / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
    )
    wheel = next(dist.glob("pgwarden-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pgwarden/_migrations/versions/001_initial_catalog.py" in names
    assert "pgwarden/_migrations/env.py" in names
    assert "pgwarden/_data/pgwarden.example.toml" in names
    assert "pgwarden/_data/demo.toml" in names

    venv = workdir / "venv"
    subprocess.run([_python(), "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[binary]"],
        check=True,
        timeout=900,
    )
    pgwarden = str(venv / "bin" / "pgwarden")
    # the starter config shipped in the wheel is valid
    starter = workdir / "starter.toml"
    subprocess.run([pgwarden, "config", "init", "-c", str(starter)], check=True, timeout=60)
    subprocess.run([pgwarden, "config", "check", "-c", str(starter)], check=True, timeout=60)

    make_sample_db(pg18, "fromwheel", rows=10, vectors=False)
    config = workdir / "pgwarden.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "fromwheel"\ndsn = "{pg18.uri("fromwheel")}"\n'
        f'bin_dir = "{pg18.bin_dir}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = workdir / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [pgwarden, "run", "-c", str(config)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "ctl.sock").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.2)
        backup = subprocess.run(
            [pgwarden, "backup", "-c", str(config), "fromwheel", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert backup.returncode == 0, backup.stderr
        assert (workdir / "state" / "catalog.db").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_version_is_printed_and_looked_up_only_when_asked() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pgwarden ") and done.stdout.strip() != "pgwarden"
    # a one-shot command does not pay for importlib.metadata just to build its parser
    probe = (
        "import sys, pgwarden.cli; pgwarden.cli.build_parser(); "
        "print('importlib.metadata' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    assert loaded.stdout.strip() == "False"

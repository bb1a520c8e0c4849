"""The read-rate cap of a backup (issue 19, item 2): ``[targets.backup] max_rate``.

A capped backup reads pg_dump's output no faster than the cap -- so it takes at least
``bytes / rate`` (a lower bound that follows from the cap, checked tolerantly; nothing here
asserts that anything is fast) -- and its archive is still whole and passes a drill.  A cap
that holds bytes back is not a stall (``stall_timeout`` shorter than the cap's waits), and a
cancel ends a capped dump long before the cap would have let it finish.  Bad sizes and caps
that cannot apply (pg_dump writing the files itself) are refused naming the key.
"""

from __future__ import annotations

import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pgwarden.backup.request import run_request
from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.cli import main
from pgwarden.config import Config, parse
from pgwarden.config.rates import format_rate, parse_rate
from pgwarden.errors import BackupError, ConfigError
from pgwarden.restore.drill import VerifyRequest, run_verification
from tests.helpers import target_env
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

RATE = 512 * 1024  # bytes/s: a ~2-3 MB dump takes a few seconds


def _capped_read(logs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [e for e in logs if e["event"] == "pg_dump's output read at a capped rate"]
    assert len(found) == 1, [e["event"] for e in logs]
    return found[0]


def test_a_capped_backup_takes_its_time_and_is_whole(workdir: Path, pg18: PgServer) -> None:
    make_sample_db(pg18, "capped", rows=600)
    # a stall_timeout far below the cap's waits between reads: holding back is not a stall
    env = target_env(workdir, pg18, "capped", backup={"max_rate": "512KiB", "stall_timeout": 0.2})
    request = BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage)
    began = time.monotonic()
    with capture_logs() as logs:
        outcome = run_request(request, take_backup)
    wall = time.monotonic() - began
    read = _capped_read(logs)
    assert read["max_rate"] == format_rate(RATE)
    assert read["bytes"] > RATE  # more than a second's worth: the cap must have bitten
    floor = 0.8 * read["bytes"] / RATE
    assert wall >= floor and read["duration_s"] >= floor, (wall, read)
    assert outcome.max_rate == RATE and outcome.as_dict()["max_rate"] == RATE
    drill = run_verification(
        VerifyRequest(env.config.targets[0], env.config, env.catalog, env.storage)
    )
    assert drill.backup_id == outcome.backup_id


def test_cancel_ends_a_capped_backup(workdir: Path, pg18: PgServer) -> None:
    make_sample_db(pg18, "capcancel", rows=600)
    env = target_env(workdir, pg18, "capcancel", backup={"max_rate": "64KiB", "stall_timeout": 0.3})
    request = BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage)
    request.cancel = threading.Event()
    dumped = threading.Event()
    seen: list[int] = []

    def progress(**fields: Any) -> None:
        seen.append(int(fields.get("bytes", 0)))
        if len([b for b in seen if b > 0]) >= 3:  # a few reads in: the cap is pacing it
            dumped.set()

    request.progress = progress
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_request(request, take_backup)
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60  # a hang guard
    while worker.is_alive() and not dumped.wait(0.1) and time.monotonic() < deadline:
        pass
    assert dumped.is_set(), (seen, errors)  # a stall here: the cap's waits did not count
    request.cancel.set()
    # a hang guard, not a speed claim: at 64 KiB/s the whole dump would take over a minute
    worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BackupError), errors
    assert "cancelled" in str(errors[0])  # not a stall: the cap's waits count as progress


@pytest.mark.parametrize(
    ("value", "expected"),
    [("40MB", 40_000_000), ("40MiB", 40 * 1024**2), ("512 kB", 512_000), (1_000_000, 1_000_000)],
)
def test_sizes(value: str | int, expected: int) -> None:
    assert parse_rate(value) == expected


def _config(workdir: Path, backup: str) -> str:
    return f"""
[daemon]
state_dir = "{workdir}/state"
socket = "{workdir}/ctl.sock"
[storage]
path = "{workdir}/backups"
[[targets]]
name = "app"
dsn = "postgresql://pgwarden@127.0.0.1/app"
  [targets.backup]
  {backup}
"""


def _parse(workdir: Path, backup: str) -> Config:
    return parse(tomllib.loads(_config(workdir, backup)), workdir / "pgwarden.toml")


@pytest.mark.parametrize(
    ("backup", "message"),
    [
        ("max_rate = 40", "targets[0].backup.max_rate: must be at least 64KiB per second"),
        ('max_rate = "fast"', "targets[0].backup.max_rate: must be a size per second"),
        (
            'format = "directory"\n  max_rate = "40MB"',
            "targets[0].backup.max_rate: a read-rate cap needs a dump pgwarden streams",
        ),
        (
            'compression = "gzip"\n  max_rate = "40MB"',
            "is written by pg_dump itself",
        ),
    ],
)
def test_bad_caps_are_refused(workdir: Path, backup: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(workdir, backup)
    assert message in str(info.value)


def test_config_and_flag(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _parse(workdir, 'max_rate = "40MB"').targets[0].backup.max_rate == 40_000_000
    assert _parse(workdir, "").targets[0].backup.max_rate == 0
    path = workdir / "pgwarden.toml"
    path.write_text(_config(workdir, 'format = "directory"'))
    path.chmod(0o600)
    code = main(["backup", "--config", str(path), "app", "--max-rate", "40MB"])
    assert code == 2
    assert "--max-rate: a read-rate cap needs a dump pgwarden streams" in capsys.readouterr().err

"""Storage full: the backup storage is a small tmpfs that a dump does not fit in.

The first backup fits.  Then a ballast file leaves the storage with about 1 MiB free while the
database grows to a dump of several MiB: the free-space check (which estimates from the last
backup, small) lets it start, and the write hits ``ENOSPC`` mid-dump.  Then the ballast leaves
only a few KiB, and the free-space check refuses before dumping.  Each time: the job fails
with a message that says the disk is full, no partial is left, the earlier backup is intact,
the daemon keeps running; once space is back, the next backup succeeds.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from tests.faults.conftest import (
    DaemonProcess,
    check_agreement,
    config_text,
    storage_view,
    write_config,
)
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

DB = "fault_disk_full"
FULL = re.compile(r"no space left|not enough (free )?space|disk is full", re.I)


def _digests(storage: Path) -> dict[str, str]:
    return {
        str(p.relative_to(storage)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(storage.rglob("*"))
        if p.is_file() and p.name != "ballast"
    }


def _leave_free(storage: Path, free: int) -> None:
    """Grow ``storage/ballast`` until about ``free`` bytes are left."""
    ballast = storage / "ballast"
    ballast.unlink(missing_ok=True)
    stat = os.statvfs(storage)
    size = max(0, stat.f_bavail * stat.f_frsize - free)
    with ballast.open("wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(b"\0" * (1 << 20))
        out.write(b"\0" * (size % (1 << 20)))


def _fails_for_space(daemon: DaemonProcess, storage: Path, kept: dict[str, str], why: str) -> None:
    done = daemon.wait_job(daemon.submit("backup", DB))
    assert done["state"] == "failed", f"{why}: {done}"
    assert FULL.search(done["error"] or ""), f"{why}: the error does not say so: {done['error']!r}"
    assert storage_view(storage).partials == (), why
    assert _digests(storage) == kept, f"{why}: the earlier backup changed"
    assert daemon.proc is not None and daemon.proc.poll() is None, f"{why}: the daemon died"
    assert daemon.client.call("status"), why


def test_storage_full(pg18: PgServer, workdir: Path, small_disk: Path) -> None:
    make_sample_db(pg18, DB, rows=200, vectors=False)
    write_config(workdir, config_text(workdir, pg18, DB, storage=small_disk))
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    daemon.start()
    try:
        first = daemon.wait_job(daemon.submit("backup", DB))
        assert first["state"] == "succeeded", first
        kept = _digests(small_disk)
        # a dump of several MiB (random hex compresses to about half)
        pg18.execute(
            "CREATE TABLE filler AS SELECT g AS id, md5(random()::text) || md5(random()::text) "
            "AS body FROM generate_series(1, 200000) AS g",
            DB,
        )
        _leave_free(small_disk, 1 << 20)
        _fails_for_space(daemon, small_disk, kept, "ENOSPC mid-dump")
        _leave_free(small_disk, 4096)
        _fails_for_space(daemon, small_disk, kept, "refused before dumping")
        (small_disk / "ballast").unlink()
        done = daemon.wait_job(daemon.submit("backup", DB))
        assert done["state"] == "succeeded", done
        view = check_agreement(workdir, small_disk, "after space came back")
        assert len(view.manifests) == 2, view
    finally:
        daemon.stop()

"""The systemd unit, sysusers.d and tmpfiles.d snippets in ``systemd/``, checked by systemd's tools.

PID 1 is not systemd on the test machines, so nothing is started: ``systemd-analyze verify``
(which only *warns* about unknown keys, hence the empty-stderr assertion), ``systemd-analyze
security --offline`` as an exposure gate, and ``systemd-sysusers``/``systemd-tmpfiles`` applied
to a throwaway root directory.  The unit is also checked against the defaults in
``pgwarden.config`` so the two cannot drift apart.  A missing tool fails; nothing skips.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pgwarden.config import DEFAULT_CONFIG_PATH, DaemonConfig, StorageConfig

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "pgwarden.service"
SYSUSERS = UNITS / "pgwarden.sysusers"
TMPFILES = UNITS / "pgwarden.tmpfiles"

# systemd-analyze security's threshold is the exposure score x10: 20 means "at most 2.0".
EXPOSURE_THRESHOLD = 20


def _tool(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/bin", "/bin", "/usr/sbin") if (p := Path(d, name)).exists()), None
    )
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install systemd)")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; comments and blank lines dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(SERVICE.read_text())["Service"]


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a file that exists here (verify insists on it)."""
    text = SERVICE.read_text()
    assert "ExecStart=/usr/bin/pgwarden run" in text
    copy = tmp_path / "pgwarden.service"
    copy.write_text(text.replace("ExecStart=/usr/bin/pgwarden ", "ExecStart=/bin/true "))
    return copy


def test_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "verify", "--man=no", str(_testable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_unit_verify_catches_an_unknown_key(tmp_path: Path) -> None:
    """The guard above works: a misspelt key produces a warning on stderr."""
    analyze = _tool("systemd-analyze")
    copy = _testable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomme=yes"))
    result = _run(analyze, "verify", "--man=no", str(copy))
    assert "ProtectHomme" in result.stderr


def test_unit_exposure_score_is_low(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = _run(
        analyze,
        "security",
        "--offline=true",
        f"--threshold={EXPOSURE_THRESHOLD}",
        "--no-pager",
        str(_testable_copy(tmp_path)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert summary, result.stdout
    score = float(summary[0].split(":")[1].split()[0])
    assert score <= EXPOSURE_THRESHOLD / 10


def test_unit_matches_the_daemon_contract(service: dict[str, list[str]]) -> None:
    daemon = DaemonConfig()
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == [f"/usr/bin/pgwarden run -c {DEFAULT_CONFIG_PATH}"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["WatchdogSec"] == ["60"]
    assert service["Restart"] == ["on-failure"]
    assert service["User"] == service["Group"] == ["pgwarden"]
    # the control socket and the state directory are the ones systemd creates for the service
    assert daemon.socket.parent == Path("/run") / service["RuntimeDirectory"][0]
    assert daemon.state_dir == Path("/var/lib") / service["StateDirectory"][0]
    assert str(StorageConfig().path) in service["ReadWritePaths"][0].split()
    # an unmounted backup disk must not let backups fill the root filesystem
    unit = parse_unit(SERVICE.read_text())["Unit"]
    assert str(StorageConfig().path) in unit["RequiresMountsFor"][0].split()
    # Type=notify-reload needs systemd 253 (Debian 12 has 252): notify + ExecReload=SIGHUP
    # stopping: only the daemon gets SIGTERM (it stops its own jobs), with time to do it
    assert service["KillMode"] == ["mixed"]
    assert int(service["TimeoutStopSec"][0]) >= daemon.shutdown_timeout + 15


def test_unit_resource_ceilings(service: dict[str, list[str]]) -> None:
    """Memory and task limits cover the daemon and its tools (one cgroup)."""
    sizes = {"K": 2**10, "M": 2**20, "G": 2**30}

    def size(value: str) -> int:
        return int(value[:-1]) * sizes[value[-1]] if value[-1] in sizes else int(value)

    high, top = size(service["MemoryHigh"][0]), size(service["MemoryMax"][0])
    assert 512 * 2**20 <= high < top
    tasks = int(service["TasksMax"][0])
    # pg_dump -j forks a process per job; every job and control connection is a thread
    assert DaemonConfig().max_parallel_jobs * 16 <= tasks <= 4096


def test_unit_sandboxing(service: dict[str, list[str]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["SystemCallFilter"][0] == "@system-service"
    # a password must never be committed in the unit: credentials stay a commented example
    assert "LoadCredential" not in service
    assert "#LoadCredential=" in SERVICE.read_text()


def _image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/tmpfiles.d").mkdir(parents=True)
    shutil.copy(SYSUSERS, root / "usr/lib/sysusers.d/pgwarden.conf")
    shutil.copy(TMPFILES, root / "usr/lib/tmpfiles.d/pgwarden.conf")
    return root


def _passwd_entry(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} not in {root / 'etc/passwd'}")


def _group_id(root: Path, name: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"group {name} not in {root / 'etc/group'}")


def test_sysusers_creates_the_system_user(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    root = _image_root(tmp_path)
    dry = _run(sysusers, f"--root={root}", "--dry-run")
    # sysusers exits 0 on an unknown line type: its messages are the real syntax check
    assert dry.returncode == 0, dry.stderr
    messages = (dry.stdout + dry.stderr).splitlines()
    assert "Creating user 'pgwarden'" in dry.stdout + dry.stderr
    unexpected = [m for m in messages if not m.startswith(("Creating ", "Would write "))]
    assert unexpected == []
    result = _run(sysusers, f"--root={root}")
    assert result.returncode == 0, result.stderr
    entry = _passwd_entry(root, "pgwarden")
    assert int(entry[2]) < 1000, "a system user"
    assert entry[5] == str(DaemonConfig().state_dir), "home = state dir, for ~/.pgpass"
    assert entry[6].endswith("nologin")
    assert _group_id(root, "pgwarden") == int(entry[3])


def test_tmpfiles_create_the_directories(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    tmpfiles = _tool("systemd-tmpfiles")
    root = _image_root(tmp_path)
    assert _run(sysusers, f"--root={root}").returncode == 0
    result = _run(tmpfiles, f"--root={root}", "--create")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    uid = int(_passwd_entry(root, "pgwarden")[2])
    gid = _group_id(root, "pgwarden")
    expected = {
        str(StorageConfig().path): (0o700, uid, gid),
        str(DEFAULT_CONFIG_PATH.parent): (0o750, 0, gid),
        str(DaemonConfig().state_dir): (0o700, uid, gid),
    }
    for path, (mode, owner, group) in expected.items():
        st = (root / path.lstrip("/")).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, owner, group), path

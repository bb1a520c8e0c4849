"""The Debian package built by ``packaging/deb/build`` (``make deb``), checked and really installed.

One session-scoped build makes two packages from the same tree: the project's version and an
older ``<version>~test1`` to upgrade from (``--fast``: xz level 0 rather than the default
level, 1 s instead of 20). Checked: ``dpkg-deb --info/--contents`` (fields, owners, modes, paths, nothing of
the staging directory left), ``lintian`` (no error or warning beyond
``packaging/deb/lintian-overrides``, no stale override), and an install, upgrade, remove and
purge with ``dpkg``.

The install happens **on this machine itself**, purged in a ``finally``. There is no container
engine here (``docker`` has no daemon), and a debootstrap chroot would need a Debian mirror and
a minute or more per run, while CI is a throwaway root machine: a real ``dpkg -i`` there is
both the cheapest and the most faithful check (real ``systemd-sysusers``, ``systemd-tmpfiles``,
``deb-systemd-helper``). PID 1 is not systemd, so nothing is started; the maintainer scripts'
systemd-running branches (restart after upgrade) are not exercised. The install test refuses to
run when a pgwarden package or user already exists (it would remove them), needs root (CI runs
as root; without it the test fails, it does not skip), and holds a lock file so two test
sessions on one machine do not run dpkg at the same time.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "packaging" / "deb" / "build"
OVERRIDES = ROOT / "packaging" / "deb" / "lintian-overrides"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
OLD_VERSION = f"{VERSION}~test1"
CONF = Path("/etc/pgwarden/pgwarden.toml")
BACKUPS = Path("/var/backups/postgres")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/pgwarden.service")
# what dpkg's maintainer scripts get under apt: no pyenv, no venv, no PYTHONPATH
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}

pytestmark = pytest.mark.slow


def _tool(name: str, package: str) -> str:
    path = shutil.which(name, path=CLEAN_ENV["PATH"])
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package}; see .ci/apt-packages)")
    return path


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, (
            f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both packages, built at once: {version: path}."""
    _tool("dpkg-deb", "dpkg")
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "PIP": str(Path(sys.executable).parent / "pip")}
    env.pop("PGWARDEN_DEB_VERSION", None)
    builds = {
        version: subprocess.Popen(
            [str(BUILD), "--version", version, "--output-dir", str(out), "--fast"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in (VERSION, OLD_VERSION)
    }
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    paths = {}
    for version, proc in builds.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"build {version} failed:\n{stderr}"
        paths[version] = Path(stdout.strip().splitlines()[-1])
        assert paths[version] == out / f"pgwarden_{version}_{arch}.deb"
    return paths


@pytest.fixture(scope="session")
def tree(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The current package's files, unpacked (as a user would see them after install)."""
    root = tmp_path_factory.mktemp("tree")
    _run("dpkg-deb", "-x", debs[VERSION], root)
    return root


def _contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """path (without "./") -> (mode string, owner/group, symlink target or "")."""
    entries = {}
    for line in _run("dpkg-deb", "--contents", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(maxsplit=5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix("./")] = (mode, owner, target)
    return entries


def test_control_fields_and_maintainer_scripts(debs: dict[str, Path], tmp_path: Path) -> None:
    deb = debs[VERSION]
    fields = dict(
        line.split(": ", 1)
        for line in _run("dpkg-deb", "--field", deb).stdout.splitlines()
        if not line.startswith(" ")
    )
    assert fields["Package"] == "pgwarden"
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == _run("dpkg", "--print-architecture").stdout.strip()
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "python3 (>= 3.11)" in depends
    assert "python3 (<< 3.12)" in depends  # the venv's site-packages and wheels are cp311
    assert "python3.11" in depends  # the venv's interpreter is /usr/bin/python3.11
    assert "postgresql-client" in depends  # every postgresql-client-N provides it
    assert not any(d.startswith("libpq5") for d in depends)  # psycopg-binary brings its libpq
    assert int(fields["Installed-Size"]) > 10_000

    control = tmp_path / "control"
    _run("dpkg-deb", "--control", deb, control)
    assert (control / "conffiles").read_text() == f"{CONF}\n"
    for name in ("postinst", "prerm", "postrm"):
        script = control / name
        assert script.stat().st_mode & 0o777 == 0o755, name
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/bin/sh", name
        assert "set -e" in lines, name
        _run("sh", "-n", script)
    purge = (control / "postrm").read_text().split("\npurge)")[1].split(";;")[0]
    removals = [ln for ln in purge.splitlines() if "rm " in ln]
    assert removals and not [ln for ln in removals if "backups" in ln], "purge removes backups"
    # the other version differs in its version only
    assert _run("dpkg-deb", "--field", debs[OLD_VERSION], "Version").stdout.strip() == OLD_VERSION


def test_contents_owners_modes_and_paths(debs: dict[str, Path]) -> None:
    entries = _contents(debs[VERSION])
    assert {owner for _mode, owner, _target in entries.values()} == {"root/root"}
    for path, (mode, _owner, _target) in entries.items():
        assert mode[8] != "w" or mode[0] == "l", f"{path} is world-writable: {mode}"
    expected = {
        "etc/pgwarden/": "drwxr-x---",  # postinst gives it (and the file) to the group pgwarden
        "etc/pgwarden/pgwarden.toml": "-rw-r-----",
        "opt/pgwarden/bin/pgwarden": "-rwxr-xr-x",
        "opt/pgwarden/pyvenv.cfg": "-rw-r--r--",
        "usr/lib/systemd/system/pgwarden.service": "-rw-r--r--",
        "usr/lib/sysusers.d/pgwarden.conf": "-rw-r--r--",
        "usr/lib/tmpfiles.d/pgwarden.conf": "-rw-r--r--",
        "usr/share/pgwarden/prometheus/pgwarden-rules.yml": "-rw-r--r--",
        "usr/share/pgwarden/grafana/pgwarden.json": "-rw-r--r--",
        "usr/share/doc/pgwarden/copyright": "-rw-r--r--",
        "usr/share/doc/pgwarden/changelog.gz": "-rw-r--r--",
        "usr/share/lintian/overrides/pgwarden": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert path in entries, f"{path} is not in the package"
        assert entries[path][0] == mode, f"{path}: {entries[path][0]} != {mode}"
    assert entries["usr/bin/pgwarden"][2] == "/opt/pgwarden/bin/pgwarden"
    assert entries["opt/pgwarden/bin/python3.11"][2] == "/usr/bin/python3.11"
    names = list(entries)
    # byte-code is made by postinst, never shipped; no pip inside the app's venv
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/site-packages/pip" in n]
    assert any("/site-packages/psycopg_binary/" in n for n in names)
    # backups, state and runtime directories are made by tmpfiles/systemd, never owned by dpkg
    assert not [n for n in names if n.startswith(("var/", "run/"))]
    libs = [n for n in names if n.endswith(".so") or ".so." in n]
    assert libs and all(entries[n][0] == "-rw-r--r--" for n in libs)


def test_installed_tree_is_relocated(tree: Path) -> None:
    venv = tree / "opt" / "pgwarden"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in cfg
    assert "/opt/pgwarden" in cfg  # the "command" line names the final path
    for script in ("pgwarden", "alembic"):
        assert (venv / "bin" / script).read_text().startswith("#!/opt/pgwarden/bin/python\n")
    assert "\nVIRTUAL_ENV=/opt/pgwarden\n" in (venv / "bin" / "activate").read_text()
    # the build's staging directory is named in no file (binary files included)
    leftover = _run("grep", "-rl", "--fixed-strings", "pgwarden-deb.", tree, check=False)
    assert leftover.returncode == 1, leftover.stdout
    # the unit, snippets, rules and dashboard are the repository's, unchanged
    shipped = {
        "usr/lib/systemd/system/pgwarden.service": "systemd/pgwarden.service",
        "usr/lib/sysusers.d/pgwarden.conf": "systemd/pgwarden.sysusers",
        "usr/lib/tmpfiles.d/pgwarden.conf": "systemd/pgwarden.tmpfiles",
        "usr/share/pgwarden/prometheus/pgwarden-rules.yml": "packaging/prometheus/pgwarden-rules.yml",
        "usr/share/pgwarden/grafana/pgwarden.json": "packaging/grafana/pgwarden.json",
        "usr/share/lintian/overrides/pgwarden": "packaging/deb/lintian-overrides",
    }
    for path, source in shipped.items():
        assert (tree / path).read_bytes() == (ROOT / source).read_bytes(), path
    unit = (tree / "usr/lib/systemd/system/pgwarden.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[0] == "/usr/bin/pgwarden"
    # the conffile is `pgwarden config init`'s starter file
    starter = tree / "starter.toml"
    subprocess.run(
        [Path(sys.executable).parent / "pgwarden", "config", "init", "-c", starter],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (tree / "etc/pgwarden/pgwarden.toml").read_text() == starter.read_text()
    copyright_text = (tree / "usr/share/doc/pgwarden/copyright").read_text()
    assert "Apache-2.0" in copyright_text
    assert "psycopg-binary 3." in copyright_text  # bundled distributions are listed


def test_lintian_clean_beyond_the_overrides(debs: dict[str, Path]) -> None:
    lintian = _tool("lintian", "lintian")
    lines = OVERRIDES.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("pgwarden: "):
            assert lines[i - 1].startswith("# "), f"override without a reason above it: {line}"
    result = _run(
        lintian, "--fail-on", "error,warning", "--display-info", debs[VERSION], check=False
    )
    tags = [ln for ln in result.stdout.splitlines() if ln[:2] in ("E:", "W:", "I:")]
    problems = [t for t in tags if t.startswith(("E:", "W:"))]
    assert not problems, "\n".join(problems)
    stale = [t for t in tags if "unused-override" in t or "mismatched-override" in t]
    assert not stale, "\n".join(stale)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def machine_lock() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("installing the package needs root (CI runs as root on a throwaway machine)")
    with open(Path(tempfile.gettempdir()) / "pgwarden-deb-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _dpkg(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting (up to a minute) while another dpkg/apt holds its lock."""
    deadline = time.monotonic() + 60
    while True:
        result = _run("dpkg", *args, check=False)
        if result.returncode == 0 or "lock" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.returncode == 0, f"dpkg {args}: exit {result.returncode}\n{result.stderr}"
    assert "/pgwarden" not in "".join(
        ln for ln in result.stderr.splitlines() if ln.startswith("dpkg: warning")
    ), result.stderr
    return result


def _installed_version() -> str | None:
    result = _run("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", "pgwarden", check=False)
    status, _, version = result.stdout.partition(" ")
    return version if result.returncode == 0 and status == "installed" else None


def _owner_mode(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return (
        pwd.getpwuid(st.st_uid).pw_name,
        grp.getgrgid(st.st_gid).gr_name,
        stat.S_IMODE(st.st_mode),
    )


def _user_exists() -> bool:
    try:
        pwd.getpwnam("pgwarden")
    except KeyError:
        return False
    return True


def test_install_upgrade_remove_purge(debs: dict[str, Path], machine_lock: None) -> None:
    state = _run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "pgwarden", check=False).stdout
    assert state.strip() in ("", "un"), (
        f"pgwarden is already on this machine ({state}): purge it first"
    )
    assert not _user_exists(), "a user pgwarden exists already: this test would remove it"
    backups_existed = BACKUPS.exists()
    try:
        _install_first(debs[OLD_VERSION])
        _upgrade_keeps_edited_conffile(debs[VERSION])
        _remove_then_purge()
    finally:
        _run("dpkg", "--purge", "pgwarden", check=False)
        if _user_exists():
            _run("userdel", "pgwarden", check=False)
        if not backups_existed:
            shutil.rmtree(BACKUPS, ignore_errors=True)


def _install_first(deb: Path) -> None:
    _dpkg("--install", deb)
    assert _installed_version() == OLD_VERSION
    user = pwd.getpwnam("pgwarden")
    assert user.pw_uid < 1000
    assert user.pw_dir == "/var/lib/pgwarden"
    assert user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert grp.getgrgid(user.pw_gid).gr_name == "pgwarden"
    assert _owner_mode(CONF.parent) == ("root", "pgwarden", 0o750)
    assert _owner_mode(CONF) == ("root", "pgwarden", 0o640)
    assert _owner_mode(Path("/var/lib/pgwarden")) == ("pgwarden", "pgwarden", 0o700)
    assert _owner_mode(BACKUPS) == ("pgwarden", "pgwarden", 0o700)
    # enabled (deb-systemd-helper works without systemd running), not started: no process
    assert WANTS.is_symlink()
    assert _run("pgrep", "-u", "pgwarden", check=False).returncode == 1
    # byte-compiled in place by postinst
    assert list(
        Path("/opt/pgwarden/lib").glob("python3.*/site-packages/pgwarden/__pycache__/*.pyc")
    )

    assert _run("/usr/bin/pgwarden", "--version").stdout.strip() == f"pgwarden {VERSION}"
    # as the daemon's user: it can run the venv and read the config
    check = _run("runuser", "-u", "pgwarden", "--", "pgwarden", "config", "check", "-c", CONF)
    assert "OK" in check.stdout
    probe = _run(
        "/opt/pgwarden/bin/python",
        "-c",
        "import sys, psycopg; print(sys.prefix, sys.base_prefix, psycopg.pq.__impl__, sys.path)",
    ).stdout.split(maxsplit=3)
    assert probe[:3] == ["/opt/pgwarden", "/usr", "binary"]
    assert "/root" not in probe[3] and str(ROOT) not in probe[3]


def _upgrade_keeps_edited_conffile(deb: Path) -> None:
    uid = pwd.getpwnam("pgwarden").pw_uid
    edited = CONF.read_text().replace("max_parallel_jobs = 2 ", "max_parallel_jobs = 1 ")
    assert edited != CONF.read_text()
    CONF.write_text(edited)
    _dpkg("--install", deb)  # stdin is /dev/null: a conffile prompt would fail it
    assert _installed_version() == VERSION
    assert CONF.read_text() == edited
    assert not list(CONF.parent.glob("pgwarden.toml.dpkg-*"))
    assert _owner_mode(CONF) == ("root", "pgwarden", 0o640)
    assert pwd.getpwnam("pgwarden").pw_uid == uid
    verify = _run("dpkg", "--verify", "pgwarden", check=False).stdout.splitlines()
    assert [ln.split()[-1] for ln in verify] == [str(CONF)]  # only the edited conffile differs
    check = _run("runuser", "-u", "pgwarden", "--", "pgwarden", "config", "check", "-c", CONF)
    assert "OK" in check.stdout


def _remove_then_purge() -> None:
    kept = BACKUPS / "myproject_prod" / "20260101T030000Z-1.dump.zst"
    kept.parent.mkdir(exist_ok=True)
    kept.write_bytes(b"a backup")
    shutil.chown(kept.parent, "pgwarden", "pgwarden")

    _dpkg("--remove", "pgwarden")
    status = _run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "pgwarden").stdout
    assert status.strip() == "rc"  # removed, config files left
    assert not Path("/opt/pgwarden").exists()  # byte-code included (prerm removes it)
    assert not Path("/usr/bin/pgwarden").exists()
    assert CONF.exists() and _user_exists()

    purge = _dpkg("--purge", "pgwarden")
    assert "never removed" in purge.stderr
    assert _run("dpkg-query", "-W", "pgwarden", check=False).returncode != 0
    listed = _run("dpkg", "-L", "pgwarden", check=False)
    assert listed.returncode != 0 and "not installed" in listed.stderr
    for path in ("/etc/pgwarden", "/var/lib/pgwarden", "/opt/pgwarden", "/usr/bin/pgwarden"):
        assert not os.path.lexists(path), path
    assert not os.path.lexists(WANTS)
    assert not os.path.lexists("/etc/systemd/system/pgwarden.service")  # the remove-time mask
    assert not _user_exists()
    with pytest.raises(KeyError):
        grp.getgrnam("pgwarden")
    assert kept.read_bytes() == b"a backup"  # backups survive a purge

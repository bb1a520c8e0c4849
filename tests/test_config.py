"""Configuration: the example stays valid, every mistake is reported at once with its key path."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden import config as config_mod
from pgwarden.config import parse
from pgwarden.config import render as config_render
from pgwarden.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "pgwarden.example.toml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def target(**extra: object) -> dict[str, object]:
    return {"name": "app", "dsn": "postgresql://backup@localhost:5432/app", **extra}


def test_example_config_is_valid_via_cli() -> None:
    result = run_cli("config", "check", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_three_mistakes_reported_together(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[daemon]\nmax_parallel_jobs = "two"\n'
        '[[targets]]\nname = "app"\ndsn = "postgresql://u@localhost/app"\n'
        "  [targets.retention]\n  keep_days = 0\n"
        '  [targets.backup]\n  schedule = "0 0 31 2 *"\n'
    )
    result = run_cli("config", "check", "-c", str(bad))
    assert result.returncode == 2
    assert f"{bad}: daemon.max_parallel_jobs: must be an integer" in result.stderr
    assert f"{bad}: targets[0].retention.keep_days: must be >= 1 (got 0)" in result.stderr
    assert f"{bad}: targets[0].backup.schedule: invalid cron expression" in result.stderr


def test_defaults_follow_the_strategy() -> None:
    config = parse({"targets": [target(pools=[{"application": "api"}])]}, Path("x.toml"))
    app = config.targets[0]
    pool = app.pools[0].settings
    assert (pool.pool_size, pool.max_overflow, pool.pool_timeout, pool.pool_recycle) == (
        5,
        10,
        30.0,
        1800,
    )
    assert app.retention.keep_days == 7
    assert app.retention.min_keep == 3
    assert config.metrics.listen == "127.0.0.1:9188"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"targets": [target(colour="blue")]}, "targets[0].colour: unknown key"),
        ({"nonsense": {}}, "nonsense: unknown key"),
        (
            {"targets": [target(password="hunter2")]},
            "targets[0].password: a password in the config",
        ),
        ({"targets": [target(dsn="postgresql://u:pw@h/app")]}, "targets[0].dsn: the DSN contains"),
        ({"targets": [target(dsn="host=h")]}, "targets[0].dsn: must name a database"),
        ({"targets": [target(), target()]}, "targets: target name 'app' is used more than once"),
        ({"daemon": {"timezone": "Mars/Olympus"}}, "daemon.timezone: unknown timezone"),
        ({"metrics": {"listen": "nowhere"}}, "metrics.listen: must be HOST:PORT"),
        (
            {"targets": [target(backup={"format": "tar"})]},
            "targets[0].backup.format: must be one of",
        ),
        (
            {"targets": [target(backup={"extra_args": ["--snapshot=x"]})]},
            "targets[0].backup.extra_args: '--snapshot=x' would override",
        ),
        (
            {"targets": [target(verify={"checks": [{"name": "n", "sql": "select 1"}]})]},
            "targets[0].verify.checks[0].min: a check needs at least one of",
        ),
        ({"targets": [target(password_env="A", password_file="/x")]}, "choose one password source"),
        ({"daemon": {"state_dir": "relative/path"}}, "daemon.state_dir: must be an absolute path"),
        (
            {"targets": [target(migrations={"url_scheme": "mysql"})]},
            "targets[0].migrations.url_scheme: must be a postgresql URL scheme",
        ),
        (
            {"targets": [target(migrations={"dsn": "postgresql://o:pw@h/app"})]},
            "targets[0].migrations.dsn: the DSN contains a password",
        ),
    ],
)
def test_each_mistake_names_its_key(doc: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc, Path("p.toml"))
    assert any(expected in line for line in str(info.value).splitlines()), str(info.value)


def test_plaintext_password_opt_in_requires_private_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "[daemon]\nallow_plaintext_passwords = true\n"
        '[[targets]]\nname = "a"\ndsn = "postgresql://u@h/a"\npassword = "canary-secret"\n'
    )
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        config_mod.load(path)
    assert "canary-secret" not in str(info.value)
    path.chmod(0o600)
    config = config_mod.load(path)
    assert "canary-secret" not in repr(config)
    shown = config_render.render_effective(config)
    assert "canary-secret" not in shown
    assert 'password = "***"' in shown


def test_show_round_trips_through_check(tmp_path: Path) -> None:
    config = config_mod.load(EXAMPLE)
    shown = tmp_path / "shown.toml"
    shown.write_text(config_render.render_effective(config))
    again = config_mod.load(shown)
    assert again.targets == config.targets
    assert again.daemon == config.daemon


def test_init_writes_a_valid_starter(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "pgwarden.toml"
    assert run_cli("config", "init", "-c", str(path)).returncode == 0
    assert run_cli("config", "check", "-c", str(path)).returncode == 0
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    refused = run_cli("config", "init", "-c", str(path))
    assert refused.returncode == 2
    assert "exists" in refused.stderr


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    result = run_cli("config", "check", "-c", str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[daemon\n")
    result = run_cli("config", "check", "-c", str(broken))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


_scalar = st.one_of(
    st.integers(-5, 100000), st.floats(allow_nan=False), st.text(max_size=20), st.booleans()
)


@given(
    section=st.sampled_from(["daemon", "metrics", "monitor", "storage"]),
    key=st.sampled_from(
        [
            "state_dir",
            "max_parallel_jobs",
            "interval",
            "listen",
            "path",
            "jitter",
            "enabled",
            "timezone",
            "min_free_margin",
            "log_level",
            "unknown_key",
        ]
    ),
    value=_scalar,
)
def test_validation_never_crashes(section: str, key: str, value: object) -> None:
    """Any value in any key gives a Config or a ConfigError naming the key — nothing else."""
    try:
        parse({section: {key: value}}, Path("f.toml"))
    except ConfigError as exc:
        assert all(p.startswith(f"{section}.") for p in exc.problems), exc.problems


def test_example_documents_every_key() -> None:
    """Every key of the effective config appears in the commented example."""
    text = EXAMPLE.read_text()
    effective = config_render.effective_dict(config_mod.load(EXAMPLE))

    def keys(node: object) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for k, v in node.items():
                found.add(k)
                found |= keys(v)
        elif isinstance(node, list):
            for item in node:
                found |= keys(item)
        return found

    optional = {
        "socket_group",
        "catalog_url",
        "tls_cert_file",
        "tls_key_file",
        "basic_auth_user",
        "basic_auth_password_hash",
        "password_file",
        "password_credential",
        "bin_dir",
        "compression_level",
        "timeout",
        "dsn",
    }
    for key in keys(effective) | optional:
        assert key in text, f"{key} is not documented in {EXAMPLE.name}"
    tomllib.loads(text)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--dbn=x"], "--dbname"),
        (["--form=p"], "--format"),
        (["--form", "p"], "--format"),
        (["--fil=/tmp/out"], "--file"),
        (["--no-pa"], "--no-password"),
        (["--pass"], "--password"),
        (["--snap=x"], "--snapshot"),
        (["-Fp"], "-F"),
        (["-fout"], "-f"),
        (["-vFp"], "-F"),
        (["-v", "-cC"], "-C"),
        (["otherdb"], "the database"),
        (["--", "otherdb"], "the database"),
        (["--no-owner", "--table"], "needs a value"),
    ],
)
def test_extra_args_read_as_getopt_would(args: list[str], named: str) -> None:
    """Abbreviated long options, clustered short ones and bare words can't slip past."""
    with pytest.raises(ConfigError) as info:
        parse({"targets": [target(backup={"extra_args": args})]}, Path("p.toml"))
    line = next(x for x in str(info.value).splitlines() if "extra_args" in x)
    assert "targets[0].backup.extra_args: " in line, line
    assert named in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["--filt=rules.txt"],
        ["--exclude-table-data=public.users", "--no-owner"],
        ["--table", "--file"],  # a value, however it looks
        ["-tfoo", "-v"],
        ["-t", "-f"],
        ["--no-such-option"],  # pg_dump's own error, at run time
    ],
)
def test_extra_args_that_override_nothing_pass(args: list[str]) -> None:
    config = parse({"targets": [target(backup={"extra_args": args})]}, Path("p.toml"))
    assert config.targets[0].backup.extra_args == tuple(args)

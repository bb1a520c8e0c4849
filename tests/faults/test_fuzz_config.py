"""Fuzzing ``pgwarden config check -c FILE`` (issue 16, the faults suite).

Config files are built by hypothesis from a valid document: one value replaced by a value of
the wrong type or an odd one (huge integers, infinities, datetimes, odd unicode, deep nesting),
unknown keys added anywhere, and raw bytes.  Every file must give exit 0 (valid) or exit 2
with one line per problem, each naming the file and then a key path (or "not valid TOML"),
and never a traceback.  Most examples run in-process through :func:`pgwarden.cli.main` (the
CLI's own entry point, every exception it does not turn into exit 2 failing the test); a
handful of the nastiest files run as real ``pgwarden`` subprocesses, and through ``ctl reload``
of a running service (refused, the old config staying in force).

Derandomized (``derandomize=True``): the same examples on every run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.cli import main
from pgwarden.control.client import ControlClient
from pgwarden.errors import ControlError
from tests.test_config import run_cli
from tests.test_control_support import Harness, short_dir

EXAMPLES_STRUCTURED = 400
EXAMPLES_RAW = 200
FUZZ = settings(
    max_examples=EXAMPLES_STRUCTURED,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE: dict[str, Any] = {
    "daemon": {
        "state_dir": "/var/lib/pgwarden",
        "socket": "/run/pgwarden/control.sock",
        "socket_mode": "0660",
        "max_parallel_jobs": 2,
        "shutdown_timeout": 60,
        "timezone": "UTC",
        "log_level": "info",
        "allowed_groups": ["pgwarden"],
    },
    "metrics": {"enabled": True, "listen": "127.0.0.1:9188"},
    "monitor": {"interval": 15, "pool": {"pool_size": 5, "max_overflow": 10}},
    "storage": {"path": "/var/backups/postgres", "min_free_margin": 0.2},
    "targets": [
        {
            "name": "app",
            "dsn": "postgresql://backup@localhost:5432/app",
            "password_env": "PGWARDEN_APP_PASSWORD",
            "backup": {"schedule": "0 3 * * *", "format": "custom", "retries": 2},
            "retention": {"keep_days": 7, "min_keep": 3},
            "verify": {
                "schedule": "0 5 * * 0",
                "checks": [{"name": "users", "sql": "SELECT 1", "min": 1}],
            },
            "pools": [{"application": "api", "pool_size": 5, "max_overflow": 10}],
        }
    ],
}

# one problem line: "  FILE: key.path[0].x: message" or "  FILE: not valid TOML: ..."
_LINE = re.compile(r"^  (?P<file>[^:]+): (?P<rest>.+)$")


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every key path in ``value`` (tables, arrays, leaves)."""
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*prefix, i))


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


PATHS = sorted(_paths(BASE), key=str)
TABLES = [(), *(p for p in PATHS if isinstance(_get(BASE, p), dict))]

_odd_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
) | st.sampled_from(["", " ", "\u202e", "\u0000", "..", ".", "-x", "*:9188", "0" * 300, "é" * 50])
_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, -1, 2**63 - 1, -(2**63)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | _odd_text
    | st.datetimes(timezones=st.just(UTC))
    | st.dates()
    | st.times()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_odd_text, inner, max_size=4),
    max_leaves=12,
)


def _deep(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


_nested = st.builds(_deep, st.integers(1, 120), st.sampled_from(["list", "dict"]))


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str | int, ...]]]:
    """The base document with some values replaced and some keys added; the paths touched."""
    doc = copy.deepcopy(BASE)
    touched: list[tuple[str | int, ...]] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            path = draw(st.sampled_from(PATHS))
            try:
                parent = _get(doc, path[:-1])
                parent[path[-1]] = draw(_values | _nested)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change replaced the parent
        else:
            table = draw(st.sampled_from(TABLES))
            try:
                parent = _get(doc, table)
            except (KeyError, IndexError, TypeError):
                continue
            if not isinstance(parent, dict):
                continue
            key = draw(_odd_text.filter(bool))
            path = (*table, key)
            parent[key] = draw(_values | _nested)
        touched.append(path)
    return doc, touched


def check_in_process(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["config", "check", "-c", str(path)])
    return code, out.getvalue(), err.getvalue()


def assert_well_reported(path: Path, code: int, out: str, err: str) -> list[str]:
    """Exit 0 with OK, or exit 2 with every problem line naming the file, then a key path or
    "not valid TOML"; the problem lines."""
    assert "Traceback" not in err + out
    if code == 0:
        assert "OK" in out
        return []
    assert code == 2, (code, out, err)
    head, *lines = err.splitlines()
    assert head.startswith(f"{path}: "), err
    assert lines, err
    rests = []
    for line in lines:
        match = _LINE.match(line)
        assert match, line
        assert match["file"] == str(path), line
        rest = match["rest"]
        assert rest.startswith("not valid TOML: ") or re.match(r"^\S.*?: \S", rest), line
        rests.append(rest)
    return rests


def _spelled(part: str | int) -> str:
    """A key as an error message names it: quoted unless TOML would leave it bare."""
    if isinstance(part, int):
        return f"[{part}]"
    bare = part.isascii() and part.replace("_", "").replace("-", "").isalnum()
    return part if bare else repr(part)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgw-fuzzcfg-") as name:
        yield Path(name)


@FUZZ
@given(made=documents())
def test_structured_documents_exit_0_or_2_naming_a_key_path(
    folder: Path, made: tuple[dict[str, Any], list[tuple[str | int, ...]]]
) -> None:
    doc, touched = made
    try:
        text = tomli_w.dumps(doc)
    except (ValueError, TypeError):  # tomli_w cannot write it (e.g. a NaN key): not a file
        return
    path = folder / "fuzz.toml"
    path.write_text(text)
    path.chmod(0o600)
    code, out, err = check_in_process(path)
    rests = assert_well_reported(path, code, out, err)
    if rests and touched and all(not r.startswith("not valid TOML") for r in rests):
        # the problem names something under a section that was changed
        sections = {_spelled(p[0]) for p in touched}
        assert any(r.startswith(section) for r in rests for section in sections), (
            touched,
            rests,
        )


@settings(FUZZ, max_examples=EXAMPLES_RAW)
@given(
    raw=st.binary(max_size=300)
    | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        [
            b"a = " + b"[" * 5000 + b"]" * 5000,
            b"a = " + b"{b=" * 5000 + b"1" + b"}" * 5000,
            b"[daemon]\nmax_parallel_jobs = " + b"9" * 5000,
            b"[daemon]\nmax_parallel_jobs = 1e999999",
            b"\xef\xbb\xbf[daemon]\n",
            b'[daemon]\r\nsocket = "\\ud800"\r\n',
            b'"\xed\xa0\x80" = 1\n',
        ]
    )
)
def test_raw_bytes_exit_2_or_0_and_never_a_traceback(folder: Path, raw: bytes) -> None:
    path = folder / "raw.toml"
    path.write_bytes(raw)
    path.chmod(0o600)
    code, out, err = check_in_process(path)
    assert_well_reported(path, code, out, err)


SUBPROCESS_CASES = {
    "deep arrays": "a = " + "[" * 5000 + "]" * 5000,
    "deep inline tables": "a = " + "{b=" * 3000 + "1" + "}" * 3000,
    "5000-digit integer": "[daemon]\nmax_parallel_jobs = " + "9" * 5000,
    "infinity": "[[targets]]\nname = 'a'\ndsn = 'postgresql://u@h/d'\n"
    "[targets.retention]\nkeep_days = inf\n",
    "lone surrogate escape": '[daemon]\nsocket = "\\ud800"\n',
    "right-to-left override key": '[storage]\n"\u202ex" = 1\n',
    "deep tables": "".join(f"[{'.'.join(['t'] * n)}]\n" for n in range(1, 60)),
}


@pytest.mark.parametrize("name", sorted(SUBPROCESS_CASES))
def test_nasty_files_through_the_real_cli(folder: Path, name: str) -> None:
    path = folder / f"{name.replace(' ', '_')}.toml"
    path.write_text(SUBPROCESS_CASES[name], encoding="utf-8")
    path.chmod(0o600)
    done = run_cli("config", "check", "-c", str(path))
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert_well_reported(path, done.returncode, done.stdout, done.stderr)


def test_the_base_document_is_valid(folder: Path) -> None:
    path = folder / "base.toml"
    path.write_text(tomli_w.dumps(BASE))
    path.chmod(0o600)
    code, out, err = check_in_process(path)
    assert code == 0, err
    assert "1 targets: app" in out


def test_nasty_files_are_refused_by_a_reload_and_the_old_config_stays() -> None:
    """The same files through ``ctl reload`` of a running service: each refused with a
    ``config`` error (exit 2), the service still answering with its old targets."""
    root = short_dir()
    h = Harness(root)
    try:
        good = h.config_path.read_text()
        client = ControlClient(h.socket)
        for name, text in sorted(SUBPROCESS_CASES.items()):
            h.config_path.write_text(text, encoding="utf-8")
            with pytest.raises(ControlError) as info:
                client.call("reload")
            assert info.value.code == "config", (name, info.value)
            assert info.value.exit_code == 2
            targets = [t["name"] for t in client.call("status")["targets"]]
            assert targets == ["app", "shop", "broken"], name
        h.config_path.write_text(good)
        assert client.call("reload")["reloaded"] is True
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)

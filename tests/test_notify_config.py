"""``[[notify]]``: the documented block parses, the defaults, every mistake named with its key
path (a fuzz of bad tables), a URL never echoed, inline URLs only with the opt-in."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden import config as config_mod
from pgwarden.config import parse
from pgwarden.config import render as config_render
from pgwarden.config.notify import FAILURE_EVENTS, NOTIFY_EVENTS, NotifyConfig
from pgwarden.config.offsite import SecretSource
from pgwarden.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "pgwarden.example.toml"
CANARY = "https://hc-ping.com/canary-5f2a-uuid"


def target(name: str = "app") -> dict[str, object]:
    return {"name": name, "dsn": f"postgresql://backup@localhost:5432/{name}"}


def doc(*notify: Mapping[str, object], **top: object) -> dict[str, Any]:
    return {"targets": [target(), target("b")], "notify": list(notify), **top}


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse(data, Path("p.toml"))
    return info.value.problems


def example_notify_block() -> str:
    text = EXAMPLE.read_text()
    block = text[text.index("\n# [[notify]]") + 1 : text.index("\n# [[offsite]]")]
    return "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines()) + "\n"


def test_the_documented_block_parses() -> None:
    data = tomllib.loads(example_notify_block())
    config = parse({**data, "targets": [target("myproject_prod")]}, Path("x"))
    (hc,) = config.notify
    assert (hc.name, hc.kind, hc.url) == ("hc", "healthchecks", SecretSource(env="PGWARDEN_HC_URL"))
    assert hc.events == ("backup.start", "backup.success", "backup.failure")
    assert hc.targets == ("myproject_prod",) and (hc.timeout, hc.retries) == (10, 3)


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for key in NotifyConfig.__dataclass_fields__:
        assert f"# {key} = " in text or f"# # {key}" in text or f"{key}_env" in text, key
    for event in NOTIFY_EVENTS:
        assert event in text
    for key in ("url", "urls", "secret"):
        for suffix in ("_env", "_file", "_credential"):
            assert key + suffix in text, key + suffix


def test_defaults() -> None:
    config = parse(doc({"name": "ops", "kind": "webhook", "url_env": "HOOK"}), Path("x"))
    (ops,) = config.notify
    assert ops.events == FAILURE_EVENTS and ops.targets is None
    assert ops.wants("backup.failure", "b") and not ops.wants("backup.success", "b")
    assert ops.wants("check.failure", None)
    only = parse(
        doc({"name": "a", "kind": "webhook", "url_env": "H", "targets": ["app"]}), Path("x")
    ).notify[0]
    assert only.wants("backup.failure", "app") and not only.wants("backup.failure", "b")
    assert parse(doc(), Path("x")).notify == ()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"kind": "webhook", "url_env": "H"}, "notify[0].name: is required"),
        ({"name": "Bad Name", "kind": "webhook", "url_env": "H"}, "notify[0].name: must be"),
        ({"name": "x", "url_env": "H"}, "notify[0].kind: is required"),
        ({"name": "x", "kind": "email", "url_env": "H"}, "notify[0].kind: must be one of"),
        ({"name": "x", "kind": "webhook"}, "notify[0].url: a webhook destination needs"),
        ({"name": "x", "kind": "healthchecks"}, "notify[0].url: a healthchecks destination"),
        ({"name": "x", "kind": "apprise"}, "notify[0].urls: an apprise destination needs"),
        ({"name": "x", "kind": "apprise", "urls_env": "A", "url_env": "H"}, "notify[0].url:"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "urls_env": "A"}, "notify[0].urls:"),
        ({"name": "x", "kind": "webhook", "url_env": "1BAD"}, "notify[0].url_env: must be"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "url_file": "/f"}, "notify[0].url_file"),
        (
            {"name": "x", "kind": "webhook", "url_env": "H", "secret": "k"},
            "notify[0].secret: a secret in the config file is refused",
        ),
        (
            {"name": "x", "kind": "healthchecks", "url_env": "H", "secret_env": "K"},
            "notify[0].secret: only a webhook",
        ),
        ({"name": "x", "kind": "webhook", "url_env": "H", "events": ["backup.done"]}, "events"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "events": []}, "at least one"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "events": "stalled"}, "events: must"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "targets": ["nope"]}, "unknown target"),
        ({"name": "x", "kind": "webhook", "url_env": "H", "timeout": 0}, "timeout: must be >="),
        ({"name": "x", "kind": "webhook", "url_env": "H", "retries": 0}, "retries: must be >="),
        ({"name": "x", "kind": "webhook", "url_env": "H", "colour": "red"}, "colour: unknown key"),
        (
            {"name": "x", "kind": "webhook", "url_env": "H", "ping_style": "cronitor"},
            "ping_style: only a healthchecks destination",
        ),
        (
            {"name": "x", "kind": "healthchecks", "url_env": "H", "ping_style": "kuma"},
            "ping_style: must be one of",
        ),
        (
            {
                "name": "x",
                "kind": "healthchecks",
                "url_env": "H",
                "ping_style": "uptime-kuma",
                "events": ["backup.start", "backup.success"],
            },
            "events: backup.start cannot be sent with ping_style = 'uptime-kuma'",
        ),
    ],
)
def test_each_mistake_has_its_key_path(entry: dict[str, object], expected: str) -> None:
    found = problems(doc(entry))
    assert any(expected in p for p in found), found


def test_names_are_unique_and_notify_is_an_array_of_tables() -> None:
    one = {"name": "x", "kind": "webhook", "url_env": "H"}
    assert any("used more than once" in p for p in problems(doc(one, one)))
    assert any("notify: must be an array of tables" in p for p in problems({"notify": "x"}))


def test_an_inline_url_needs_the_opt_in_and_is_never_echoed(tmp_path: Path) -> None:
    entry = {"name": "hc", "kind": "healthchecks", "url": CANARY}
    found = problems(doc(entry))
    assert any("notify[0].url: a secret in the config file is refused" in p for p in found)
    assert all(CANARY not in p for p in found)
    bad = problems(
        doc({**entry, "url": "ftp://x/" + CANARY}, daemon={"allow_plaintext_passwords": True})
    )
    assert any("must be an http://" in p for p in bad) and all(CANARY not in p for p in bad)
    path = tmp_path / "p.toml"
    path.write_text(
        "[daemon]\nallow_plaintext_passwords = true\n"
        f'[[notify]]\nname = "hc"\nkind = "healthchecks"\nurl = "{CANARY}"\n'
    )
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        config_mod.load(path)
    assert CANARY not in str(info.value)
    path.chmod(0o600)
    config = config_mod.load(path)
    assert config.notify[0].url.value == CANARY and CANARY not in repr(config)


_VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 500),
    st.booleans(),
    st.lists(st.text(max_size=12), max_size=3),
    st.sampled_from(list(NOTIFY_EVENTS)).map(lambda e: [e]),
)
_KEYS = st.sampled_from(
    [
        "name",
        "kind",
        "url",
        "url_env",
        "url_file",
        "url_credential",
        "urls_env",
        "secret_env",
        "secret",
        "events",
        "targets",
        "timeout",
        "retries",
        "ping_style",
        "bogus",
    ]
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_table_parses_or_fails_with_key_paths(entry: dict[str, object]) -> None:
    """Whatever the table holds: a Config, or a ConfigError whose every problem names a key
    path (never a traceback), and never echoes an inline URL or secret."""
    # an inline URL or secret gets a marker no message could hold by chance ("a st" is in
    # "must be a string"): finding the marker in a problem means the value was echoed
    marker = "zq-secret-"
    entry = {
        k: marker + v if k in ("url", "secret") and isinstance(v, str) else v
        for k, v in entry.items()
    }
    try:
        parse(doc(entry), Path("p.toml"))
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert re.match(r"^(notify(\[0\])?(\.\w+)?|daemon\.\w+): ", problem), problem
            assert marker not in problem, problem


def test_config_show_renders_notify_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "[daemon]\nallow_plaintext_passwords = true\n"
        '[[targets]]\nname = "app"\ndsn = "postgresql://backup@localhost/app"\n'
        f'[[notify]]\nname = "hc"\nkind = "healthchecks"\nurl = "{CANARY}"\ntargets = ["app"]\n'
        '[[notify]]\nname = "hook"\nkind = "webhook"\nurl_env = "H"\nsecret_file = "/k"\n'
    )
    path.chmod(0o600)
    config = config_mod.load(path)
    shown = config_render.render_effective(config)
    assert CANARY not in shown and 'url = "***"' in shown
    again = tmp_path / "again.toml"
    again.write_text(shown.replace('url = "***"', 'url_env = "HC"'))
    again.chmod(0o600)
    reloaded = config_mod.load(again)
    assert reloaded.notify[1] == config.notify[1]
    assert reloaded.notify[0].targets == ("app",) and reloaded.notify[0].url.env == "HC"


def test_apprise_missing_is_a_clear_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[notify]]\nname = "chat"\nkind = "apprise"\nurls_env = "APPRISE_URLS"\n')
    path.chmod(0o600)
    # a Python where apprise cannot be imported (a None entry in sys.modules blocks it)
    code = (
        "import sys; sys.modules['apprise'] = None; from pgwarden.cli import main; "
        f"raise SystemExit(main(['config', 'check', '-c', {str(path)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "notify[0].kind: apprise is not installed" in result.stderr
    assert "pgwarden[notify]" in result.stderr

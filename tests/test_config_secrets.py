"""Config hardening (issue 16, item 6): catalog_url secrets, target names, the metrics address."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgwarden import config as config_mod
from pgwarden.config import parse
from pgwarden.config import render as config_render
from pgwarden.errors import BackupError, ConfigError
from pgwarden.storage.base import check_target_name

CANARY = "canary-catalog-7d1e"
URLS = [
    f"postgresql+psycopg://pgwarden:{CANARY}@db.example.com/pgwarden",
    f"postgresql+psycopg://pgwarden@db.example.com/pgwarden?password={CANARY}",
]


def target(**extra: object) -> dict[str, object]:
    return {"name": "app", "dsn": "postgresql://backup@localhost:5432/app", **extra}


def problems(doc: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(doc, Path("p.toml"))
    return info.value.problems


@pytest.mark.parametrize("url", URLS)
def test_a_catalog_url_password_needs_the_opt_in(url: str) -> None:
    found = problems({"daemon": {"catalog_url": url}})
    assert any(p.startswith("daemon.catalog_url: ") and "password" in p for p in found), found
    assert not any(CANARY in p for p in found)


@pytest.mark.parametrize("url", URLS)
def test_a_catalog_url_password_only_in_a_private_file(tmp_path: Path, url: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'[daemon]\nallow_plaintext_passwords = true\ncatalog_url = "{url}"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        config_mod.load(path)
    assert CANARY not in str(info.value)
    path.chmod(0o600)
    shown = config_render.render_effective(config_mod.load(path))
    assert CANARY not in shown
    assert "catalog_url" in shown
    assert "***" in shown


def test_a_catalog_url_without_password_passes_and_shows_as_is() -> None:
    url = "postgresql+psycopg://pgwarden@db.example.com/pgwarden"
    config = parse({"daemon": {"catalog_url": url}}, Path("p.toml"))
    assert url in config_render.render_effective(config)
    sqlite = "sqlite:////var/lib/pgwarden/catalog.db"
    assert parse({"daemon": {"catalog_url": sqlite}}, Path("p.toml")).daemon.catalog_url == sqlite


@pytest.mark.parametrize("name", [".", "..", "-x", ".hidden", "a/b", "a b", "é", "a" * 64])
def test_target_names_storage_cannot_use_are_refused_at_check(name: str) -> None:
    found = problems({"targets": [target(name=name)]})
    assert any(p.startswith("targets[0].name: ") for p in found), found


@pytest.mark.parametrize("name", ["app", "a", "_x", "9", "my.app-prod_2", "x..y", "a" * 63])
def test_target_names_config_accepts_are_storage_safe(name: str) -> None:
    assert parse({"targets": [target(name=name)]}, Path("p.toml")).targets[0].name == name
    assert check_target_name(name) == name


@pytest.mark.parametrize("name", [".", "..", "-x", ".hidden", "a/b", ""])
def test_storage_refuses_the_same_names(name: str) -> None:
    with pytest.raises(BackupError):
        check_target_name(name)


def test_a_wildcard_listen_is_refused_with_the_address_to_use() -> None:
    found = problems({"metrics": {"listen": "*:9188"}})
    assert len(found) == 1, found
    assert found[0].startswith("metrics.listen: ")
    assert "0.0.0.0:9188" in found[0]
    assert "every interface" in found[0]


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:9188",
        "0.0.0.0:9188",
        "localhost:9188",
        "[::1]:9188",
        "[::]:9188",
        "metrics.example.com:9188",
        "host-1:1",
        "127.0.0.1:0",
    ],
)
def test_good_listen_addresses(listen: str) -> None:
    assert parse({"metrics": {"listen": listen}}, Path("p.toml")).metrics.listen == listen


@pytest.mark.parametrize(
    "listen",
    [
        "::1:9188",
        "[127.0.0.1]:9188",
        "[::1:9188",
        "bad_host:9188",
        "-a:9188",
        "a..b:9188",
        "127.0.0.1:99999",
        "127.0.0.1:" + "9" * 5000,
        "127.0.0.1:65536",
        "127.0.0.1:",
        ":9188",
        "127.0.0.1:+9",
    ],
)
def test_bad_listen_addresses(listen: str) -> None:
    found = problems({"metrics": {"listen": listen}})
    assert any(p.startswith("metrics.listen: ") for p in found), found

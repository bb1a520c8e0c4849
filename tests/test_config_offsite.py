"""``[[offsite]]`` (issue 15): the documented block parses, every mistake has its key path, a
secret never reaches a message or ``config show``, and secrets resolve from their sources."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pgwarden import config as config_mod
from pgwarden.config import OffsiteConfig, SecretSource, parse
from pgwarden.config import render as config_render
from pgwarden.config.secretfiles import resolve_secret
from pgwarden.errors import ConfigError, CredentialError, NotFoundError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "pgwarden.example.toml"
RECIPIENT = "age1m6u8ugn5u25gs8aqy37208cunupacsr8g4gekyw3a3z39whyku0shqwx0k"
SECRET_KEY = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSQVN5A7"
CANARY = "canary-s3-secret-5f2a"


def target(**extra: object) -> dict[str, object]:
    return {"name": "app", "dsn": "postgresql://backup@localhost:5432/app", **extra}


def dest(**extra: object) -> dict[str, object]:
    return {"name": "b2", "bucket": "acme-pg", **extra}


def problems(doc: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse(doc, Path("p.toml"))
    return info.value.problems


def example_offsite_block() -> str:
    """The commented ``[[offsite]]`` block of the example, uncommented once."""
    text = EXAMPLE.read_text()
    block = text[text.index("\n# [[offsite]]") + 1 :]
    return "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines()) + "\n"


def test_the_documented_block_parses() -> None:
    doc = tomllib.loads(example_offsite_block())
    doc["offsite"][0]["encryption"]["recipients"] = [RECIPIENT]
    config = parse({**doc, "targets": [target(offsite=["b2"]), target(name="b")]}, Path("x"))
    (b2,) = config.offsite
    assert b2 == config.destination("b2")
    assert (b2.name, b2.kind, b2.bucket, b2.prefix) == ("b2", "s3", "acme-pg", "vps1/")
    assert b2.endpoint_url == "https://s3.eu-central-003.backblazeb2.com"
    assert b2.region == "eu-central-003"
    assert b2.access_key_id == SecretSource(env="B2_KEY_ID")
    assert b2.secret_access_key == SecretSource(env="B2_APP_KEY")
    assert b2.encryption is not None and b2.encryption.recipients == (RECIPIENT,)
    assert (b2.retention.keep_days, b2.retention.min_keep) == (30, 3)
    assert config.offsite_for("app") == config.offsite_for("b") == (b2,)


def test_example_documents_every_offsite_key() -> None:
    text = EXAMPLE.read_text()
    for key in [f.name for f in OffsiteConfig.__dataclass_fields__.values()]:
        if key in ("access_key_id", "secret_access_key"):
            continue
        assert f"# {key} = " in text or f"#   {key} = " in text or f"[offsite.{key}]" in text, key
    for key in ("access_key_id", "secret_access_key"):
        for suffix in ("_env", "_file", "_credential"):
            assert key + suffix in text
    assert '# offsite = ["b2"]' in text


def test_defaults_and_normalisation() -> None:
    config = parse(
        {
            "offsite": [dest(prefix="a/b"), dest(name="r2", bucket="r2-bucket", prefix="x/")],
            "targets": [
                target(),
                target(name="none", offsite=[]),
                target(name="one", offsite=["r2"]),
            ],
        },
        Path("x"),
    )
    b2, r2 = config.offsite
    assert (b2.prefix, r2.prefix) == ("a/b/", "x/")
    assert b2.encryption is None and b2.part_size is None
    assert (b2.addressing_style, b2.checksum, b2.retries) == ("auto", "auto", 5)
    assert not b2.access_key_id.configured and not b2.secret_access_key.configured
    assert config.target("app").offsite is None
    assert config.offsite_for("app") == (b2, r2)
    assert config.offsite_for("none") == ()
    assert config.offsite_for(config.target("one")) == (r2,)
    with pytest.raises(NotFoundError, match="b2, r2"):
        config.destination("s3")


def test_no_offsite_at_all_is_the_old_behaviour() -> None:
    config = parse({"targets": [target()]}, Path("x"))
    assert config.offsite == () and config.offsite_for("app") == ()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "B2"}, "offsite[0].name: must be 1-63 of a-z, 0-9"),
        ({"name": None}, "offsite[0].name: is required"),
        ({"kind": "gcs"}, "offsite[0].kind: must be one of s3"),
        ({"bucket": None}, "offsite[0].bucket: is required"),
        ({"bucket": "Acme"}, "offsite[0].bucket: an S3 bucket name is 3-63"),
        ({"bucket": "ab"}, "offsite[0].bucket: an S3 bucket name is 3-63"),
        ({"bucket": "a..b"}, "offsite[0].bucket: an S3 bucket name has no '..'"),
        ({"bucket": "192.168.1.1"}, "offsite[0].bucket: an S3 bucket name cannot look like an IP"),
        ({"bucket": "xn--abc"}, "offsite[0].bucket: an S3 bucket name cannot start with xn--"),
        ({"prefix": "/vps1/"}, "offsite[0].prefix: must not start with '/'"),
        ({"prefix": "a//b"}, "offsite[0].prefix: must not contain '//'"),
        ({"prefix": "a/../b"}, "offsite[0].prefix: must not contain '//', '.' or '..'"),
        ({"endpoint_url": "ftp://host"}, "offsite[0].endpoint_url: must be an http:// or https://"),
        ({"endpoint_url": "https://"}, "offsite[0].endpoint_url: must be an http:// or https://"),
        ({"endpoint_url": "https://h/bucket"}, "offsite[0].endpoint_url: must be scheme://host"),
        ({"endpoint_url": "https://h:99999"}, "offsite[0].endpoint_url: not a valid URL"),
        ({"region": "eu central"}, "offsite[0].region: must be a region name"),
        ({"addressing_style": "dns"}, "offsite[0].addressing_style: must be one of auto, path"),
        ({"checksum": "crc32"}, "offsite[0].checksum: must be one of auto, sha256, md5"),
        ({"part_size": 1024}, "offsite[0].part_size: must be >= 5242880"),
        ({"part_size": 6 * 1024**3}, "offsite[0].part_size: must be <= 5368709120"),
        ({"timeout": 0}, "offsite[0].timeout: must be >= 1"),
        ({"stall_timeout": 0}, "offsite[0].stall_timeout: must be >= 1"),
        ({"retries": -1}, "offsite[0].retries: must be >= 0"),
        ({"retries": 99}, "offsite[0].retries: must be <= 20"),
        ({"colour": "blue"}, "offsite[0].colour: unknown key"),
        ({"access_key_id_env": "K"}, "offsite[0].secret_access_key: access_key_id and secret"),
        ({"secret_access_key_env": "K"}, "offsite[0].access_key_id: access_key_id and secret"),
        (
            {"access_key_id_env": "K", "access_key_id_file": "/k", "secret_access_key_env": "S"},
            "offsite[0].access_key_id_file: choose one source for access_key_id, "
            "not access_key_id_env and access_key_id_file",
        ),
        (
            {"access_key_id_env": "1BAD", "secret_access_key_env": "S"},
            "offsite[0].access_key_id_env: must be an environment variable name",
        ),
        (
            {"access_key_id_env": "K", "secret_access_key_file": "relative"},
            "offsite[0].secret_access_key_file: must be an absolute path",
        ),
        (
            {"access_key_id_env": "K", "secret_access_key_credential": "a/b"},
            "offsite[0].secret_access_key_credential: not a valid credential name",
        ),
        ({"encryption": "age"}, "offsite[0].encryption: must be a table"),
        ({"encryption": {}}, "offsite[0].encryption.recipients: is required"),
        ({"encryption": {"recipients": []}}, "offsite[0].encryption.recipients: needs at least"),
        ({"encryption": {"recipients": RECIPIENT}}, "offsite[0].encryption.recipients: must be an"),
        (
            {"encryption": {"recipients": [RECIPIENT, "age1bad"]}},
            "offsite[0].encryption.recipients[1]: not a valid age X25519 recipient",
        ),
        (
            {"encryption": {"recipients": ["ssh-ed25519 AAAAC3Nza"]}},
            "offsite[0].encryption.recipients[0]: not an age X25519 recipient",
        ),
        (
            {"encryption": {"recipients": [RECIPIENT, RECIPIENT]}},
            "offsite[0].encryption.recipients[1]: is listed more than once",
        ),
        (
            {"encryption": {"recipients": [RECIPIENT], "identity": "x"}},
            "offsite[0].encryption.identity: unknown key",
        ),
        ({"retention": {"keep_days": 0}}, "offsite[0].retention.keep_days: must be >= 1"),
        ({"retention": {"min_keep": 0}}, "offsite[0].retention.min_keep: must be >= 1"),
        ({"retention": {"keep_weekly": -1}}, "offsite[0].retention.keep_weekly: must be >= 0"),
        ({"retention": {"schedule": "@daily"}}, "offsite[0].retention.schedule: unknown key"),
    ],
)
def test_each_mistake_has_its_key_path(entry: dict[str, object], expected: str) -> None:
    doc = {k: v for k, v in {**dest(), **entry}.items() if v is not None}
    found = problems({"offsite": [doc]})
    assert any(p.startswith(expected) for p in found), found


def test_offsite_must_be_an_array_of_tables() -> None:
    assert problems({"offsite": {"name": "b2"}}) == (
        "offsite: must be an array of tables (got a table)",
    )


def test_destination_names_are_unique() -> None:
    found = problems({"offsite": [dest(), dest(bucket="other")]})
    assert found == ("offsite: destination name 'b2' is used more than once",)


def test_targets_name_existing_destinations() -> None:
    found = problems(
        {"offsite": [dest()], "targets": [target(offsite=["b2", "s3", "b2"]), target(name="x")]}
    )
    assert "targets[0].offsite: destination 'b2' is listed more than once" in found
    assert "targets[0].offsite: unknown off-site destination 's3' (configured: b2)" in found
    assert len(found) == 2
    assert problems({"targets": [target(offsite="b2")]})[0].startswith(
        "targets[0].offsite: must be an array of strings"
    )


def test_a_directory_dump_cannot_go_off_site() -> None:
    directory = {"backup": {"format": "directory"}}
    found = problems({"offsite": [dest()], "targets": [target(**directory)]})
    assert len(found) == 1
    assert found[0].startswith(
        "targets[0].backup.format: off-site copies need format custom or plain: a directory "
        'dump is many files; use format = "custom"'
    )
    # without a destination (none configured, or offsite = []) a directory dump is fine
    parse({"targets": [target(**directory)]}, Path("x"))
    parse({"offsite": [dest()], "targets": [target(offsite=[], **directory)]}, Path("x"))


@pytest.mark.parametrize(
    "entry",
    [
        {"access_key_id_env": "K", "secret_access_key": CANARY},
        {"access_key_id": CANARY, "secret_access_key_env": "S"},
        {"endpoint_url": f"https://key:{CANARY}@s3.example.com"},
        {"endpoint_url": f"https://{CANARY}@s3.example.com"},
        {"encryption": {"recipients": [CANARY.join(["AGE-SECRET-KEY-1", ""])]}},
        {"encryption": {"recipients": [SECRET_KEY.lower()]}},
        {"access_key_id_env": "K", "secret_access_key": 12345678},
    ],
)
def test_a_secret_is_never_echoed(entry: dict[str, object]) -> None:
    found = problems({"offsite": [dest(**entry)]})
    text = "\n".join(found)
    assert found
    for secret in (CANARY, SECRET_KEY, SECRET_KEY.lower(), "12345678"):
        assert secret not in text, text


def test_a_secret_key_as_recipient_says_why() -> None:
    found = problems({"offsite": [dest(encryption={"recipients": [SECRET_KEY]})]})
    assert len(found) == 1
    assert found[0].startswith("offsite[0].encryption.recipients[0]: this is an age secret key")
    assert "a config never holds a secret key" in found[0]
    assert SECRET_KEY not in found[0]


def test_inline_keys_need_the_opt_in_and_a_private_file(tmp_path: Path) -> None:
    text = (
        "[daemon]\nallow_plaintext_passwords = true\n"
        '[[offsite]]\nname = "b2"\nbucket = "acme-pg"\n'
        f'access_key_id = "AKIDCANARY"\nsecret_access_key = "{CANARY}"\n'
    )
    path = tmp_path / "p.toml"
    path.write_text(text)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        config_mod.load(path)
    assert CANARY not in str(info.value)
    path.chmod(0o600)
    config = config_mod.load(path)
    assert CANARY not in repr(config)
    assert config.offsite[0].secret_access_key.value == CANARY
    shown = config_render.render_effective(config)
    assert CANARY not in shown and "AKIDCANARY" not in shown
    assert 'secret_access_key = "***"' in shown


def test_show_renders_the_section_as_written_and_round_trips(tmp_path: Path) -> None:
    entry = dest(
        prefix="vps1",
        endpoint_url="http://127.0.0.1:9000/",
        region="us-east-1",
        addressing_style="path",
        access_key_id_file="/etc/pgwarden/key_id",
        secret_access_key_credential="s3-secret",
        encryption={"recipients": [RECIPIENT]},
        retention={"keep_days": 60, "keep_monthly": 6},
        part_size=64 * 1024**2,
    )
    config = parse({"offsite": [entry], "targets": [target(offsite=["b2"])]}, Path("x"))
    shown = config_render.render_effective(config)
    doc = tomllib.loads(shown)
    (b2,) = doc["offsite"]
    assert b2["access_key_id_file"] == "/etc/pgwarden/key_id"
    assert b2["secret_access_key_credential"] == "s3-secret"
    assert b2["endpoint_url"] == "http://127.0.0.1:9000"
    assert b2["prefix"] == "vps1/"
    assert b2["encryption"] == {"recipients": [RECIPIENT]}
    assert doc["targets"][0]["offsite"] == ["b2"]
    path = tmp_path / "shown.toml"
    path.write_text(shown)
    again = config_mod.load(path)
    assert again.offsite == config.offsite
    assert again.targets == config.targets


# -- resolving a secret ---------------------------------------------------------------------
WHAT = "offsite[b2].secret_access_key"


def test_resolve_from_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_secret(SecretSource(), WHAT) is None
    monkeypatch.setenv("PGW_TEST_S3", CANARY)
    assert resolve_secret(SecretSource(env="PGW_TEST_S3"), WHAT) == CANARY
    secret_file = tmp_path / "s3.secret"
    secret_file.write_text(CANARY + "\n")
    secret_file.chmod(0o640)
    got = resolve_secret(SecretSource(file=secret_file), WHAT)
    assert got is not None and got.reveal() == CANARY and CANARY not in repr(got)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_secret(SecretSource(credential="s3.secret"), WHAT) == CANARY


def test_resolve_errors_name_the_source_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGW_TEST_NONE", raising=False)
    with pytest.raises(CredentialError) as info:
        resolve_secret(SecretSource(env="PGW_TEST_NONE"), WHAT)
    assert str(info.value) == f"{WHAT}_env: environment variable PGW_TEST_NONE is not set"
    public = tmp_path / "public.secret"
    public.write_text(CANARY)
    public.chmod(0o644)
    with pytest.raises(CredentialError, match="accessible by other users") as info:
        resolve_secret(SecretSource(file=public), WHAT)
    assert str(info.value).startswith(f"{WHAT}_file: ")
    assert CANARY not in str(info.value)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialError, match="CREDENTIALS_DIRECTORY") as info:
        resolve_secret(SecretSource(credential="s3"), WHAT)
    assert str(info.value).startswith(f"{WHAT}_credential 's3': ")

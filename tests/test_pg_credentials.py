"""Password sources: env, file, systemd credential, plaintext; and that secrets never leak."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from pgwarden.config import Credentials, Secret
from pgwarden.errors import CredentialError, UsageError
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.credentials import resolve_password

CANARY = "canary-Pw:7\\x'q\"z"


def _secret_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content)
    path.chmod(mode)
    return path


def test_no_source_means_libpq_defaults() -> None:
    assert resolve_password(Credentials(), "targets[app]") is None


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGW_TEST_PW", CANARY)
    secret = resolve_password(Credentials(password_env="PGW_TEST_PW"), "targets[app]")
    assert isinstance(secret, Secret)
    assert secret.reveal() == CANARY


def test_missing_env_var_names_variable_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGW_TEST_PW", raising=False)
    with pytest.raises(CredentialError) as info:
        resolve_password(Credentials(password_env="PGW_TEST_PW"), "targets[app]")
    assert "targets[app]" in str(info.value)
    assert "PGW_TEST_PW" in str(info.value)
    assert "not set" in str(info.value)


def test_empty_env_var_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGW_TEST_PW", "")
    with pytest.raises(CredentialError, match="is empty"):
        resolve_password(Credentials(password_env="PGW_TEST_PW"), "targets[app]")


def test_from_file_strips_exactly_one_newline(tmp_path: Path) -> None:
    path = _secret_file(tmp_path / "pw", CANARY + "\n\n")
    secret = resolve_password(Credentials(password_file=path), "targets[app]")
    assert secret is not None
    assert secret.reveal() == CANARY + "\n"
    crlf = _secret_file(tmp_path / "pw2", " spaced \r\n")
    secret = resolve_password(Credentials(password_file=crlf), "targets[app]")
    assert secret is not None
    assert secret.reveal() == " spaced "


def test_group_readable_file_is_accepted(tmp_path: Path) -> None:
    path = _secret_file(tmp_path / "pw", CANARY, 0o640)
    secret = resolve_password(Credentials(password_file=path), "x")
    assert secret is not None
    assert secret.reveal() == CANARY


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602])
def test_file_accessible_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path / "pw", CANARY, mode)
    with pytest.raises(CredentialError) as info:
        resolve_password(Credentials(password_file=path), "targets[app]")
    message = str(info.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert "targets[app]" in message
    assert CANARY not in message
    assert CANARY not in repr(info.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=r"cannot open .*No such file"):
        resolve_password(Credentials(password_file=tmp_path / "nope"), "targets[app]")
    empty = _secret_file(tmp_path / "empty", "\n")
    with pytest.raises(CredentialError, match="is empty"):
        resolve_password(Credentials(password_file=empty), "targets[app]")
    with pytest.raises(CredentialError, match="not a regular file"):
        resolve_password(Credentials(password_file=tmp_path), "targets[app]")


def test_binary_garbage_file_error_does_not_show_content(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"\xffsecretbytes\xfe")
    path.chmod(0o600)
    with pytest.raises(CredentialError) as info:
        resolve_password(Credentials(password_file=path), "targets[app]")
    assert "UTF-8" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir(mode=0o700)
    _secret_file(creds_dir / "app-db", CANARY + "\n", 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    secret = resolve_password(Credentials(password_credential="app-db"), "targets[app]")
    assert secret is not None
    assert secret.reveal() == CANARY


def test_systemd_credential_without_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialError) as info:
        resolve_password(Credentials(password_credential="app-db"), "targets[app]")
    assert "CREDENTIALS_DIRECTORY" in str(info.value)
    assert "app-db" in str(info.value)
    assert "targets[app]" in str(info.value)


def test_systemd_credential_name_cannot_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(CredentialError, match="not a valid credential name"):
        resolve_password(Credentials(password_credential="../etc/shadow"), "x")


def test_plaintext_password() -> None:
    secret = resolve_password(Credentials(password=Secret(CANARY)), "x")
    assert secret is not None
    assert secret.reveal() == CANARY


def test_canary_never_in_repr_or_str(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGW_TEST_PW", CANARY)
    spec = ConnSpec.from_dsn(
        "host=127.0.0.1 port=5 dbname=app user=u",
        Credentials(password_env="PGW_TEST_PW"),
        what="targets[app]",
    )
    assert spec.password is not None
    assert spec.password.reveal() == CANARY
    for text in (repr(spec), str(spec), spec.redacted(), spec.dsn, repr(spec.password)):
        assert CANARY not in text
        assert "canary" not in text
    assert "Secret('***')" in repr(spec)


def test_password_in_dsn_is_moved_out() -> None:
    spec = ConnSpec(make_conninfo("host=h dbname=d", password=CANARY))
    assert spec.password is not None
    assert spec.password.reveal() == CANARY
    assert "password" not in spec.dsn
    uri = ConnSpec("postgresql://bob:s3cr%40t@h:5433/db?sslmode=require")
    assert uri.password is not None
    assert uri.password.reveal() == "s3cr@t"
    assert "s3cr" not in repr(uri)
    assert uri.params() == {
        "user": "bob",
        "host": "h",
        "port": "5433",
        "dbname": "db",
        "sslmode": "require",
    }


def test_configured_source_wins_over_dsn_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGW_TEST_PW", "from-env")
    spec = ConnSpec.from_dsn(
        "postgresql://u:from-dsn@h/db", Credentials(password_env="PGW_TEST_PW")
    )
    assert spec.password is not None
    assert spec.password.reveal() == "from-env"


def test_invalid_dsn_error_does_not_echo_it() -> None:
    with pytest.raises(UsageError) as info:
        ConnSpec.from_dsn(f"host=h password={CANARY[:6]} bogus_option=1", what="targets[x]")
    assert "targets[x]" in str(info.value)
    assert CANARY[:6] not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__

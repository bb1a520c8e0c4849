"""The age stage: round trips, the stock ``age`` tool both ways, identities and their files,
wrong-identity messages, stream errors kept as they were, and bounded memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgwarden.archive import encrypt
from pgwarden.errors import CredentialError, OffsiteError
from tests.helpers import target_env
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db, table_fingerprints

AGE = "/usr/bin/age"
AGE_KEYGEN = "/usr/bin/age-keygen"


def keygen(path: Path) -> tuple[str, str]:
    """A key file made by the stock tool: (its public recipient, its secret line)."""
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    secret = next(line for line in path.read_text().splitlines() if line.startswith("AGE-"))
    public = subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return public, secret


def encrypted(data: bytes, recipients: tuple[str, ...]) -> bytes:
    sink = io.BytesIO()
    encrypt.encrypt_stream(io.BytesIO(data), sink, recipients)
    return sink.getvalue()


def decrypted(data: bytes, identities: tuple[object, ...], **kw: object) -> bytes:
    sink = io.BytesIO()
    encrypt.decrypt_stream(io.BytesIO(data), sink, identities, **kw)  # type: ignore[arg-type]
    return sink.getvalue()


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "key.txt"
    public, secret = keygen(path)
    return path, public, secret


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17])
def test_round_trip_and_size_bound(key: tuple[Path, str, str], size: int) -> None:
    path, public, _ = key
    data = os.urandom(size)
    cipher = encrypted(data, (public,))
    assert cipher.startswith(b"age-encryption.org/v1\n")
    assert len(cipher) <= encrypt.encrypted_size(size, recipients=1)
    assert encrypt.encrypted_size(size, recipients=1) - len(cipher) < 1024
    assert len(cipher) <= encrypt.encrypted_size(size)  # the default bound covers it too
    assert decrypted(cipher, encrypt.load_identities(path)) == data


def test_several_recipients_each_decrypts(tmp_path: Path) -> None:
    keys = [keygen(tmp_path / f"k{i}.txt") for i in range(3)]
    data = os.urandom(200_000)
    cipher = encrypted(data, tuple(public for public, _ in keys))
    assert len(cipher) <= encrypt.encrypted_size(len(data), recipients=3)
    for i in range(3):
        assert decrypted(cipher, encrypt.load_identities(tmp_path / f"k{i}.txt")) == data


def test_stock_age_decrypts_what_pgwarden_encrypts(
    key: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, public, _ = key
    data = os.urandom(2 * 1024 * 1024 + 5)
    sealed = tmp_path / "x.dump.zst.age"
    with open(sealed, "wb") as sink:
        encrypt.encrypt_stream(io.BytesIO(data), sink, (public,))
    out = subprocess.run(
        [AGE, "-d", "-i", str(path), str(sealed)], capture_output=True, check=True, timeout=60
    )
    assert out.stdout == data


def test_an_encrypted_backup_restores_with_stock_tools_only(
    pg18: PgServer, workdir: Path, key: tuple[Path, str, str]
) -> None:
    """The README's pipeline, on a real backup: age -d | zstd -d | pg_restore, every table
    the same as in the source."""
    path, public, _ = key
    make_sample_db(pg18, "enc_src", rows=300)
    pg18.drop_database("enc_restored")
    backup = target_env(workdir, pg18, "enc_src").backup()
    assert backup.path.name.endswith(".dump.zst")
    sealed = workdir / (backup.path.name + encrypt.AGE_SUFFIX)
    with open(backup.path, "rb") as source, open(sealed, "wb") as sink:
        encrypt.encrypt_stream(source, sink, (public,))
    pg18.create_database("enc_restored")
    try:
        done = subprocess.run(
            [
                "bash",
                "-e",
                "-o",
                "pipefail",
                "-c",
                f'age -d -i "{path}" "{sealed}" | zstd -d | '
                f'"{pg18.bin_dir}/pg_restore" --no-owner -d "{pg18.uri("enc_restored")}"',
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        source_tables = table_fingerprints(pg18, "enc_src")
        assert len(source_tables) >= 2
        assert table_fingerprints(pg18, "enc_restored") == source_tables
    finally:
        pg18.drop_database("enc_restored")


def test_pgwarden_decrypts_what_stock_age_encrypts(
    key: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, public, _ = key
    data = os.urandom(300_000)
    sealed = subprocess.run(
        [AGE, "-r", public], input=data, capture_output=True, check=True, timeout=60
    ).stdout
    assert decrypted(sealed, encrypt.load_identities(path)) == data


def test_identity_file_comments_and_public_key(key: tuple[Path, str, str]) -> None:
    path, public, secret = key
    identities = encrypt.load_identities(path)
    assert encrypt.identity_recipients(identities) == (public,)
    assert identities[0].fingerprint == encrypt.recipient_fingerprint(public)
    assert secret not in repr(identities)
    assert secret not in str(identities[0])
    path.write_text(f"# a comment\n\n   \n{secret}\r\n# trailing\n")
    assert encrypt.identity_recipients(encrypt.load_identities(path)) == (public,)


def test_fingerprint_is_stable_and_short() -> None:
    fp = encrypt.recipient_fingerprint("age1abc")
    assert fp == encrypt.recipient_fingerprint("age1abc")
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 16
    facts = encrypt.recipient_facts(("age1abc", "age1abd"))
    assert [f.fingerprint for f in facts] == [fp, encrypt.recipient_fingerprint("age1abd")]


def test_wrong_identity_names_the_needed_recipient(tmp_path: Path) -> None:
    right_public, _ = keygen(tmp_path / "right.txt")
    wrong = tmp_path / "wrong.txt"
    wrong_public, wrong_secret = keygen(wrong)
    cipher = encrypted(b"payload" * 1000, (right_public,))
    needed = encrypt.recipient_facts((right_public,))
    with pytest.raises(CredentialError) as info:
        decrypted(cipher, encrypt.load_identities(wrong), needed=needed)
    message = str(info.value)
    assert encrypt.recipient_fingerprint(right_public) in message
    assert encrypt.recipient_fingerprint(wrong_public) in message
    assert wrong_public in message
    assert str(wrong) in message
    assert wrong_secret not in message and "AGE-SECRET-KEY" not in message


def test_no_identity_at_all_names_the_needed_recipient(key: tuple[Path, str, str]) -> None:
    _, public, _ = key
    cipher = encrypted(b"x", (public,))
    with pytest.raises(CredentialError, match="no identity given") as info:
        decrypted(cipher, (), needed=encrypt.recipient_facts((public,)))
    assert encrypt.recipient_fingerprint(public) in str(info.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_identity_file_readable_by_others_is_refused(key: tuple[Path, str, str], mode: int) -> None:
    path, _, secret = key
    path.chmod(mode)
    with pytest.raises(CredentialError, match="chmod 0600") as info:
        encrypt.load_identities(path)
    assert str(path) in str(info.value)
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "# only comments\n\n",
        "not a key at all\n",
        "AGE-SECRET-KEY-1NOTVALIDBECH32\n",
        "age1m6u8ugn5u25gs8aqy37208cunupacsr8g4gekyw3a3z39whyku0shqwx0k\n",
    ],
)
def test_identity_file_without_identity_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key.txt"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(CredentialError) as info:
        encrypt.load_identities(path)
    message = str(info.value)
    assert str(path) in message
    assert content.strip().splitlines()[-1] not in message  # content is never echoed


def test_missing_identity_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="cannot open"):
        encrypt.load_identities(tmp_path / "none.txt")


def test_identity_from_a_systemd_credential(
    key: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, public, _ = key
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(path.parent))
    identities = encrypt.load_identity_credential(path.name)
    assert encrypt.identity_recipients(identities) == (public,)
    assert "identity credential 'key.txt'" in identities[0].source
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(CredentialError, match="CREDENTIALS_DIRECTORY"):
        encrypt.load_identity_credential(path.name)


def test_damaged_and_truncated_streams(key: tuple[Path, str, str]) -> None:
    path, public, _ = key
    identities = encrypt.load_identities(path)
    cipher = bytearray(encrypted(os.urandom(100_000), (public,)))
    with pytest.raises(OffsiteError, match="damaged"):
        decrypted(bytes(cipher[:-10]), identities)
    cipher[-100] ^= 1
    with pytest.raises(OffsiteError, match="damaged"):
        decrypted(bytes(cipher), identities)
    with pytest.raises(OffsiteError, match="damaged"):
        decrypted(b"not an age file at all", identities)


class SinkFailure(Exception):
    pass


class FailingSink(io.RawIOBase):
    """Accepts ``limit`` bytes, then fails like a cancelled upload."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.limit <= 0:
            raise SinkFailure("upload cancelled")
        self.limit -= len(data)
        return len(data)


def test_a_sink_exception_is_raised_unchanged(key: tuple[Path, str, str]) -> None:
    path, public, _ = key
    with pytest.raises(SinkFailure, match="upload cancelled"):
        encrypt.encrypt_stream(io.BytesIO(os.urandom(500_000)), FailingSink(100_000), (public,))  # type: ignore[arg-type]
    cipher = encrypted(os.urandom(500_000), (public,))
    with pytest.raises(SinkFailure):
        encrypt.decrypt_stream(
            io.BytesIO(cipher),
            FailingSink(100_000),  # type: ignore[arg-type]
            encrypt.load_identities(path),
        )


def test_a_source_error_is_raised_unchanged(key: tuple[Path, str, str]) -> None:
    _, public, _ = key

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            raise OSError(5, "disk gone")

    with pytest.raises(OSError, match="disk gone"):
        encrypt.encrypt_stream(Broken(), io.BytesIO(), (public,))  # type: ignore[arg-type]


def test_bad_recipients_are_refused_without_echo() -> None:
    assert (
        encrypt.check_recipient("age1m6u8ugn5u25gs8aqy37208cunupacsr8g4gekyw3a3z39whyku0shqwx0k")
        is None
    )
    secret = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSQVN5A7"
    problem = encrypt.check_recipient(secret)
    assert problem is not None and "never holds a secret key" in problem
    assert secret not in problem
    assert encrypt.check_recipient("ssh-ed25519 AAAA") is not None
    assert encrypt.check_recipient("age1notbech32") is not None
    with pytest.raises(OffsiteError, match="sha256:") as info:
        encrypt.encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), ("age1notbech32",))
    assert "age1notbech32" not in str(info.value)
    with pytest.raises(OffsiteError, match="no age recipient"):
        encrypt.encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), ())


_MEMORY_PROBE = r"""
import io, resource, sys
from pgwarden.archive import encrypt

TOTAL = 200 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB


class Generated(io.RawIOBase):
    # a raw stream generating TOTAL bytes; nothing of it is kept
    def __init__(self):
        self.left = TOTAL

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left, len(BLOCK))
        buffer[:n] = BLOCK[:n]
        self.left -= n
        return n


class Counter(io.RawIOBase):
    def __init__(self):
        self.size = 0

    def writable(self):
        return True

    def write(self, data):
        self.size += len(data)
        return len(data)


recipient = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sink = Counter()
encrypt.encrypt_stream(Generated(), sink, (recipient,))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert TOTAL < sink.size <= encrypt.encrypted_size(TOTAL, 1), sink.size
print(after - before)
"""


def test_memory_stays_bounded_on_200_mb(key: tuple[Path, str, str]) -> None:
    """200 MB through the stage in a fresh process: its peak RSS grows by < 64 MB."""
    _, public, _ = key
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, public],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    growth_kib = int(out.stdout.strip())
    assert growth_kib < 64 * 1024, f"peak RSS grew by {growth_kib} KiB"

"""Reading a configured secret: an environment variable, a private file or a systemd credential.

The rules every secret source follows, whoever uses it (``pg/`` for passwords, ``storage/`` for
S3 keys -- independent siblings, so the rules live here, below both):

* an environment variable must exist and be non-empty;
* a file must be a regular file that other users cannot read (``0600``, or ``0640`` for a
  ``pgwarden`` group); its mode is checked on the opened descriptor, it is read up to
  :data:`MAX_SECRET_BYTES` and one trailing newline is stripped;
* a systemd credential (``LoadCredential=`` / ``LoadCredentialEncrypted=``) is the file
  ``$CREDENTIALS_DIRECTORY/<name>`` under the same rules.

Every failure is a :class:`~pgwarden.errors.CredentialError` naming the secret and its source,
never the value.  An ``OSError`` is chained (errno and path, no content); an exception that
might carry file content (a ``UnicodeDecodeError`` shows the offending bytes) is not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pgwarden.config.offsite import SecretSource
from pgwarden.errors import CredentialError
from pgwarden.redaction import Secret

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
#: a secret file bigger than this is certainly not a password or a key (and is not read)
MAX_SECRET_BYTES = 64 * 1024

__all__ = [
    "CREDENTIALS_DIRECTORY",
    "MAX_SECRET_BYTES",
    "credential_path",
    "read_env",
    "read_secret_file",
    "resolve_secret",
]


def resolve_secret(source: SecretSource, what: str) -> Secret | None:
    """The secret ``what`` (its config key path, e.g. ``offsite[b2].secret_access_key``) from
    its configured source, or ``None`` when none is configured.  Messages name the source as
    ``<what>_env`` / ``<what>_file`` / ``<what>_credential``, as the config spells it."""
    if source.env is not None:
        return read_env(source.env, f"{what}_env")
    if source.file is not None:
        return read_secret_file(source.file, f"{what}_file")
    if source.credential is not None:
        label = f"{what}_credential {source.credential!r}"
        return read_secret_file(credential_path(source.credential, label), label)
    if source.value is not None:
        return source.value if isinstance(source.value, Secret) else Secret(source.value)
    return None


def read_env(name: str, source: str) -> Secret:
    """The non-empty value of environment variable ``name``."""
    value = os.environ.get(name)
    if value is None:
        raise CredentialError(f"{source}: environment variable {name} is not set")
    if not value:
        raise CredentialError(f"{source}: environment variable {name} is empty")
    return Secret(value)


def credential_path(name: str, source: str) -> Path:
    """Where systemd put credential ``name`` for this service."""
    if not name or "/" in name or name in (".", ".."):
        raise CredentialError(f"{source}: not a valid credential name")
    directory = os.environ.get(CREDENTIALS_DIRECTORY)
    if not directory:
        raise CredentialError(
            f"{source}: ${CREDENTIALS_DIRECTORY} is not set; systemd sets it for a service with "
            f"LoadCredential={name}:... (or LoadCredentialEncrypted=)"
        )
    return Path(directory) / name


def read_secret_file(path: Path, source: str) -> Secret:
    """Read a secret from ``path``, refusing a file that other users can read.

    ``source`` prefixes every error message.  The mode is checked on the opened descriptor, so
    the file cannot be swapped between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise CredentialError(f"{source}: cannot open {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"{source}: {path} is not a regular file")
        if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise CredentialError(
                f"{source}: {path} is accessible by other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 0600 (or 0640 for a group)"
            )
        raw = read_at_most(fd, MAX_SECRET_BYTES + 1)
        if len(raw) > MAX_SECRET_BYTES:
            raise CredentialError(f"{source}: {path} is too large to be a secret")
    except OSError as exc:
        raise CredentialError(f"{source}: cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{source}: {path} is not valid UTF-8") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise CredentialError(f"{source}: {path} is empty")
    return Secret(text)


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (fewer at end of file)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(8192, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

"""Passwords: resolving a :class:`~pgwarden.config.Credentials` into a :class:`Secret`.

This module owns *where a password comes from*.  The sources, exactly one of which the config
allows per connection:

``password_env``
    an environment variable, which must exist and be non-empty;
``password_file``
    a file whose content is the password (one trailing newline is stripped); a file readable by
    other users is refused, group-readable (0640) is allowed for a ``pgwarden`` group;
``password_credential``
    a systemd credential (``LoadCredential=`` / ``LoadCredentialEncrypted=``), read from
    ``$CREDENTIALS_DIRECTORY/<name>`` with the same rules as a password file;
``password``
    a plaintext password from the config file (opt-in, already validated by ``config``).

No source set gives ``None``: libpq then falls back to ``.pgpass`` / ``PGPASSFILE`` / trust.

Every failure is a :class:`CredentialError` naming the connection (``what``, e.g.
``targets[app]``) and the source -- never the password.  An ``OSError`` is chained (errno and path, no content); exceptions
that might carry file content (a ``UnicodeDecodeError`` shows the offending bytes) are not
(``from None``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pgwarden.config import Credentials, Secret
from pgwarden.errors import CredentialError

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
#: a password file bigger than this is certainly not a password (and is not read into memory)
MAX_PASSWORD_BYTES = 64 * 1024

__all__ = ["CREDENTIALS_DIRECTORY", "read_secret_file", "resolve_password"]


def resolve_password(creds: Credentials, what: str) -> Secret | None:
    """The password for connection ``what`` from its configured source, or ``None``.

    Reads the environment or a file each time it is called, so a rotated password is picked up
    by the next connection without a reload.
    """
    if creds.password_env is not None:
        return _from_env(creds.password_env, what)
    if creds.password_file is not None:
        return read_secret_file(creds.password_file, f"{what}: password_file")
    if creds.password_credential is not None:
        return _from_credential(creds.password_credential, what)
    if creds.password is not None:
        return creds.password if isinstance(creds.password, Secret) else Secret(creds.password)
    return None


def _from_env(name: str, what: str) -> Secret:
    value = os.environ.get(name)
    if value is None:
        raise CredentialError(f"{what}: password_env: environment variable {name} is not set")
    if not value:
        raise CredentialError(f"{what}: password_env: environment variable {name} is empty")
    return Secret(value)


def _from_credential(name: str, what: str) -> Secret:
    source = f"{what}: password_credential {name!r}"
    if not name or "/" in name or name in (".", ".."):
        raise CredentialError(f"{source}: not a valid credential name")
    directory = os.environ.get(CREDENTIALS_DIRECTORY)
    if not directory:
        raise CredentialError(
            f"{source}: ${CREDENTIALS_DIRECTORY} is not set; systemd sets it for a service with "
            f"LoadCredential={name}:... (or LoadCredentialEncrypted=)"
        )
    return read_secret_file(Path(directory) / name, source)


def read_secret_file(path: Path, source: str) -> Secret:
    """Read a password from ``path``, refusing a file that other users can read.

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
        raw = _read_at_most(fd, MAX_PASSWORD_BYTES + 1)
        if len(raw) > MAX_PASSWORD_BYTES:
            raise CredentialError(f"{source}: {path} is too large to be a password")
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


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(8192, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

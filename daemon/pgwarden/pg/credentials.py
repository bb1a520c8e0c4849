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
``targets[app]``) and the source -- never the password.  Reading an environment variable, a
secret file or a credential follows the rules of :mod:`pgwarden.config.secretfiles` (shared
with the off-site keys of ``storage/``).
"""

from __future__ import annotations

from pgwarden.config import Credentials, Secret
from pgwarden.config.secretfiles import (
    CREDENTIALS_DIRECTORY,
    MAX_SECRET_BYTES,
    credential_path,
    read_env,
    read_secret_file,
)

#: a password file bigger than this is certainly not a password (and is not read into memory)
MAX_PASSWORD_BYTES = MAX_SECRET_BYTES

__all__ = ["CREDENTIALS_DIRECTORY", "read_secret_file", "resolve_password"]


def resolve_password(creds: Credentials, what: str) -> Secret | None:
    """The password for connection ``what`` from its configured source, or ``None``.

    Reads the environment or a file each time it is called, so a rotated password is picked up
    by the next connection without a reload.
    """
    if creds.password_env is not None:
        return read_env(creds.password_env, f"{what}: password_env")
    if creds.password_file is not None:
        return read_secret_file(creds.password_file, f"{what}: password_file")
    if creds.password_credential is not None:
        source = f"{what}: password_credential {creds.password_credential!r}"
        return read_secret_file(credential_path(creds.password_credential, source), source)
    if creds.password is not None:
        return creds.password if isinstance(creds.password, Secret) else Secret(creds.password)
    return None

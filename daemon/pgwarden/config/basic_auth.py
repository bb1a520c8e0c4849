"""The basic-auth keys of ``[metrics]``: bcrypt hashes, Prometheus exporter-toolkit's convention.

``basic_auth_users`` (user -> hash) or its one-user form ``basic_auth_user`` +
``basic_auth_password_hash``.  SHA-crypt (``$5$``, ``$6$``) is refused with how to make a bcrypt
hash: no maintained library verifies it here.  Pure: no I/O; the hash itself is checked again by
:mod:`pgwarden.metrics.auth` with the ``bcrypt`` package.
"""

from __future__ import annotations

import re

from pgwarden.config.model import Secret
from pgwarden.config.reader import SubReader

BCRYPT_HINT = (
    "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'  or: python3 -c 'import bcrypt; "
    'print(bcrypt.hashpw(b"PASSWORD", bcrypt.gensalt()).decode())\''
)
_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")


def bcrypt_hash(r: SubReader, key: str) -> Secret | None:
    """A bcrypt hash (``$2y$``, ``$2b$``, ``$2a$``; exporter-toolkit's convention)."""
    value = r.opt_str(key)
    if value is None:
        return None
    if value.startswith(("$5$", "$6$")):
        r.error(
            key, f"SHA-crypt hashes ($5$, $6$) are no longer accepted: use bcrypt; {BCRYPT_HINT}"
        )
    elif not _BCRYPT.fullmatch(value):
        r.error(key, f"must be a bcrypt hash ($2y$, $2b$ or $2a$, 60 characters); {BCRYPT_HINT}")
    return Secret(value)


def auth_user(r: SubReader, key: str, name: str | None) -> str | None:
    """``name``, reporting one that basic auth cannot carry (``user:password``)."""
    if name is not None and (":" in name or not name.isprintable()):
        r.error(key, f"a user name cannot hold ':' or control characters (got {name!r})")
    return name


def auth_users(r: SubReader) -> dict[str, Secret]:
    """``[metrics.basic_auth_users]``: user name -> bcrypt hash."""
    users = {}
    for name in list(r.data):
        hashed = bcrypt_hash(r, name)
        if auth_user(r, name, name) is not None and hashed is not None:
            users[name] = hashed
    r.finish()
    return users

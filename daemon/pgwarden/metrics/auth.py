"""HTTP basic auth for the metrics listener: bcrypt hashes, the convention of Prometheus's
exporter-toolkit (``basic_auth_users`` = user -> ``$2y$``/``$2b$``/``$2a$`` hash).

Verified with the ``bcrypt`` package.  What an unauthenticated client can make the daemon do is
bounded: the ``Authorization`` header is capped at :data:`MAX_HEADER_BYTES`, a password longer
than bcrypt's 72 bytes fails without hashing, usernames are compared in constant time, and an
unknown user still pays one bcrypt check against a dummy hash (no user enumeration by timing).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

import bcrypt

from pgwarden.config.basic_auth import BCRYPT_HINT

MAX_HEADER_BYTES = 4096
MAX_PASSWORD_BYTES = 72  # bcrypt's limit: the package raises ValueError beyond it
BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


def _cost(hashed: str) -> int:
    try:
        return min(max(int(hashed[4:6]), 4), 31)
    except ValueError:
        return 12


class BasicAuth:
    """HTTP basic auth against ``users`` (name -> bcrypt hash).

    The last accepted header of each user is remembered, so that Prometheus's scrapes do not
    pay bcrypt each time; a new :class:`BasicAuth` (a reload) forgets them.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        if not users:
            raise ValueError("basic auth needs at least one user")
        self._users: list[tuple[bytes, bytes]] = []
        for name, hashed in users.items():
            if not hashed.startswith(BCRYPT_PREFIXES):
                raise ValueError(
                    f"the hash of user {name!r} is not a bcrypt hash ($2y$, $2b$ or $2a$); "
                    + BCRYPT_HINT
                )
            encoded = hashed.encode("ascii", "replace")
            try:
                bcrypt.checkpw(b"", encoded)  # a malformed hash fails now, not at a scrape
            except ValueError as exc:
                raise ValueError(f"the hash of user {name!r} is malformed; {BCRYPT_HINT}") from exc
            self._users.append((name.encode(), encoded))
        cost = max(_cost(hashed) for hashed in users.values())
        self._dummy = bcrypt.hashpw(b"pgwarden-no-such-user", bcrypt.gensalt(rounds=cost))
        self._accepted: dict[bytes, bytes] = {}

    def check(self, header: str | None) -> bool:
        """True if an ``Authorization`` header carries a known user and its password."""
        if not header or len(header) > MAX_HEADER_BYTES or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep or len(password) > MAX_PASSWORD_BYTES:
            return False
        hashed = None
        for name, candidate in self._users:  # every name compared: no early exit
            if hmac.compare_digest(user, name):
                hashed = candidate
        raw = header.encode("latin-1", "replace")
        remembered = self._accepted.get(user) if hashed is not None else None
        if remembered is not None and hmac.compare_digest(raw, remembered):
            return True
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        except ValueError:  # a NUL byte, for one
            return False
        if ok and hashed is not None:
            self._accepted[user] = raw
            return True
        return False

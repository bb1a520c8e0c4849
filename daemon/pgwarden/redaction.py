"""Secrets kept out of text and data: the one home of pgwarden's redaction.

* :class:`Secret` -- a ``str`` whose ``str()``/``repr()`` show ``***`` (``reveal()`` gives the
  value); configured passwords and resolved credentials are Secrets.
* :func:`redact` -- free text (tool stderr, error messages, anything echoing a DSN): the *value*
  of anything that looks like a password assignment and the password in URI user info become
  ``***``, the rest stays readable.  Every tool stderr line (:mod:`pgwarden.pg.process`) and
  every log line (:mod:`pgwarden.logsetup`) goes through it.
* :func:`redact_dsn` -- a conninfo or URI without its secret parameters (``config show``,
  ``ConnSpec.redacted``).
* :func:`redact_value` -- a result for the control socket: JSON-safe, with secrets hidden by
  type (:class:`Secret`), by key (:data:`SECRET_KEYS`) and in strings (:func:`redact`).
* :func:`redact_fields` -- the same for a structlog event dict, values otherwise left as they
  are (the renderer formats them).
* :func:`scrubber_for` -- hides known literal secrets (as typed and URL-encoded), for text a
  pattern cannot recognise (what an application's ``alembic`` prints).

Importing this module stays cheap (no psycopg): the CLI's ctl client loads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

#: what a hidden value is replaced with
REDACTED = "***"
#: keys (of log events, socket answers, mappings within them) whose values are never shown;
#: compared in lower case
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "pgpassword",
        "basic_auth_password_hash",
        "basic_auth_users",
        "dsn_password",
    }
)
#: conninfo keywords whose values are secrets: never logged, never given to a tool's argv
DSN_SECRET_PARAMS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
INVALID_DSN = "<invalid dsn>"

_INLINE_SECRET = re.compile(
    r"(?i)\b(\w*passw(?:or)?d|\w*secret)([ \t]*[=:][ \t]*)"
    r"('(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?|[^\s'\"]\S*)"
)
_URI_SECRET = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@]*)(@)")

__all__ = [
    "DSN_SECRET_PARAMS",
    "REDACTED",
    "SECRET_KEYS",
    "Secret",
    "is_secret_key",
    "redact",
    "redact_dsn",
    "redact_fields",
    "redact_value",
    "scrubber_for",
]


class Secret(str):
    """A string whose ``repr`` and ``str`` never show its value (use ``reveal()``)."""

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return REDACTED


def redact(text: str) -> str:
    """``text`` with inline passwords replaced by ``***`` (a :class:`Secret`: all of it).

    Covers conninfo (``password=x``, ``password='a b'``), ``PGPASSWORD=x``, ``sslpassword=x``,
    ``oauth_client_secret=x``, ``password: x`` and URI user info
    (``postgresql://user:x@host``).
    """
    if isinstance(text, Secret):
        return REDACTED
    text = _INLINE_SECRET.sub(r"\1\2***", text)
    return _URI_SECRET.sub(r"\1***\3", text)


def redact_dsn(dsn: str) -> str:
    """``dsn`` (conninfo or URI) without its secret parameters (:data:`DSN_SECRET_PARAMS`),
    safe to show or log: unchanged when it has none, else rebuilt as a conninfo;
    :data:`INVALID_DSN` when it cannot be parsed (libpq's message would quote it)."""
    # lazy import: psycopg costs the ctl client 0.15 s (measured) and it never redacts a DSN
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return INVALID_DSN
    if not DSN_SECRET_PARAMS.intersection(params):
        return dsn
    kept = {k: str(v) for k, v in params.items() if k not in DSN_SECRET_PARAMS and v is not None}
    return make_conninfo("", **kept)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (``password``, ``Token``...)."""
    return str(key).lower() in SECRET_KEYS


def redact_value(value: Any) -> Any:
    """``value`` as plain JSON values with every secret hidden: the control socket's answers.

    A :class:`Secret` becomes ``***`` (``json`` would print a ``str`` subclass as its raw
    value), so does the value of a key named like a secret; strings go through
    :func:`redact`.  Mappings become dicts with string keys, sequences and sets lists,
    datetimes ISO 8601, paths strings, non-finite floats ``None``, anything else its redacted
    ``str()``.
    """
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): REDACTED if is_secret_key(k) else redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return redact(str(value))


def redact_fields(fields: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Hide the secrets of a log event in place and return it: the value of a secret key, a
    :class:`Secret`, inline passwords in strings, also inside dicts, lists and tuples; other
    values are left for the renderer."""
    for key in list(fields):
        fields[key] = REDACTED if is_secret_key(key) else _redact_leaves(fields[key])
    return fields


def _redact_leaves(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)  # a Secret included
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else _redact_leaves(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_leaves(v) for v in value]
    return value


def scrubber_for(secrets: Iterable[str | None]) -> Callable[[str], str]:
    """A function hiding each of ``secrets`` -- as typed, ``quote``d and ``quote_plus``ed (as
    they appear in a URL) -- then applying :func:`redact`.  ``None`` and empty ones are
    skipped; a :class:`Secret` is matched by its value."""
    forms: set[str] = set()
    for secret in secrets:
        plain = secret.reveal() if isinstance(secret, Secret) else secret
        if plain:
            forms |= {plain, quote(plain, safe=""), quote_plus(plain)}
    ordered = sorted(forms, key=len, reverse=True)  # a longer form may contain a shorter one

    def scrub(text: str) -> str:
        for form in ordered:
            text = text.replace(form, REDACTED)
        return redact(text)

    return scrub

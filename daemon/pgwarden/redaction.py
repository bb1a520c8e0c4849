"""Scrubbing secrets out of free text (tool stderr, error messages, anything echoing a DSN).

:func:`redact` replaces the *value* of anything that looks like a password assignment and the
password in URI user info, keeping the rest readable.  Every tool stderr line
(:mod:`pgwarden.pg.process`) and every log line (:mod:`pgwarden.logsetup`) goes through it.
"""

from __future__ import annotations

import re

_INLINE_SECRET = re.compile(
    r"(?i)\b(\w*passw(?:or)?d|\w*secret)([ \t]*[=:][ \t]*)"
    r"('(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?|[^\s'\"]\S*)"
)
_URI_SECRET = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@]*)(@)")

__all__ = ["redact"]


def redact(text: str) -> str:
    """``text`` with inline passwords replaced by ``***``.

    Covers conninfo (``password=x``, ``password='a b'``), ``PGPASSWORD=x``, ``sslpassword=x``,
    ``oauth_client_secret=x``, ``password: x`` and URI user info
    (``postgresql://user:x@host``).
    """
    text = _INLINE_SECRET.sub(r"\1\2***", text)
    return _URI_SECRET.sub(r"\1***\3", text)

"""The control socket's last line of defence against secrets, applied to every answer.

:func:`redact` turns a result into plain JSON values and hides on the way: a
:class:`~pgwarden.config.Secret` (``json`` would print a ``str`` subclass as its raw value),
the value of any key named like a secret (``password``, ``token``...), and inline passwords in
strings (``password=...``, ``postgresql://user:pw@host``).  Datetimes become ISO 8601, paths
strings, non-finite floats ``null``.  Handlers never return secrets in the first place; this
catches the one that slips.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pgwarden.config import Secret
from pgwarden.logsetup import SECRET_KEYS, scrub


def redact(value: Any) -> Any:
    """``value`` made JSON-safe with every secret hidden (see the module docstring)."""
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {
            str(k): "***" if str(k).lower() in SECRET_KEYS else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return scrub(str(value))

"""The one rule for target names, shared by config validation and storage.

A target name is one directory under the backup path and appears in file names, metrics
labels and log lines: ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` (so never ``.``, ``..``, a hidden name
or one that reads as an option, ``-x``).  The config allows 63 characters (a PostgreSQL
identifier); storage accepts up to 200 for directories it finds.
"""

from __future__ import annotations

import re

TARGET_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
CONFIG_NAME_MAX = 63
STORAGE_NAME_MAX = 200


def target_name_problem(name: str, limit: int = CONFIG_NAME_MAX) -> str | None:
    """Why ``name`` cannot be a target name, or ``None`` when it can."""
    if not TARGET_NAME_RE.fullmatch(name) or name in {".", ".."}:
        return (
            "must start with a letter, digit or '_', then letters, digits, '_', '.' or '-'"
            f" (got {name!r})"
        )
    if len(name) > limit:
        return f"must be at most {limit} characters (got {len(name)})"
    return None


#: a whole-server target's database is the sub-target ``<target>/<database>`` (one directory
#: per database under the target's, the database name following the same rule)
SUB_TARGET_SEP = "/"

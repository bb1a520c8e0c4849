"""The kinds of job the daemon runs, declared once.

:class:`JobKind` is a :class:`enum.StrEnum`, so a kind is also its plain name everywhere a
string is expected (JSON answers, metric labels, the catalog).  It lives in ``config/`` because
that is the lowest layer every user can import: the config names schedules per kind, and the
scheduler, the metrics, the control socket and the service all speak of kinds.  The order of
the members is the order in which schedules due at the same moment are started.
"""

from __future__ import annotations

import enum


class JobKind(enum.StrEnum):
    BACKUP = "backup"
    VERIFY = "verify"
    PRUNE = "prune"
    OFFSITE = "offsite"

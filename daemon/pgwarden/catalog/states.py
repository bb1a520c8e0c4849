"""The states the catalog records, declared once: :class:`BackupStatus` of a backup attempt
and :class:`DrillStatus` of a restore drill, :class:`CopyState` of an off-site copy.

Both are :class:`enum.StrEnum`: a member is its value as a string, so the catalog's columns,
the manifests, the JSON of the socket and of the CLI hold the same text as before
(``"complete"``).  The tuples below are derived from them; the schema's CHECK constraints
(:mod:`~pgwarden.catalog.models`) list the members in declaration order.  ``metrics/`` sits
beside ``catalog/`` and does not import it: its label values are its own.
"""

from __future__ import annotations

import enum
from typing import Final


class BackupStatus(enum.StrEnum):
    """Where a backup attempt stands (``backups.status``)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    #: removed from storage by retention or an operator; the row stays as history
    DELETED = "deleted"


class DrillStatus(enum.StrEnum):
    """Where a restore drill stands (``verifications.status``); a finished drill's verdict,
    ``passed`` or ``failed``, is also its backup's ``verify_status``."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class CopyState(enum.StrEnum):
    """Where an off-site copy of a backup on one destination stands (``offsite_copies.state``);
    ``confirmed`` only once its object and its manifest are both stored."""

    UPLOADING = "uploading"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    DELETED = "deleted"


BACKUP_STATUSES: Final = tuple(BackupStatus)
#: outcomes a finished backup attempt can record
FINISH_STATUSES: Final = (BackupStatus.COMPLETE, BackupStatus.FAILED, BackupStatus.INTERRUPTED)
#: every status but ``deleted``: attempts that may still have files in storage
LIVE_STATUSES: Final = (BackupStatus.RUNNING, *FINISH_STATUSES)
VERIFICATION_STATUSES: Final = tuple(DrillStatus)
COPY_STATES: Final = tuple(CopyState)
#: how a drill can end
DRILL_ENDINGS: Final = (DrillStatus.PASSED, DrillStatus.FAILED, DrillStatus.INTERRUPTED)
#: the verdicts a drill leaves on its backup (``backups.verify_status``)
VERIFY_STATUSES: Final = (DrillStatus.PASSED, DrillStatus.FAILED)

"""Retention planning: which backups of one target to keep, which to delete, and why.

This module owns the retention *rules* and nothing else: :func:`plan` is a pure function (no
I/O, no clock, no randomness) from the backups' catalog facts, the target's
:class:`~pgwarden.config.RetentionSettings` and "now" to a :class:`Plan` that gives every
backup one decision, ``keep`` or ``delete``, with a human reason and the machine-readable
names of the rules behind it.  Applying a plan (locks, files, catalog) is
:mod:`pgwarden.backup.prune`'s job.

Rules (DESIGN.md, "Retention").  A *complete* backup is kept when at least one holds:

- ``pinned``: pinned by an operator (``pgwarden pin``); any status, never deleted;
- ``newest_verified``: it is the newest complete backup whose restore drill passed;
- ``min_keep``: it is one of the ``min_keep`` newest complete backups, whatever their age, so
  that a week of failed dumps never empties the store;
- ``keep_days``: it started less than ``keep_days`` days before now (or after now);
- ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` (grandfather-father-son): it is the
  newest complete backup of its UTC day / ISO week / month, for the N most recent such periods
  *that have a complete backup* (as borg and restic count them: an outage does not use up
  periods);
- ``pre_migration``: it is tagged ``pre-migration`` and younger than ``max(7, keep_days)``
  days.

Every other complete backup is deleted.  Runs that did not complete:

- ``failed``: deleted at once (the row is marked deleted, anything left on disk removed);
- ``interrupted``: deleted once older than :data:`INTERRUPTED_GRACE` -- start-up marks every
  ``running`` row interrupted, including a one-shot ``pgwarden backup`` that may still be
  writing beside a restarted daemon;
- ``running``: kept (a job is writing it);
- ``deleted``: not planned at all (nothing is left to touch);
- any other status: kept (fail safe).

Ordering is by ``(started_at, id)``, so the plan does not depend on the order of the input,
and applying a plan then planning again deletes nothing more (property-tested).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

from pgwarden.config import RetentionSettings

Action = Literal["keep", "delete"]
KEEP: Final = "keep"
DELETE: Final = "delete"

PRE_MIGRATION_TAG: Final = "pre-migration"
#: ``pre-migration`` backups live at least this long, whatever ``keep_days`` says
PRE_MIGRATION_MIN_DAYS: Final = 7
#: an interrupted run younger than this may be a one-shot backup still finishing
INTERRUPTED_GRACE: Final = timedelta(hours=24)

# rule names (``Decision.rules``)
PINNED: Final = "pinned"
NEWEST_VERIFIED: Final = "newest_verified"
MIN_KEEP: Final = "min_keep"
KEEP_DAYS: Final = "keep_days"
KEEP_DAILY: Final = "keep_daily"
KEEP_WEEKLY: Final = "keep_weekly"
KEEP_MONTHLY: Final = "keep_monthly"
PRE_MIGRATION: Final = "pre_migration"
RUNNING: Final = "running"
RECENTLY_INTERRUPTED: Final = "recently_interrupted"
UNKNOWN_STATUS: Final = "unknown_status"
EXPIRED: Final = "expired"
FAILED_RUN: Final = "failed_run"
INTERRUPTED_RUN: Final = "interrupted_run"


class BackupLike(Protocol):
    """What the planner reads of a backup (:class:`~pgwarden.catalog.BackupRecord` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def status(self) -> str: ...
    @property
    def tags(self) -> Collection[str]: ...
    @property
    def pinned(self) -> bool: ...
    @property
    def verify_status(self) -> str | None: ...
    @property
    def verified_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """Keep or delete one backup; ``reason`` is for people, ``rules`` for programs."""

    backup_id: str
    action: Action
    reason: str
    rules: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return self.action == KEEP


@dataclass(frozen=True)
class Plan:
    """One decision per backup that is not already deleted, newest first."""

    policy: RetentionSettings
    now: datetime
    decisions: tuple[Decision, ...]
    _by_id: dict[str, Decision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {d.backup_id: d for d in self.decisions})

    def decision(self, backup_id: str) -> Decision:
        """The decision about ``backup_id`` (``KeyError`` if it was not planned)."""
        return self._by_id[backup_id]

    def __contains__(self, backup_id: object) -> bool:
        return backup_id in self._by_id

    @property
    def keep_ids(self) -> frozenset[str]:
        return frozenset(d.backup_id for d in self.decisions if d.action == KEEP)

    @property
    def delete_ids(self) -> frozenset[str]:
        return frozenset(d.backup_id for d in self.decisions if d.action == DELETE)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


def _week(when: datetime) -> str:
    iso = when.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _month(when: datetime) -> str:
    return when.strftime("%Y-%m")


def _age(now: datetime, when: datetime) -> str:
    days = (now - when).total_seconds() / 86400
    if days < 0:
        return "started after now"
    return f"{days:.1f} days old"


class _Reasons:
    """Keep reasons collected per backup id, in rule order."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[tuple[str, str]]] = {}

    def add(self, backup_id: str, rule: str, text: str) -> None:
        self.by_id.setdefault(backup_id, []).append((rule, text))


def _periods(
    reasons: _Reasons,
    complete: Sequence[BackupLike],
    *,
    count: int,
    key: Callable[[datetime], str],
    rule: str,
    noun: str,
) -> None:
    """Keep the newest backup of each of the ``count`` most recent periods with a backup."""
    if count <= 0:
        return
    seen: set[str] = set()
    for backup in complete:  # newest first: the first of each period is its newest
        period = key(backup.started_at.astimezone(UTC))
        if period in seen:
            continue
        if len(seen) == count:
            break
        seen.add(period)
        reasons.add(backup.id, rule, f"newest of {noun} {period} ({rule}={count})")


def _sorted_newest_first(backups: Iterable[BackupLike]) -> list[BackupLike]:
    live = [b for b in backups if b.status != "deleted"]
    live.sort(key=lambda b: (b.started_at, b.id), reverse=True)
    return live


def plan(backups: Sequence[BackupLike], policy: RetentionSettings, now: datetime) -> Plan:
    """Decide keep or delete for every backup that is not already deleted (see the module
    docstring for the rules).  Pure and deterministic; ``now`` must be timezone-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (got {now!r})")
    ordered = _sorted_newest_first(backups)
    complete = [b for b in ordered if b.status == "complete"]
    reasons = _Reasons()

    for backup in ordered:
        if backup.pinned:
            reasons.add(backup.id, PINNED, "pinned (pgwarden unpin releases it)")
    for backup in complete:
        if backup.verify_status == "passed":
            drilled = f" on {_day(backup.verified_at)}" if backup.verified_at else ""
            reasons.add(backup.id, NEWEST_VERIFIED,
                        f"newest verified backup (restore drill passed{drilled})")  # fmt: skip
            break
    for backup in complete[: policy.min_keep]:
        reasons.add(backup.id, MIN_KEEP,
                    f"one of the {policy.min_keep} newest complete backups (min_keep)")  # fmt: skip
    cutoff = now - timedelta(days=policy.keep_days)
    for backup in complete:
        if backup.started_at < cutoff:
            break
        age = _age(now, backup.started_at)
        reasons.add(backup.id, KEEP_DAYS, f"within keep_days={policy.keep_days} ({age})")
    _periods(reasons, complete, count=policy.keep_daily, key=_day, rule=KEEP_DAILY, noun="day")
    _periods(reasons, complete, count=policy.keep_weekly, key=_week, rule=KEEP_WEEKLY,
             noun="week")  # fmt: skip
    _periods(reasons, complete, count=policy.keep_monthly, key=_month, rule=KEEP_MONTHLY,
             noun="month")  # fmt: skip
    migration_days = max(PRE_MIGRATION_MIN_DAYS, policy.keep_days)
    migration_cutoff = now - timedelta(days=migration_days)
    for backup in complete:
        if PRE_MIGRATION_TAG in backup.tags and backup.started_at >= migration_cutoff:
            until = _day((backup.started_at + timedelta(days=migration_days)).astimezone(UTC))
            text = f"pre-migration backup, kept {migration_days} days (until {until})"
            reasons.add(backup.id, PRE_MIGRATION, text)

    decisions = [_decide(backup, reasons.by_id.get(backup.id), policy, now) for backup in ordered]
    return Plan(policy=policy, now=now, decisions=tuple(decisions))


def _decide(
    backup: BackupLike, kept_by: list[tuple[str, str]] | None, policy: RetentionSettings,
    now: datetime,
) -> Decision:  # fmt: skip
    if kept_by:
        return Decision(backup.id, KEEP, "; ".join(text for _, text in kept_by),
                        tuple(rule for rule, _ in kept_by))  # fmt: skip
    status = backup.status
    if status == "complete":
        return Decision(
            backup.id, DELETE,
            f"expired: {_age(now, backup.started_at)} (keep_days={policy.keep_days}), not "
            f"among the {policy.min_keep} newest, no other rule keeps it",
            (EXPIRED,),
        )  # fmt: skip
    if status == "failed":
        return Decision(backup.id, DELETE, "failed run: no backup to keep; leftovers removed",
                        (FAILED_RUN,))  # fmt: skip
    if status == "interrupted":
        if now - backup.started_at < INTERRUPTED_GRACE:
            return Decision(backup.id, KEEP,
                            "interrupted less than 24 h ago: it may still be finishing",
                            (RECENTLY_INTERRUPTED,))  # fmt: skip
        return Decision(backup.id, DELETE,
                        "interrupted run: no backup to keep; leftovers removed",
                        (INTERRUPTED_RUN,))  # fmt: skip
    if status == "running":
        return Decision(backup.id, KEEP, "running: a backup job is writing it", (RUNNING,))
    return Decision(backup.id, KEEP, f"unknown status {status!r}: left alone", (UNKNOWN_STATUS,))

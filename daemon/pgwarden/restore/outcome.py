"""What a restore drill reports: one :class:`CheckResult` per step and check, the
:class:`VerifyOutcome` of the drill, and the errors a drill raises.  Both results are frozen:
a check collects its mismatches in :class:`Failures` and is built once it has run; the drill
collects its checks in a draft (:mod:`~pgwarden.restore.drill`) and builds its outcome at the
end.

A step that cannot go on (checksum, archive, connection, scratch database...) raises
:class:`StepError`; the drill turns it into a failed :class:`CheckResult` and stops.  Data
checks (row counts, extensions, SQL checks, vector probes) never raise: each reports what it
expected and what it found.  :class:`DrillFailed` carries a failed outcome out of
``run_verification`` so that a daemon job ends as failed, with the outcome attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgwarden.catalog import DrillStatus
from pgwarden.errors import PgwardenError, VerificationFailed

#: the step name of a restore cancelled by its stall watch (:mod:`pgwarden.pg.stallwatch`)
STALLED = "stalled"
#: how many individual mismatches a check keeps (the count of the others is kept too)
MAX_FAILURES = 50


class StepError(PgwardenError):
    """A drill step failed; ``step`` names it (``checksum``, ``archive``, ``restore``...)."""

    code = "verification_failed"

    def __init__(
        self, step: str, message: str, *, expected: object = None, actual: object = None
    ) -> None:
        self.step = step
        self.message = message
        self.expected = expected
        self.actual = actual
        super().__init__(f"{step}: {message}")


@dataclass(frozen=True)
class CheckResult:
    """One step or check of a drill.  ``failures`` lists the items that did not hold, each
    ``{"item": ..., "expected": ..., "actual": ...}`` (collected by :class:`Failures`)."""

    name: str
    passed: bool
    detail: str = ""
    duration_s: float = 0.0
    expected: Any = None
    actual: Any = None
    failures: tuple[dict[str, Any], ...] = ()
    more_failures: int = 0

    def summary(self) -> str:
        """One line naming what failed: ``row_counts: public.users: expected 1000, got 0``."""
        if self.failures:
            first = self.failures[0]
            text = (
                f"{self.name}: {first['item']}: expected {first['expected']!r}, "
                f"got {first['actual']!r}"
            )
            others = len(self.failures) - 1 + self.more_failures
            return text + (f" (and {others} more)" if others else "")
        return f"{self.name}: {self.detail}" if self.detail else self.name

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }
        if self.expected is not None or self.actual is not None:
            data["expected"], data["actual"] = self.expected, self.actual
        if self.failures:
            data["failures"] = list(self.failures)
        if self.more_failures:
            data["more_failures"] = self.more_failures
        return data


@dataclass
class Failures:
    """The items a check found wrong, while it runs: the first :data:`MAX_FAILURES` kept
    (``{"item": ..., "expected": ..., "actual": ...}``), the others counted."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    more: int = 0

    def add(self, item: str, expected: object, actual: object) -> None:
        if len(self.kept) < MAX_FAILURES:
            self.kept.append({"item": item, "expected": expected, "actual": actual})
        else:
            self.more += 1

    def __len__(self) -> int:
        return len(self.kept) + self.more

    def result(self, name: str, detail: str, duration_s: float) -> CheckResult:
        """The check's result: passed when nothing was added."""
        return CheckResult(
            name,
            len(self) == 0,
            detail,
            duration_s,
            failures=tuple(self.kept),
            more_failures=self.more,
        )


@dataclass(frozen=True)
class VerifyOutcome:
    """The result of one drill (and of the random older drills run with it)."""

    backup_id: str
    target: str
    artifact: str
    status: DrillStatus  # passed, failed or interrupted: a finished drill
    started_at: datetime
    finished_at: datetime
    duration_s: float
    checks: tuple[CheckResult, ...]
    server: str = ""
    scratch_database: str | None = None
    jobs: int = 1
    restore_mode: str = ""
    notes: tuple[str, ...] = ()
    older: tuple[VerifyOutcome, ...] = ()

    @property
    def own_passed(self) -> bool:
        return self.status == DrillStatus.PASSED

    @property
    def passed(self) -> bool:
        """This drill and every older drill run with it passed."""
        return self.own_passed and all(o.passed for o in self.older)

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def stalled(self) -> bool:
        """This drill, or an older one run with it, was cancelled for making no progress."""
        return any(c.name == STALLED for c in self.checks) or any(o.stalled for o in self.older)

    @property
    def error(self) -> str | None:
        """The first failure, one line (``None`` when the drill passed)."""
        if self.own_passed:
            return None
        failed = self.failed_checks
        if failed:
            return failed[0].summary()
        interrupted = self.status == DrillStatus.INTERRUPTED
        return str(DrillStatus.INTERRUPTED if interrupted else DrillStatus.FAILED)

    def as_dict(self, *, include_older: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backup_id": self.backup_id,
            "target": self.target,
            "artifact": self.artifact,
            "passed": self.passed if include_older else self.own_passed,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "server": self.server,
            "scratch_database": self.scratch_database,
            "jobs": self.jobs,
            "restore_mode": self.restore_mode,
            "error": self.error,
            "notes": list(self.notes),
            "checks": [c.as_dict() for c in self.checks],
        }
        if include_older and self.older:
            data["older"] = [o.as_dict() for o in self.older]
        return data


class DrillFailed(VerificationFailed):
    """A drill ran and did not pass; ``outcome`` holds every check's result."""

    def __init__(self, outcome: VerifyOutcome) -> None:
        self.outcome = outcome
        failing = next((o for o in [outcome, *outcome.older] if not o.own_passed), outcome)
        first = failing.failed_checks[0] if failing.failed_checks else None
        item = first.failures[0] if first and first.failures else None
        self.check = first.name if first else failing.status
        self.expected = (
            item["expected"] if item else (first.expected if first else DrillStatus.PASSED)
        )
        self.actual = item["actual"] if item else (first.actual if first else failing.status)
        # VerificationFailed's "expected X, got Y" form does not fit a whole drill
        PgwardenError.__init__(
            self, f"restore drill of backup {failing.backup_id[:8]} failed: {failing.error}"
        )

"""Cron expressions: validation and next-fire computation on top of ``cronsim``.

pgwarden does not parse cron itself.  This module adds the ``@hourly``-style aliases,
turns cronsim's errors into one sentence, and computes fire times in wall-clock time of a
configured timezone (DST-aware: a time skipped by a spring-forward fires at the first
existing minute after it, a repeated hour fires once).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def expand(expression: str) -> str:
    """Return the five-field form of ``expression`` (aliases expanded)."""
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


def problem(expression: str, tz: str = "UTC") -> str | None:
    """Why ``expression`` is not a usable schedule, or ``None`` when it is."""
    text = expand(expression)
    if len(text.split()) != 5:
        return (
            f"a cron expression has five fields (minute hour day month weekday), got {expression!r}"
        )
    try:
        zone = ZoneInfo(tz)
        start = datetime(2000, 1, 1, tzinfo=zone)
        next(iter(CronSim(text, start)))
    except CronSimError as exc:
        return f"invalid cron expression {expression!r}: {exc}"
    except StopIteration:
        return f"cron expression {expression!r} never fires"
    except Exception as exc:  # noqa: BLE001 - cronsim raises ValueError variants on odd input
        return f"invalid cron expression {expression!r}: {exc}"
    return None


def next_fire(expression: str, after: datetime, tz: str = "UTC") -> datetime:
    """The first fire time strictly after ``after`` (aware), returned in ``tz``."""
    if after.tzinfo is None:
        raise ValueError("next_fire needs an aware datetime")
    zone = ZoneInfo(tz)
    local = after.astimezone(zone)
    # cronsim matches from the start minute inclusive; cron fires on whole minutes.
    start = local.replace(second=0, microsecond=0)
    for candidate in CronSim(expand(expression), start):
        result: datetime = candidate
        if result > local:
            return result
    raise ValueError(f"cron expression {expression!r} never fires")

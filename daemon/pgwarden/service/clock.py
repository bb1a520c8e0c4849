"""Time sources for the scheduler: the real clock, and a fake one tests can move.

Wall-clock (aware UTC) for cron fire times, monotonic for sleeping and durations.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is not None:
            wake.wait(max(0.0, seconds))
        else:
            time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to (``advance``) or when slept on."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        self.advance(max(0.0, seconds))

"""Which schedules are paused: all of them, or some targets by name.

``pause`` stops schedules only (maintenance windows); a manual job still runs.  Pauses live in
memory and end with the process.  Control connections (one thread each) and the main loop
read and change them at once, so every access holds the lock and readers get an immutable
:class:`~pgwarden.control.api.PauseState`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pgwarden.control.api import PauseState


class Pauses:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = False
        self._targets: set[str] = set()

    def state(self) -> PauseState:
        with self._lock:
            return PauseState(self._all, frozenset(self._targets))

    def is_paused(self, target: str) -> bool:
        with self._lock:
            return self._all or target in self._targets

    def pause(self, target: str | None) -> PauseState:
        """Pause one target's schedules, or every target's (``None``)."""
        with self._lock:
            if target is None:
                self._all = True
            else:
                self._targets.add(target)
            return PauseState(self._all, frozenset(self._targets))

    def resume(self, target: str | None, every: Iterable[str]) -> PauseState:
        """Resume one target, or all (``None``).  Resuming one while all are paused keeps
        the others (``every`` names them) paused, by name."""
        with self._lock:
            if target is None:
                self._all = False
                self._targets.clear()
            else:
                if self._all:
                    self._targets.update(every)
                    self._all = False
                self._targets.discard(target)
            return PauseState(self._all, frozenset(self._targets))

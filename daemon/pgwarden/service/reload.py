"""Reload requests from other threads, answered by the main loop.

``SIGHUP`` sets a flag (a signal handler takes no lock); a control connection instead calls
:meth:`ReloadRequests.ask`, which files a request, wakes the main loop and waits for the
:class:`~pgwarden.control.api.ReloadResult` of the reload that served it.  The main loop takes
every pending request (:meth:`take`) *before* it reads the file, so a request filed while a
reload runs is served by the next one: it always sees the file as it was when it asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pgwarden.control.api import ReloadResult


class _Request:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ReloadResult | None = None


class ReloadRequests:
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._pending: list[_Request] = []

    def ask(self, timeout: float) -> ReloadResult | None:
        """File a request and wait for its answer; ``None`` if none came within ``timeout``."""
        request = _Request()
        with self._lock:
            self._pending.append(request)
        self._wake()
        request.done.wait(timeout)
        return request.result

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def take(self) -> list[_Request]:
        """Every request filed so far (the reload about to run answers them)."""
        with self._lock:
            taken, self._pending = self._pending, []
            return taken

    @staticmethod
    def answer(requests: list[_Request], result: ReloadResult) -> None:
        for request in requests:
            request.result = result
            request.done.set()

"""The delivery queue and its thread: notifications never block or fail a job.

:meth:`Dispatcher.emit` only puts one item per interested destination on a bounded queue
(:data:`QUEUE_SIZE`) and returns at once; a full queue drops the item and counts it
(``result="dropped"``).  One named thread (``notify``) takes items in order and sends each
with up to ``retries`` tries, waiting :data:`BACKOFF` seconds between them (doubling), for the
errors a retry may cure (network, timeout, 5xx, 429); then counts ``sent`` or ``failed`` and
records the result for ``pgwarden check`` (:mod:`.status`).  A reload hands the new
destinations to :meth:`Dispatcher.configure`: queued items keep the destination they were
queued for.  :meth:`Dispatcher.close` stops taking events, lets the thread flush what is queued
for a short while (:data:`FLUSH_TIMEOUT`), and abandons the rest (counted as dropped): a
receiver that does not answer never holds up a shutdown.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgwarden import logsetup
from pgwarden.config.notify import NotifyConfig
from pgwarden.errors import describe_unexpected
from pgwarden.metrics.notify import NotifyMetrics
from pgwarden.notify.events import Event
from pgwarden.notify.send import DeliveryError, deliver
from pgwarden.notify.status import Delivery, write_status

log = logsetup.get_logger("pgwarden.notify")

QUEUE_SIZE = 1000
BACKOFF = 2.0  # seconds before the second try; doubled before each next one
FLUSH_TIMEOUT = 5.0  # seconds the thread may go on delivering after close()

Deliver = Callable[[NotifyConfig, Event], None]


@dataclass(frozen=True)
class _Item:
    destination: NotifyConfig
    event: Event


class Dispatcher:
    """Queues events for the destinations that want them; one thread delivers them."""

    def __init__(
        self,
        destinations: Iterable[NotifyConfig],
        metrics: NotifyMetrics,
        status_file: Path | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
        backoff: float = BACKOFF,
        send: Deliver = deliver,
    ) -> None:
        self._metrics = metrics
        self._status_file = status_file
        self._backoff = backoff
        self._send = send
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._destinations: tuple[NotifyConfig, ...] = ()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self.thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self.configure(tuple(destinations))

    @property
    def destinations(self) -> tuple[NotifyConfig, ...]:
        with self._lock:
            return self._destinations

    def configure(self, destinations: tuple[NotifyConfig, ...]) -> None:
        """Put new destinations in force (a reload); removed ones lose their series."""
        with self._lock:
            old, self._destinations = self._destinations, destinations
        names = {d.name for d in destinations}
        for gone in {d.name for d in old} - names:
            self._metrics.forget(gone)
        for name in names:
            self._metrics.init(name)

    def start(self) -> None:
        self.thread.start()

    def emit(self, event: Event) -> None:
        """Queue ``event`` for every destination that wants it; never blocks."""
        if self._closing.is_set():
            return
        for dest in self.destinations:
            if dest.wants(event.event, event.target):
                self.offer(dest, event)

    def offer(self, dest: NotifyConfig, event: Event) -> bool:
        """Queue ``event`` for ``dest`` alone (``notify test``); False if it was dropped."""
        try:
            self._queue.put_nowait(_Item(dest, event))
        except queue.Full:
            self._metrics.count(dest.name, "dropped")
            log.warning(
                "notification dropped: the delivery queue is full",
                destination=dest.name,
                notify_event=event.event,
            )
            return False
        return True

    def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Stop taking events; deliver what is queued within ``timeout``; True if all was."""
        self._closing.set()
        if not self.thread.is_alive():
            return self._queue.empty()
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # full: the deadline stops the flush
            self._queue.put(None, timeout=timeout)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if not self.thread.is_alive():
            return True
        self._abandon.set()  # the thread ends after its current request (bounded by timeout)
        left = self._drain()
        log.warning("notifications abandoned at shutdown", count=left)
        return False

    def _drain(self) -> int:
        count = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return count
            if item is not None:
                self._metrics.count(item.destination.name, "dropped")
                count += 1

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._abandon.is_set():
            item = self._queue.get()
            if item is None:
                return
            try:
                self._deliver(item)
            except Exception as exc:  # noqa: BLE001 - the thread must survive any one delivery
                log.error(
                    "notification failed unexpectedly",
                    destination=item.destination.name,
                    error=describe_unexpected(exc),
                )
                self._finish(item, describe_unexpected(exc))

    def send_now(self, dest: NotifyConfig, event: Event) -> str | None:
        """Deliver in the calling thread (a one-shot command), with the same retries, metric
        and status record; the error, or None when it was delivered."""
        item = _Item(dest, event)
        error = self._attempts(item)
        self._finish(item, error)
        return error

    def _deliver(self, item: _Item) -> None:
        self._finish(item, self._attempts(item))

    def _attempts(self, item: _Item) -> str | None:
        """Up to ``retries`` tries; the last error, or None once one succeeded."""
        dest = item.destination
        wait, last = self._backoff, ""
        for attempt in range(1, dest.retries + 1):
            try:
                self._send(dest, item.event)
            except DeliveryError as exc:
                last = str(exc)
                if not exc.retry or attempt == dest.retries or self._abandon.wait(wait):
                    break
                log.info(
                    "notification failed, retrying",
                    destination=dest.name,
                    attempt=attempt,
                    error=last,
                )
                wait *= 2
            else:
                return None
        return last

    def _finish(self, item: _Item, error: str | None) -> None:
        name = item.destination.name
        self._metrics.count(name, "sent" if error is None else "failed")
        if error is None:
            log.info("notification sent", destination=name, notify_event=item.event.event)
        else:
            log.warning(
                "notification failed",
                destination=name,
                notify_event=item.event.event,
                error=error,
            )
        if self._status_file is None:
            return
        delivery = Delivery(name, error is None, datetime.now(UTC), item.event.event, error)
        try:
            write_status(self._status_file, delivery)
        except OSError as exc:
            log.warning("cannot record the notification status", error=exc.strerror)

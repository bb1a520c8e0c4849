"""Notifications: telling a human that a backup, a drill, a prune, an off-site copy, a check or
the daemon itself did something, through the ``[[notify]]`` destinations.

* :mod:`.events` -- :class:`Event`, the typed fact that is sent;
* :mod:`.payload` -- what each kind sends: the versioned webhook JSON and its HMAC signature,
  the healthchecks ping URL and body, the apprise title and body;
* :mod:`.send` -- one delivery attempt per kind (``urllib.request``; ``apprise``, an extra);
* :mod:`.dispatcher` -- the bounded queue and its thread: retries with backoff, the metric,
  and the last result per destination (:mod:`.status`, read by ``pgwarden check``).

Delivery never blocks or fails a job, and no secret (a URL, a key) reaches a payload, a log
line or a metric: the label is the destination's name.
"""

from pgwarden.notify.dispatcher import Dispatcher
from pgwarden.notify.events import Event

__all__ = ["Dispatcher", "Event"]

"""What each destination kind sends for an :class:`~pgwarden.notify.events.Event`.

The webhook body is JSON with a versioned schema (:data:`SCHEMA`); new keys may be added
within a version, none is renamed or removed.  Every key is always present (``null`` when it
does not apply)::

    {"schema": "pgwarden.notification/1", "event": "backup.failure", "target": "app",
     "database": "app", "backup_id": null, "size_bytes": null, "duration_s": 12.3,
     "error": "pg_dump: ... password=*** ...", "host": "vps1",
     "time": "2026-12-03T03:00:12.345678+00:00", "run_id": "<uuid>", "job_id": "...",
     "message": "backup of app failed on vps1: ...", "destination": "ops"}

With a secret configured, ``X-Pgwarden-Signature: sha256=<hex>`` is the HMAC-SHA256 of the
exact body bytes under that secret (:func:`signature`; stdlib ``hmac``).

A healthchecks ping goes to ``<url>/start``, ``<url>`` (success) or ``<url>/fail`` (a failure
or a stall), and ``<url>/log`` for the daemon's start and stop, with ``?rid=<run id>`` when
the event belongs to a run, and the one-line message as its body (:func:`ping_url`).
``ping_style = "cronitor"`` sends Cronitor's ``?state=run|complete|fail&series=<run id>``
instead, and ``ping_style = "uptime-kuma"`` a push monitor's ``?status=up|down&msg=...``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode, urlsplit, urlunsplit

from pgwarden.notify.events import Event
from pgwarden.redaction import redact

SCHEMA = "pgwarden.notification/1"
SIGNATURE_HEADER = "X-Pgwarden-Signature"
#: healthchecks keeps the first 100 kB of a ping body; ours stay far below
MAX_PING_BODY = 10_000
#: the message in a Cronitor or Uptime Kuma ping's query string stays short
MAX_QUERY_MESSAGE = 200


def message(event: Event) -> str:
    """One line a human reads: what happened, where, and why if it failed."""
    if event.message:
        text = event.message
    else:
        what = event.event.replace(".", " ")
        subject = f" of {event.target}" if event.target else ""
        text = f"pgwarden {what}{subject} on {event.host}"
    if event.error and event.error not in text:
        text = f"{text}: {event.error}"
    return redact(text)


def title(event: Event) -> str:
    """A short title (apprise, e-mail subject)."""
    mark = "FAILED" if event.failed else "ok"
    subject = f" {event.target}" if event.target else ""
    return f"[pgwarden {mark}] {event.event}{subject} on {event.host}"


def webhook_body(event: Event, destination: str) -> bytes:
    """The webhook's JSON body (schema :data:`SCHEMA`), UTF-8."""
    doc = {
        "schema": SCHEMA,
        "event": event.event,
        "target": event.target,
        "database": event.database,
        "backup_id": event.backup_id,
        "size_bytes": event.size_bytes,
        "duration_s": None if event.duration_s is None else round(event.duration_s, 3),
        "error": None if event.error is None else redact(event.error),
        "host": event.host,
        "time": event.time.isoformat(),
        "run_id": event.run_id,
        "job_id": event.job_id,
        "message": message(event),
        "destination": destination,
    }
    return json.dumps(doc, sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Pgwarden-Signature`` value: ``sha256=`` + HMAC-SHA256(secret, body) in hex."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def ping_url(base: str, event: Event, style: str = "healthchecks") -> str:
    """The ping URL for ``event`` under the check URL ``base``, in the service's ``style``
    (``ping_style``): healthchecks paths, Cronitor's ``?state=``, Uptime Kuma's ``?status=``.
    The config refuses events a style cannot express (a start for Uptime Kuma, say)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") if style == "healthchecks" else parts.path
    extra: dict[str, str] = {}
    if style == "cronitor":
        extra["state"] = "run" if event.started else "fail" if event.failed else "complete"
        if event.run_id is not None:
            extra["series"] = event.run_id
        extra["message"] = message(event)[:MAX_QUERY_MESSAGE]
    elif style == "uptime-kuma":
        extra["status"] = "down" if event.failed else "up"
        extra["msg"] = message(event)[:MAX_QUERY_MESSAGE]
    else:
        if event.started:
            path += "/start"
        elif event.failed:
            path += "/fail"
        elif event.event.startswith("daemon."):
            path += "/log"
        if event.run_id is not None:
            extra["rid"] = event.run_id
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def ping_body(event: Event) -> bytes:
    body = message(event).encode()
    return body[:MAX_PING_BODY]

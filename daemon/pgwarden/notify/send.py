"""One delivery attempt of one event to one ``[[notify]]`` destination.

The URL (and a webhook's key) is read from its source at each delivery, so a rotated secret is
picked up without a reload.  HTTP goes through ``urllib.request`` with the destination's
timeout; apprise through the ``apprise`` package (the ``notify`` extra).  A failure is a
:class:`DeliveryError` whose message never holds a URL or a key (every secret is scrubbed from
it) and which says whether a retry may help: a network error, a timeout, HTTP 5xx and 429 may;
another HTTP status, a bad URL or a missing secret will not.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from pgwarden.config.notify import NotifyConfig
from pgwarden.config.secretfiles import resolve_secret
from pgwarden.errors import PgwardenError
from pgwarden.notify import payload
from pgwarden.notify.events import Event
from pgwarden.redaction import Secret, scrubber_for

USER_AGENT = "pgwarden-notify/1"


class DeliveryError(PgwardenError):
    """A delivery attempt failed; ``retry`` says whether trying again may help."""

    code = "notify_failed"

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Secrets:
    """A destination's secrets, read from their sources."""

    urls: tuple[Secret, ...]
    key: Secret | None = None


def resolve(dest: NotifyConfig) -> Secrets:
    """Read the destination's URL(s) and key; a :class:`DeliveryError` (no retry) if one
    cannot be read (the message names the source, never the value)."""
    what = f"notify[{dest.name}]"
    try:
        if dest.kind == "apprise":
            raw = resolve_secret(dest.urls, f"{what}.urls")
            urls = tuple(Secret(u) for u in (raw.reveal() if raw else "").split())
        else:
            url = resolve_secret(dest.url, f"{what}.url")
            urls = () if url is None else (url,)
        key = resolve_secret(dest.secret, f"{what}.secret")
    except PgwardenError as exc:
        raise DeliveryError(str(exc), retry=False) from None
    if not urls:
        raise DeliveryError(f"{what}: no URL configured", retry=False)
    return Secrets(urls, key)


def deliver(dest: NotifyConfig, event: Event) -> None:
    """Send ``event`` to ``dest`` once; :class:`DeliveryError` if it did not arrive."""
    secrets = resolve(dest)
    scrub = scrubber_for([*secrets.urls, secrets.key])
    try:
        if dest.kind == "healthchecks":
            url = payload.ping_url(secrets.urls[0].reveal(), event, dest.ping_style)
            # healthchecks takes the message as a POST body; Cronitor and Uptime Kuma have it
            # in the query, and their documented pings are GETs
            body = payload.ping_body(event) if dest.ping_style == "healthchecks" else None
            _post(url, body, {}, dest)
        elif dest.kind == "webhook":
            body = payload.webhook_body(event, dest.name)
            headers = {"Content-Type": "application/json"}
            if secrets.key is not None:
                headers[payload.SIGNATURE_HEADER] = payload.signature(secrets.key.reveal(), body)
            _post(secrets.urls[0].reveal(), body, headers, dest)
        else:
            _apprise(secrets.urls, event, dest)
    except DeliveryError as exc:
        raise DeliveryError(scrub(str(exc)), retry=exc.retry) from None


def _post(url: str, body: bytes | None, headers: dict[str, str], dest: NotifyConfig) -> None:
    """POST ``body`` to ``url`` (GET when there is no body)."""
    if not url.startswith(("http://", "https://")):
        raise DeliveryError(f"notify[{dest.name}]: the URL is not http(s)", retry=False)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        headers={"User-Agent": USER_AGENT, **headers},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=dest.timeout) as response:  # noqa: S310
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        retry = exc.code >= 500 or exc.code == 429
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry=retry) from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"network error: {exc.reason}", retry=True) from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"network error: {exc}", retry=True) from None
    except ValueError:
        raise DeliveryError(f"notify[{dest.name}]: the URL is not valid", retry=False) from None


def _apprise(urls: tuple[Secret, ...], event: Event, dest: NotifyConfig) -> None:
    # lazy import: apprise is an optional extra (absent without pgwarden[notify]) and costs
    # 0.1 s to import (measured): only a process that sends through it pays
    import apprise

    # apprise logs its URLs (which hold tokens) at debug and info: keep them out of our logs
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    sender = apprise.Apprise()
    for index, url in enumerate(urls):
        if not sender.add(url.reveal()):
            raise DeliveryError(
                f"notify[{dest.name}]: apprise URL #{index + 1} is not a URL apprise knows "
                "(the value is not repeated)",
                retry=False,
            )
    if not sender.notify(body=payload.message(event), title=payload.title(event)):
        raise DeliveryError(
            f"notify[{dest.name}]: apprise could not deliver to every URL", retry=True
        )

"""The shape of ``[[notify]]`` and its parsing: where pgwarden tells a human that something
happened (healthchecks pings, signed webhooks, any apprise URL).

A destination is named (``[a-z0-9_-]``, the ``destination`` label of its metric), has a
``kind`` (:data:`NOTIFY_KINDS`), the ``events`` it wants (a subset of :data:`NOTIFY_EVENTS`;
default :data:`FAILURE_EVENTS`) and the ``targets`` whose events it wants (default: every
target).  Its URL is a secret (a healthchecks ping URL lets anyone ping the check; a webhook
URL often holds a token): ``url_env``, ``url_file`` or ``url_credential``, inline ``url`` only
with ``[daemon] allow_plaintext_passwords``.  apprise takes ``urls_*`` (one or more apprise URLs,
whitespace-separated) under the same rules; a webhook's HMAC key is ``secret_env``,
``secret_file`` or ``secret_credential``, never inline.  An apprise destination needs the
``apprise`` package (the ``notify`` extra): its absence is a config error.  Pure: no I/O
(``importlib.util.find_spec`` reads no file we own).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pgwarden.config.offsite import SecretSource
from pgwarden.config.reader import Reader
from pgwarden.config.secretkeys import read_secret_source

NOTIFY_KINDS = ("healthchecks", "webhook", "apprise")
#: how a ``healthchecks`` destination pings: healthchecks paths (/start, /fail, /log),
#: Cronitor's ?state=run|complete|fail, an Uptime Kuma push monitor's ?status=up|down
PING_STYLES = ("healthchecks", "cronitor", "uptime-kuma")
#: the events each ping style cannot express
_PING_STYLE_REFUSES = {
    "cronitor": ("daemon.start", "daemon.stop"),
    "uptime-kuma": ("backup.start", "daemon.start", "daemon.stop"),
}
NOTIFY_EVENTS = (
    "backup.start",
    "backup.success",
    "backup.failure",
    "verify.success",
    "verify.failure",
    "prune.failure",
    "offsite.failure",
    "stalled",
    "check.failure",
    "daemon.start",
    "daemon.stop",
)
FAILURE_EVENTS = (
    "backup.failure",
    "verify.failure",
    "prune.failure",
    "offsite.failure",
    "stalled",
    "check.failure",
)
_NAME = re.compile(r"[a-z0-9_-]{1,63}")


@dataclass(frozen=True)
class NotifyConfig:
    """One ``[[notify]]`` destination, validated (see the module docstring)."""

    name: str
    kind: str
    url: SecretSource = field(default_factory=SecretSource)  # healthchecks, webhook
    urls: SecretSource = field(default_factory=SecretSource)  # apprise
    secret: SecretSource = field(default_factory=SecretSource)  # webhook HMAC key
    events: tuple[str, ...] = FAILURE_EVENTS
    targets: tuple[str, ...] | None = None  # None: every target
    timeout: float = 10.0  # seconds, each request
    retries: int = 3  # tries in all, for network errors, 5xx and 429
    ping_style: str = "healthchecks"  # healthchecks only: see PING_STYLES

    def wants(self, event: str, target: str | None) -> bool:
        """True if this destination is told about ``event`` of ``target`` (None: the daemon's
        own events, sent to every destination that asked for the event)."""
        if event not in self.events:
            return False
        return target is None or self.targets is None or target in self.targets


def destinations(
    root: Reader, plaintext_ok: bool, target_names: Sequence[str], world_readable: bool
) -> tuple[NotifyConfig, ...]:
    """Every ``[[notify]]`` table, validated; the names are unique; an inline URL only in a
    file others cannot read."""
    found = [_destination(sub, plaintext_ok, target_names) for sub in root.table_array("notify")]
    names = [d.name for d in found if d is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        root.error("notify", f"destination name {dup!r} is used more than once")
    out = tuple(d for d in found if d is not None)
    if plaintext_ok and world_readable and any_inline_secret(out):
        message = "the file holds passwords but is readable by others (chmod 0600 or 0640)"
        if f"daemon.allow_plaintext_passwords: {message}" not in root.errors:
            root.error("daemon.allow_plaintext_passwords", message)
    return out


def any_inline_secret(notify: tuple[NotifyConfig, ...]) -> bool:
    """True if a destination holds its URL in the file (plaintext opt-in)."""
    return any(src.value is not None for n in notify for src in (n.url, n.urls))


def _destination(r: Reader, plaintext_ok: bool, target_names: Sequence[str]) -> NotifyConfig | None:
    name = r.string("name", required=True)
    if name and not _NAME.fullmatch(name):
        r.error("name", f"must be 1-63 of a-z, 0-9, '_' and '-' (got {name!r})")
        name = ""
    kind = r.string("kind", required=True)
    if kind and kind not in NOTIFY_KINDS:
        r.error("kind", f"must be one of {', '.join(NOTIFY_KINDS)} (got {kind!r})")
        kind = ""
    url = read_secret_source(r, "url", plaintext_ok)
    urls = read_secret_source(r, "urls", plaintext_ok)
    secret = read_secret_source(r, "secret", plaintext_ok, inline_ok=False)
    _check_kind_keys(r, kind, url, urls, secret)
    d = NotifyConfig(name="", kind="")
    out = NotifyConfig(
        name=name,
        kind=kind,
        url=url,
        urls=urls,
        secret=secret,
        events=_events(r),
        targets=_targets(r, target_names),
        timeout=r.number("timeout", d.timeout, minimum=1, maximum=300),
        retries=r.integer("retries", d.retries, minimum=1, maximum=10),
        ping_style=_ping_style(r, kind),
    )
    for event in _PING_STYLE_REFUSES.get(out.ping_style, ()):
        if event in out.events:
            r.error("events", f"{event} cannot be sent with ping_style = {out.ping_style!r}")
    r.finish()
    return out if name and kind else None


def _check_kind_keys(
    r: Reader, kind: str, url: SecretSource, urls: SecretSource, secret: SecretSource
) -> None:
    if kind in ("healthchecks", "webhook"):
        if not url.configured:
            r.error("url", f"a {kind} destination needs url_env, url_file or url_credential")
        if urls.configured:
            r.error("urls", "only an apprise destination takes urls; use url")
        if url.value is not None:
            _check_inline_url(r, url.value)
    if kind == "apprise":
        if not urls.configured:
            r.error("urls", "an apprise destination needs urls_env, urls_file or urls_credential")
        if url.configured:
            r.error("url", "an apprise destination takes urls (apprise URLs), not url")
        if not _apprise_installed():
            r.error(
                "kind",
                "apprise is not installed: install pgwarden's notify extra "
                "(pip install 'pgwarden[notify]', or python3-apprise)",
            )
    if kind != "webhook" and secret.configured:
        r.error("secret", "only a webhook destination is signed (takes secret_*)")


def _apprise_installed() -> bool:
    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["apprise"] is None (blocked)
        return False


def _check_inline_url(r: Reader, value: str) -> None:
    """An http(s) URL with a host; the value is never repeated (it is a secret)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        r.error("url", "not a valid URL (the value is not repeated: it is a secret)")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.error("url", "must be an http:// or https:// URL with a host (the value is not repeated)")


def _ping_style(r: Reader, kind: str) -> str:
    style = r.choice("ping_style", "healthchecks", PING_STYLES)
    if "ping_style" in r.data and kind != "healthchecks":
        r.error("ping_style", "only a healthchecks destination has a ping style")
    return style


def _events(r: Reader) -> tuple[str, ...]:
    if "events" not in r.data:
        r.mark("events")
        return FAILURE_EVENTS
    events = r.str_list("events")
    for event in events:
        if event not in NOTIFY_EVENTS:
            r.error("events", f"unknown event {event!r} (known: {', '.join(NOTIFY_EVENTS)})")
    if "events" in r.data and isinstance(r.data["events"], list) and not r.data["events"]:
        r.error("events", "must name at least one event (omit it for the failures)")
    return tuple(dict.fromkeys(e for e in events if e in NOTIFY_EVENTS))


def _targets(r: Reader, target_names: Sequence[str]) -> tuple[str, ...] | None:
    if "targets" not in r.data:
        r.mark("targets")
        return None
    targets = r.str_list("targets")
    for target in targets:
        if target not in target_names:
            known = ", ".join(target_names) or "none"
            r.error("targets", f"unknown target {target!r} (configured: {known})")
    return tuple(dict.fromkeys(targets))

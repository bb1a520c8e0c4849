"""``pgwarden notify test [NAME]``: send a test message to one ``[[notify]]`` destination (or
every one), now, in this process, with the destination's timeout and retries.

It prints one line per destination (``--json``: a document) and exits 0 when every message
was delivered, 1 when one was not (the reason, never the URL), 2 for an unknown name or a
config without ``[[notify]]``.  The result is recorded for ``pgwarden check`` like the
daemon's deliveries (when the state directory exists).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from prometheus_client import CollectorRegistry

from pgwarden.commands.context import load_config
from pgwarden.config import Config
from pgwarden.config.notify import NotifyConfig
from pgwarden.errors import EXIT_FAILED, EXIT_OK, NotFoundError
from pgwarden.metrics.notify import NotifyMetrics
from pgwarden.notify import Dispatcher, Event
from pgwarden.notify.status import status_path

TEST_EVENT = "test"


def one_shot_dispatcher(config: Config, destinations: tuple[NotifyConfig, ...]) -> Dispatcher:
    """A dispatcher for a command: its own metrics, the daemon's status file if there is one."""
    state_dir = config.daemon.state_dir
    status = status_path(state_dir) if state_dir.is_dir() else None
    return Dispatcher(destinations, NotifyMetrics(CollectorRegistry()), status, backoff=1.0)


def chosen(config: Config, name: str | None) -> tuple[NotifyConfig, ...]:
    known = ", ".join(n.name for n in config.notify) or "none"
    if name is None:
        if not config.notify:
            raise NotFoundError("no [[notify]] destination is configured")
        return config.notify
    for dest in config.notify:
        if dest.name == name:
            return (dest,)
    raise NotFoundError(f"unknown notification destination {name!r} (configured: {known})")


def cmd_notify(args: argparse.Namespace) -> int:
    config = load_config(args)
    destinations = chosen(config, args.name)
    dispatcher = one_shot_dispatcher(config, destinations)
    results: dict[str, str | None] = {}
    for dest in destinations:
        host = socket.gethostname()
        event = Event(TEST_EVENT, message=f"pgwarden test notification from {host} to {dest.name}")
        results[dest.name] = dispatcher.send_now(dest, event)
    failed = any(error is not None for error in results.values())
    if args.json:
        doc = {
            "ok": not failed,
            "results": [
                {"destination": n, "ok": e is None, "error": e} for n, e in results.items()
            ],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for name, error in results.items():
            sys.stdout.write(f"{name}: sent\n" if error is None else f"{name}: FAILED: {error}\n")
    return EXIT_FAILED if failed else EXIT_OK

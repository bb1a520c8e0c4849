"""``pgwarden ctl``: talk to the running daemon over its control socket.

The socket is ``--socket PATH``, else the ``[daemon] socket`` of ``-c CONFIG`` when given,
else ``$PGWARDEN_SOCKET``, else ``/run/pgwarden/control.sock``.  ``--socket``, ``-c`` and
``--json`` are accepted before or after the subcommand.  Output is a human-readable table, or
the answer's ``result`` as JSON with ``--json``.  ``backup``/``verify``/``prune --wait`` show a
live progress line on stderr when it is a terminal, then a one-line summary.

Exit codes (DESIGN.md): 0 success; 1 the operation failed (a job that did not succeed
included); 2 usage or configuration error (unknown target, bad argument, rejected reload);
3 the daemon cannot be reached (not running, no permission, forbidden).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pgwarden.control import render
from pgwarden.control.client import DEFAULT_SOCKET, ControlClient, Message
from pgwarden.errors import EXIT_FAILED, EXIT_OK, ConfigError

SOCKET_ENV = "PGWARDEN_SOCKET"
#: ``--priority`` of one run: :class:`pgwarden.pg.priority.Priority`'s values, written out (this
#: module is read at every command's start; ``pgwarden backup --priority`` takes them too)
RUN_PRIORITIES = ("low", "normal")


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        # lazy import: only with -c; pgwarden.config costs 0.2 s (measured) at every ctl call
        from pgwarden import config as config_mod

        try:
            return config_mod.load(args.config).daemon.socket
        except ConfigError as exc:
            raise ConfigError(exc.file, [*exc.problems, "(or pass --socket PATH)"]) from exc
    env = os.environ.get(SOCKET_ENV)
    return Path(env) if env else DEFAULT_SOCKET


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options valid before and after the subcommand (SUPPRESS keeps the top-level value)."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--socket",
        type=Path,
        default=default,
        metavar="PATH",
        help=f"control socket (default: -c's, ${SOCKET_ENV}, {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default,
        help="read the socket path from this config file",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output",
    )


def configure_parser(p: argparse.ArgumentParser) -> None:
    _common(p, top=True)
    p.set_defaults(handler=_no_subcommand)
    sub = p.add_subparsers(dest="ctl_command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        q = sub.add_parser(name, help=text, description=text)
        _common(q, top=False)
        q.set_defaults(handler=handler)
        return q

    add("status", _status, "targets, schedules, last outcomes, running jobs")
    add("jobs", _jobs, "running, queued and recent jobs").add_argument("target", nargs="?")
    q = add("job", _job, "one job (--wait: follow it to the end)")
    q.add_argument("id")
    q.add_argument("--wait", action="store_true")
    for kind, text in (("backup", "take a backup now"), ("verify", "run a restore drill now")):
        q = add(kind, _run_job, f"{text} (the daemon queues it; --wait follows it)")
        q.add_argument("target")
        if kind == "verify":
            q.add_argument("backup", nargs="?", help="backup id or prefix (default: newest)")
        else:
            q.add_argument("--tag", action="append", default=[], help="extra tag")
        q.add_argument(
            "--priority",
            choices=RUN_PRIORITIES,
            help="CPU/I/O priority of this run (default: the target's priority setting)",
        )
        q.add_argument("--wait", action="store_true", help="follow the job until it ends")
        q.set_defaults(kind=kind)
    q = add("offsite", _run_job, "upload what the off-site destinations miss, prune them now")
    q.add_argument("target")
    q.add_argument("--destination", metavar="NAME", help="only this [[offsite]] destination")
    q.add_argument("--wait", action="store_true", help="follow the job until it ends")
    q.set_defaults(kind="offsite")
    q = add("prune", _prune, "apply retention now (--dry-run: show the plan only)")
    q.add_argument("target", nargs="?")
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--wait", action="store_true")
    add("backups", _backups, "list backups, newest first").add_argument("target", nargs="?")
    for name in ("pin", "unpin"):
        q = add(name, _pin, f"{name} a backup (pinned backups are never pruned)")
        q.add_argument("target")
        q.add_argument("backup")
        q.set_defaults(pin=name == "pin")
    add("reload", _reload, "re-read the configuration file (like SIGHUP, with the outcome)")
    for name, text in (
        ("pause", "pause schedules (all targets, or one)"),
        ("resume", "resume schedules (all targets, or one)"),
    ):
        add(name, _pause, text).add_argument("target", nargs="?")
    add("config", _config, "the effective configuration in force (secrets redacted)")


def _no_subcommand(args: argparse.Namespace) -> int:
    sys.stderr.write("pgwarden ctl: choose a command (pgwarden ctl --help lists them)\n")
    return 2


# -- helpers -------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(socket_path(args))


def _print(args: argparse.Namespace, result: Mapping[str, Any], human: str | None) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")


class _ProgressLine:
    """A carriage-return progress line on a terminal; nothing when not a terminal."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()
        self._width = 0

    def show(self, data: Mapping[str, Any]) -> None:
        if not self._live:
            return
        text = f"{data.get('kind')} {data.get('target')}: {render.progress_text(data)}"
        self._out.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self._out.flush()

    def clear(self) -> None:
        if self._live and self._width:
            self._out.write("\r" + " " * self._width + "\r")
            self._out.flush()


def _follow(args: argparse.Namespace, messages: Iterator[Message]) -> dict[str, Any]:
    line = _ProgressLine(sys.stderr)
    result: dict[str, Any] = {}
    try:
        for message in messages:
            if message.kind == "result":
                result = message.data
            elif not args.json:
                line.show(message.data)
    finally:
        line.clear()
    return result


def _jobs_ok(jobs: list[Mapping[str, Any]]) -> int:
    done = [j for j in jobs if j.get("state") not in ("queued", "running")]
    return EXIT_FAILED if any(j.get("state") != "succeeded" for j in done) else EXIT_OK


# -- subcommands ---------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    result = _client(args).call("status")
    _print(args, result, render.status(result))
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    result = _client(args).call("jobs", {"target": args.target} if args.target else {})
    _print(args, result, render.jobs(result.get("jobs") or []))
    return EXIT_OK


def _job(args: argparse.Namespace) -> int:
    request = {"id": args.id, "wait": args.wait}
    client = _client(args)
    if args.wait:
        result = _follow(args, client.stream("job", request))
    else:
        result = client.call("job", request)
    job = result.get("job") or {}
    _print(args, result, render.job_result(job) if args.wait else render.jobs([job]))
    return _jobs_ok([job]) if args.wait else EXIT_OK


def _run_job(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"target": args.target, "wait": args.wait}
    if args.kind == "backup" and args.tag:
        request["tags"] = args.tag
    if args.kind == "verify" and args.backup:
        request["backup"] = args.backup
    if args.kind in ("backup", "verify") and args.priority:
        request["priority"] = args.priority
    if args.kind == "offsite" and args.destination:
        request["destination"] = args.destination
    client = _client(args)
    if args.wait:
        result = _follow(args, client.stream(args.kind, request))
    else:
        result = client.call(args.kind, request)
    job = result.get("job") or {}
    human = render.job_result(job) if args.wait else render.job_summary(job)
    if result.get("existing") and not args.wait:
        human = f"already queued or running: {human}"
    _print(args, result, human)
    return _jobs_ok([job])


def _prune(args: argparse.Namespace) -> int:
    wait = args.wait or args.dry_run  # a dry run is only useful with its plan
    request: dict[str, Any] = {"dry_run": args.dry_run, "wait": wait}
    if args.target:
        request["target"] = args.target
    client = _client(args)
    if wait:
        result = _follow(args, client.stream("prune", request))
    else:
        result = client.call("prune", request)
    jobs = list(result.get("jobs") or [])
    human = "\n\n".join(render.job_result(j) if wait else render.job_summary(j) for j in jobs)
    _print(args, result, human or "no targets configured")
    return _jobs_ok(jobs)


def _backups(args: argparse.Namespace) -> int:
    result = _client(args).call("backups", {"target": args.target} if args.target else {})
    _print(args, result, render.backups(result))
    return EXIT_OK


def _pin(args: argparse.Namespace) -> int:
    cmd = "pin" if args.pin else "unpin"
    result = _client(args).call(cmd, {"target": args.target, "backup": args.backup})
    _print(args, result, render.pinned(result, args.pin))
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    result = _client(args).call("reload")
    _print(args, result, render.reloaded(result))
    return EXIT_OK


def _pause(args: argparse.Namespace) -> int:
    cmd = args.ctl_command
    result = _client(args).call(cmd, {"target": args.target} if args.target else {})
    _print(args, result, render.paused(result))
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    result = _client(args).call("config")
    _print(args, result, render.config(result))
    return EXIT_OK

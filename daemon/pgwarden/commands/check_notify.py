"""The notification lines of ``pgwarden check``, and the ``check.failure`` event.

One configuration-level line per ``[[notify]]`` destination (``notify.delivery``, subject =
its name): ``fail`` when its URL or key cannot be read from their source (the source named,
never the value) or when its newest delivery failed (the reason, redacted, and when), ``pass``
when the newest was delivered, ``pass`` with "nothing sent yet" before the first one (``pgwarden
notify test NAME`` sends one).  The daemon records each delivery in the state directory
(:mod:`pgwarden.notify.status`); this reads it.

When the report holds a failure, every destination that asked for ``check.failure`` is told,
now, in this process (a ``pgwarden check`` run by a timer is how a failing checklist reaches a
human without Alertmanager).
"""

from __future__ import annotations

from pgwarden.commands.notify_cmd import one_shot_dispatcher
from pgwarden.config import Config
from pgwarden.config.notify import NotifyConfig
from pgwarden.monitor.verdicts import CheckResult, Status
from pgwarden.notify import Event
from pgwarden.notify.send import DeliveryError, resolve
from pgwarden.notify.status import Delivery, read_status, status_path

CHECK = "notify.delivery"


def notify_checks(config: Config, results: list[CheckResult]) -> list[CheckResult]:
    """``results`` with a line per destination after the configuration items; then, if any
    item failed, ``check.failure`` sent to the destinations that want it."""
    if not config.notify:
        return results
    known = read_status(status_path(config.daemon.state_dir))
    lines = [_line(dest, known.get(dest.name)) for dest in config.notify]
    lead = 0
    while lead < len(results) and results[lead].target is None:
        lead += 1
    merged = [*results[:lead], *lines, *results[lead:]]
    failed = [r for r in merged if r.status == "fail"]
    if failed:
        _tell(config, failed)
    return merged


def _line(dest: NotifyConfig, last: Delivery | None) -> CheckResult:
    status: Status
    try:
        resolve(dest)
    except DeliveryError as exc:
        status, detail = "fail", str(exc)
    else:
        if last is None:
            status = "pass"
            detail = f"{dest.kind}, nothing sent yet (pgwarden notify test {dest.name} sends one)"
        elif last.ok:
            status = "pass"
            detail = f"{dest.kind}, last delivery ok ({last.event}, {last.time:%Y-%m-%d %H:%M} UTC)"
        else:
            status = "fail"
            detail = (
                f"{dest.kind}, last delivery failed ({last.event}, "
                f"{last.time:%Y-%m-%d %H:%M} UTC): {last.error}"
            )
    return CheckResult(CHECK, status, detail, subject=dest.name)


def _tell(config: Config, failed: list[CheckResult]) -> None:
    wanting = tuple(d for d in config.notify if d.wants("check.failure", None))
    if not wanting:
        return
    items = "; ".join(
        f"{r.target + ': ' if r.target else ''}{r.title}"
        f"{' ' + r.subject if r.subject else ''}: {r.detail}"
        for r in failed[:10]
    )
    event = Event("check.failure", error=items)
    dispatcher = one_shot_dispatcher(config, wanting)
    for dest in wanting:
        dispatcher.send_now(dest, event)

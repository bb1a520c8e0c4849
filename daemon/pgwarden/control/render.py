"""Human-readable output of ``pgwarden ctl``: tables, sizes, times, the live progress line.

Pure functions from a command's JSON ``result`` to text; ``--json`` bypasses this module.
Times are shown to the minute with their zone (``UTC`` or an offset), sizes in binary units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import tomli_w

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def when(value: object) -> str:
    if not isinstance(value, str) or not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = moment.utcoffset()
    zone = "" if offset is None else " UTC" if not offset else moment.strftime(" %z")
    return moment.strftime("%Y-%m-%d %H:%M") + zone


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


# -- one renderer per command --------------------------------------------------------------
def _paused_text(paused: Mapping[str, Any]) -> str:
    if paused.get("all"):
        return "schedules PAUSED for all targets"
    names = paused.get("targets") or []
    if names:
        return f"schedules paused for: {', '.join(names)}"
    return "schedules running for every target"


def _last_backup(last: Mapping[str, Any]) -> str:
    info = last.get("backup") or {}
    job = info.get("job") or {}
    if job and job.get("state") != "succeeded":
        return f"{job.get('state')} {when(job.get('finished_at'))}"
    if info.get("attempt_status"):
        text = f"{info['attempt_status']} {when(info.get('attempt_at'))}"
        # BackupStatus.COMPLETE as the socket spells it: ctl does not import pgwarden.catalog
        # (it loads SQLAlchemy, ~0.35 s at every call)
        if info.get("attempt_status") == "complete":
            text += f" ({size(info.get('success_size_bytes'))})"
        return text
    return "succeeded " + when(job.get("finished_at")) if job else "never"


def _last_verify(last: Mapping[str, Any]) -> str:
    info = last.get("verify") or {}
    job = info.get("job") or {}
    if job and job.get("state") != "succeeded":
        return f"{job.get('state')} {when(job.get('finished_at'))}"
    if info.get("status"):
        return f"{info['status']} {when(info.get('at'))}"
    return "passed " + when(job.get("finished_at")) if job else "never"


def status(result: Mapping[str, Any]) -> str:
    config = result.get("config") or {}
    head = [
        f"pgwarden {result.get('version')} (pid {result.get('pid')}), "
        f"up {duration(result.get('uptime_s'))}",
        f"config {config.get('path')} (loaded {when(config.get('loaded_at'))})",
        _paused_text(result.get("paused") or {}),
    ]
    if result.get("catalog_error"):
        head.append(f"catalog unavailable: {result['catalog_error']}")
    rows = []
    for t in result.get("targets") or []:
        state = ("running " + ", ".join(t["running"])) if t.get("running") else "idle"
        if t.get("queued"):
            state += f" (+{len(t['queued'])} queued)"
        if t.get("paused"):
            state += ", paused"
        nxt = t.get("next") or {}
        last = t.get("last") or {}
        rows.append(
            [
                t.get("name"),
                state,
                when(nxt.get("backup")),
                when(nxt.get("verify")),
                _last_backup(last),
                _last_verify(last),
            ]
        )
    out = "\n".join(head) + "\n\n"
    headers = ("TARGET", "STATE", "NEXT BACKUP", "NEXT VERIFY", "LAST BACKUP", "LAST VERIFY")
    out += table(headers, rows) if rows else "no targets configured"
    if result.get("offsite"):
        out += "\n\n" + offsite(result["offsite"])
    jobs_now = [
        *(result.get("jobs") or {}).get("running", []),
        *(result.get("jobs") or {}).get("queued", []),
    ]
    if jobs_now:
        out += "\n\n" + jobs(jobs_now)
    return out


def _offsite_error(d: Mapping[str, Any]) -> str:
    if not d.get("failing"):
        return "-"
    error = str(d.get("last_error") or "?")
    error = error if len(error) <= 100 else error[:99] + "…"
    return f"{when(d.get('last_error_at'))}: {error}"


def offsite(destinations: Iterable[Mapping[str, Any]]) -> str:
    """Each target's copies on each off-site destination (the catalog's view)."""
    rows = [
        [
            d.get("target"),
            d.get("destination"),
            when(d.get("last_upload")),
            d.get("copies"),
            size(d.get("stored_bytes")),
            when(d.get("newest_copy")),
            _offsite_error(d),
        ]
        for d in destinations
    ]
    headers = ("TARGET", "OFF-SITE", "LAST UPLOAD", "COPIES", "STORED", "NEWEST COPY", "ERROR")
    return table(headers, rows)


def _job_detail(job: Mapping[str, Any]) -> str:
    if job.get("error"):
        return str(job["error"]).splitlines()[0]
    if job.get("state") == "running":
        return progress_text(job.get("progress") or {})
    return outcome(job)


def jobs(items: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for job in items:
        rows.append(
            [
                job.get("id"),
                job.get("kind"),
                job.get("target"),
                job.get("trigger"),
                job.get("state"),
                when(job.get("started_at") or job.get("created_at")),
                _job_detail(job),
            ]
        )
    if not rows:
        return "no jobs"
    return table(("JOB", "KIND", "TARGET", "TRIGGER", "STATE", "SINCE", "DETAIL"), rows)


def progress_text(progress: Mapping[str, Any]) -> str:
    bits = [str(progress.get("phase") or progress.get("state") or "")]
    if "bytes" in progress:
        bits.append(size(progress["bytes"]))
    if progress.get("rate_bps"):
        bits.append(size(progress["rate_bps"]) + "/s")
    if "elapsed_s" in progress:
        bits.append(duration(progress["elapsed_s"]))
    return "  ".join(b for b in bits if b)


def outcome(job: Mapping[str, Any]) -> str:
    """What a finished job produced, in a few words (by kind)."""
    result = job.get("result") or {}
    kind = job.get("kind")
    if kind == "backup" and result.get("backup_id"):
        return f"backup {str(result['backup_id'])[:8]}, {size(result.get('size_bytes'))}"
    if kind == "verify" and result.get("backup_id"):
        given = result.get("checks")
        checks: list[Any] = given if isinstance(given, list) else []
        passed = sum(1 for c in checks if isinstance(c, Mapping) and c.get("passed"))
        return (
            f"backup {str(result['backup_id'])[:8]} {result.get('status', '?')}, "
            f"{passed}/{len(checks)} checks passed"
        )
    if kind == "prune" and "deleted" in result:
        kept = result.get("kept", 0)
        if result.get("dry_run"):
            return f"dry run: would delete {result.get('would_delete', 0)}, keep {kept}"
        return f"deleted {result['deleted']} ({size(result.get('freed_bytes'))}), kept {kept}"
    if kind == "offsite" and "uploaded" in result:
        return f"{result['uploaded']} copies uploaded ({size(result.get('uploaded_bytes'))})"
    return ""


def job_summary(job: Mapping[str, Any]) -> str:
    """One line saying how a job ended (or that it was queued)."""
    kind, target, state = job.get("kind"), job.get("target"), job.get("state")
    if state in ("queued", "running"):
        return (
            f"{kind} of {target} {state}: job {job.get('id')} "
            f"(follow it with: pgwarden ctl job {job.get('id')} --wait)"
        )
    line = f"{kind} of {target} {state} after {duration(_elapsed(job))} (job {job.get('id')})"
    if job.get("error"):
        return f"{line}: {job['error']}"
    done = outcome(job)
    return f"{line}: {done}" if done else line


def _elapsed(job: Mapping[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(str(job.get("started_at")))
        end = datetime.fromisoformat(str(job.get("finished_at")))
    except ValueError:
        return None
    return (end - start).total_seconds()


def job_result(job: Mapping[str, Any]) -> str:
    """A finished job in full: the prune plan or the drill's checks, then the summary."""
    result = job.get("result") or {}
    parts = []
    if job.get("kind") == "prune" and isinstance(result.get("backups"), list):
        rows = [
            [
                b.get("backup"),
                when(b.get("started_at")),
                b.get("status"),
                size(b.get("size_bytes")),
                "yes" if b.get("pinned") else "",
                b.get("decision"),
                b.get("result"),
                b.get("reason"),
            ]
            for b in result["backups"]
        ]
        headers = ("BACKUP", "STARTED", "STATUS", "SIZE", "PINNED", "DECISION", "RESULT", "REASON")
        parts.append(f"{job.get('target')}:\n" + (table(headers, rows) if rows else "no backups"))
    if job.get("kind") == "verify" and isinstance(result.get("checks"), list):
        rows = [
            [c.get("name"), "passed" if c.get("passed") else "FAILED", c.get("detail")]
            for c in result["checks"]
        ]
        parts.append(table(("CHECK", "RESULT", "DETAIL"), rows))
    if job.get("kind") == "offsite" and isinstance(result.get("copies"), list):
        parts.append(_offsite_copies(result))
    notes = [*(result.get("errors") or []), *(result.get("warnings") or [])]
    if notes and isinstance(notes, list):
        parts.append("\n".join(f"note: {n}" for n in notes))
    parts.append(job_summary(job))
    return "\n\n".join(parts)


def _offsite_copies(result: Mapping[str, Any]) -> str:
    """An off-site job's uploads, then each problem (a destination unreachable, a prune)."""
    rows = [
        [
            c.get("destination"),
            str(c.get("backup_id", ""))[:8],
            c.get("key"),
            size(c.get("size_bytes")),
            "ok" if c.get("ok") else f"FAILED: {c.get('error')}",
        ]
        for c in result["copies"]
    ]
    headers = ("DESTINATION", "BACKUP", "KEY", "SIZE", "RESULT")
    lines = [table(headers, rows) if rows else "nothing to upload"]
    lines += [f"problem: {p}" for p in result.get("problems") or []]
    return "\n".join(lines)


def backups(result: Mapping[str, Any]) -> str:
    rows = []
    for b in result.get("backups") or []:
        verified = b.get("verify_status") or "-"
        rows.append(
            [
                b.get("short_id"),
                b.get("target"),
                when(b.get("started_at")),
                b.get("status"),
                size(b.get("size_bytes")),
                b.get("format"),
                verified,
                "yes" if b.get("pinned") else "",
                ",".join(b.get("tags") or []),
            ]
        )
    if not rows:
        return "no backups"
    headers = (
        "BACKUP",
        "TARGET",
        "STARTED",
        "STATUS",
        "SIZE",
        "FORMAT",
        "VERIFIED",
        "PINNED",
        "TAGS",
    )
    return table(headers, rows)


def pinned(result: Mapping[str, Any], pin: bool) -> str:
    b = result.get("backup") or {}
    verb = "pinned" if pin else "unpinned"
    note = " (kept out of retention)" if pin else " (retention applies again)"
    return (
        f"{verb} backup {b.get('short_id')} of {b.get('target')}, "
        f"taken {when(b.get('started_at'))}{note}"
    )


def reloaded(result: Mapping[str, Any]) -> str:
    names = ", ".join(result.get("targets") or []) or "none"
    return f"configuration reloaded from {result.get('config')} (targets: {names})"


def paused(result: Mapping[str, Any]) -> str:
    return _paused_text(result.get("paused") or {})


def config(result: Mapping[str, Any]) -> str:
    header = (
        f"# effective configuration of {result.get('path')} in force since "
        f"{when(result.get('loaded_at'))} (secrets redacted)\n"
    )
    return header + tomli_w.dumps(dict(result.get("config") or {}))

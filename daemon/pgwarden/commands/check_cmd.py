"""``pgwarden check [-c CONFIG] [TARGET] [--json]``: the production checklist.

Runs :func:`pgwarden.monitor.checklist.run_checklist` without a daemon and prints one line per
item (``--json``: ``{"ok": ..., "counts": {...}, "results": [...]}``).  Exit 0 when no item
failed (warnings and unknowns included), 1 otherwise; a bad config is exit 2 (from the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from pgwarden.commands.context import load_config
from pgwarden.errors import EXIT_FAILED, EXIT_OK
from pgwarden.monitor.checklist import run_checklist
from pgwarden.monitor.verdicts import STATUSES, CheckResult

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unknown": "????"}


def render(results: list[CheckResult]) -> str:
    """The human report: items grouped by target, one line each, then the totals."""
    lines: list[str] = []
    group: object = object()
    for r in results:
        if r.target != group:
            group = r.target
            lines.append(f"{'target ' + r.target if r.target else 'configuration'}:")
        title = f"{r.title} {r.subject}" if r.subject else r.title
        lines.append(f"  {_MARK[r.status]}  {title}: {r.detail}")
    counts = Counter(r.status for r in results)
    lines.append(", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES))
    return "\n".join(lines) + "\n"


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args)
    results = run_checklist(config, getattr(args, "target", None))
    failed = any(r.status == "fail" for r in results)
    if getattr(args, "json", False):
        counts = Counter(r.status for r in results)
        doc = {
            "ok": not failed,
            "counts": {s: counts.get(s, 0) for s in STATUSES},
            "results": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render(results))
    return EXIT_FAILED if failed else EXIT_OK

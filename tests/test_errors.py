"""``errors.describe``: the one way a caught exception becomes a line of text."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
import sqlalchemy.exc

from pgwarden.errors import describe
from tests.pgservers import PgServer


def test_first_line_else_type_name_redacted() -> None:
    assert describe(ValueError("first\nsecond")) == "first"
    assert describe(OSError()) == "OSError"
    assert describe(RuntimeError("  \n ")) == "RuntimeError"
    assert describe(RuntimeError("bad dsn host=h password=canary")) == "bad dsn host=h password=***"
    assert (
        describe(RuntimeError("postgresql://u:canary@h/db down")) == "postgresql://u:***@h/db down"
    )


def test_psycopg_error_keeps_sqlstate_detail_and_hint(pg15: PgServer) -> None:
    with pg15.connect() as conn:
        with pytest.raises(psycopg.Error) as missing:
            conn.execute("SELECT * FROM no_such_table")
        assert describe(missing.value) == 'relation "no_such_table" does not exist (SQLSTATE 42P01)'
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'boom password=canary rejected' "
                "USING DETAIL = 'the detail', HINT = 'the hint'; END $$"
            )
    assert describe(raised.value) == (
        "boom password=*** rejected; DETAIL: the detail; HINT: the hint (SQLSTATE P0001)"
    )


def test_sqlalchemy_wrapper_is_described_by_the_driver_error() -> None:
    orig = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)
    assert describe(wrapped) == "canceling statement due to statement timeout (SQLSTATE 57014)"


def test_errors_does_not_load_psycopg() -> None:
    # the ctl client imports pgwarden.errors; psycopg would cost it 0.15 s at start-up
    code = "import sys, pgwarden.errors, pgwarden.redaction; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The pure parts of restore drills: scratch names, job sizing, error classification, the
evaluation of SQL checks, and who owns a leftover scratch database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.config import SqlCheck
from pgwarden.restore import scratch, scratchlock
from pgwarden.restore.checks import evaluate
from pgwarden.restore.outcome import StepError
from pgwarden.restore.pgrestore import classify


@given(st.text(min_size=1, max_size=200))
def test_scratch_names_are_short_lowercase_identifiers(target: str) -> None:
    name = scratch.scratch_name(target, datetime(2026, 11, 26, 3, 15, tzinfo=UTC))
    assert name.startswith("pgwarden_verify_")
    assert len(name.encode()) <= 63
    assert all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in name)
    assert "_20261126031500_" in name


def test_two_drills_in_the_same_second_get_different_names() -> None:
    now = datetime.now(UTC)
    assert len({scratch.scratch_name("app", now) for _ in range(20)}) > 1


def _headroom(
    max_connections: int,
    in_use: int,
    *,
    superuser: bool = True,
    role_limit: int = -1,
    role_in_use: int = 0,
) -> scratch.Headroom:
    return scratch.Headroom(max_connections, 3, in_use, superuser, role_limit, role_in_use)


@given(
    requested=st.integers(1, 64),
    max_connections=st.integers(5, 500),
    in_use=st.integers(0, 500),
    superuser=st.booleans(),
    role_limit=st.integers(-1, 50),
    role_in_use=st.integers(0, 50),
)
def test_plan_jobs_never_takes_the_applications_connections(
    requested: int,
    max_connections: int,
    in_use: int,
    superuser: bool,
    role_limit: int,
    role_in_use: int,
) -> None:
    room = _headroom(
        max_connections,
        min(in_use, max_connections),
        superuser=superuser,
        role_limit=role_limit,
        role_in_use=role_in_use,
    )
    try:
        jobs, note = scratch.plan_jobs(requested, room)
    except StepError as exc:
        assert exc.step == "headroom"
        assert room.free < 1
        return
    assert 1 <= jobs <= requested
    assert scratch.connections_needed(jobs) <= room.free
    if jobs < requested:
        assert scratch.connections_needed(jobs + 1) > room.free
        assert f"jobs reduced from {requested} to {jobs}" in note


def test_headroom_keeps_a_margin_and_honours_the_role_limit() -> None:
    room = _headroom(100, 50, superuser=False, role_limit=5, role_in_use=2)
    assert room.margin == 10
    assert room.free == 3
    assert scratch.plan_jobs(4, room)[0] == 2  # 2 workers + the leader
    assert _headroom(100, 95).free == 0
    with pytest.raises(StepError, match="no connection to spare"):
        scratch.plan_jobs(2, _headroom(100, 95))


TIMEOUT = (
    "pg_restore: error: could not execute query: ERROR:  unrecognized configuration "
    'parameter "transaction_timeout"'
)


def test_transaction_timeout_is_ignored_only_on_servers_before_17() -> None:
    lines = [
        TIMEOUT,
        "Command was: SET transaction_timeout = 0;",
        "pg_restore: warning: errors ignored on restore: 1",
    ]
    on15 = classify(lines, plain=False, server_major=15, drill=True)
    assert on15.errors == [] and on15.ignored == [TIMEOUT]
    assert "PostgreSQL 15" in on15.notes[0]
    on18 = classify(lines, plain=False, server_major=18, drill=True)
    assert on18.errors == [TIMEOUT]


def test_missing_roles_are_ignored_only_in_drills_of_plain_dumps() -> None:
    line = 'psql:<stdin>:40: ERROR:  role "app_owner" does not exist'
    assert classify([line], plain=True, server_major=18, drill=True).errors == []
    assert classify([line], plain=True, server_major=18, drill=False).errors == [line]
    other = 'psql:<stdin>:41: ERROR:  relation "users" already exists'
    assert classify([line, other], plain=True, server_major=18, drill=True).errors == [other]


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [
        (SqlCheck("n", "q", min=1), 5, True),
        (SqlCheck("n", "q", min=1), 0, False),
        (SqlCheck("n", "q", max=10), Decimal("10"), True),
        (SqlCheck("n", "q", max=10), 10.5, False),
        (SqlCheck("n", "q", min=1, max=3), "2", True),
        (SqlCheck("n", "q", equals=3), 3, True),
        (SqlCheck("n", "q", equals=3), Decimal("3.0"), True),
        (SqlCheck("n", "q", equals=3), 4, False),
        (SqlCheck("n", "q", equals="ok"), "ok", True),
        (SqlCheck("n", "q", equals="ok"), "nok", False),
        (SqlCheck("n", "q", min=1), None, False),
        (SqlCheck("n", "q", min=1), "many", False),
    ],
)
def test_sql_check_evaluation(check: SqlCheck, value: object, ok: bool) -> None:
    assert (evaluate(check, value) is None) is ok


def test_scratch_lock_keys() -> None:
    """Two-key advisory locks: a constant space, and 31 bits of the name (stable, int4)."""
    assert 0 < scratchlock.LOCK_SPACE < 2**31
    key = scratchlock.lock_key("pgwarden_verify_app_20260101000000_abcd")
    assert key == scratchlock.lock_key("pgwarden_verify_app_20260101000000_abcd")
    assert 0 <= key < 2**31
    assert key != scratchlock.lock_key("pgwarden_verify_app_20260101000000_abce")

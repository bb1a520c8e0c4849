"""SQLAlchemy engines built from a ConnSpec: pool settings, application_name, statement_timeout."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import text

from pgwarden.config import PoolSettings, Secret
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.engine import make_engine, pool_stats, statement_timeout_option
from tests.pgservers import PgServer
from tests.test_pg_conninfo import scram_role


@pytest.fixture
def engine(pg18: PgServer) -> Iterator[sqlalchemy.Engine]:
    eng = make_engine(
        ConnSpec(pg18.dsn()),
        PoolSettings(pool_size=2, max_overflow=1, pool_timeout=0.5, pool_recycle=1800),
        statement_timeout_s=1.5,
        application_name="pgwarden-engine-test",
    )
    yield eng
    eng.dispose()


def test_select_application_name_and_statement_timeout(engine: sqlalchemy.Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
        seen = conn.execute(
            text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        ).scalar()
        assert seen == "pgwarden-engine-test"


def test_application_name_visible_to_other_sessions(
    engine: sqlalchemy.Engine, pg18: PgServer
) -> None:
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        rows = pg18.execute(f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}")
        assert rows == [("pgwarden-engine-test",)]


def test_statement_timeout_cancels_a_long_query(engine: sqlalchemy.Engine) -> None:
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError) as info:
        conn.execute(text("SELECT pg_sleep(10)"))
    assert isinstance(info.value.orig, psycopg.errors.QueryCanceled)


def test_pool_stats_follow_checkouts(engine: sqlalchemy.Engine) -> None:
    stats = pool_stats(engine)
    assert (stats["size"], stats["max_overflow"], stats["capacity"]) == (2, 1, 3)
    assert stats["checked_out"] == 0
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        conn.execute(text("SELECT 1"))
    stats = pool_stats(engine)
    assert stats["checked_out"] == 3
    assert stats["overflow"] == 1
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        engine.connect()
    for conn in conns:
        conn.close()
    stats = pool_stats(engine)
    assert stats["checked_out"] == 0
    assert stats["checked_in"] == 2  # the overflow connection was closed, not kept
    assert stats["overflow"] == 0


def test_existing_options_are_kept(pg18: PgServer) -> None:
    spec = ConnSpec(pg18.dsn()).with_params(options="-c lock_timeout=2s")
    eng = make_engine(spec, PoolSettings(pool_size=1, max_overflow=0), statement_timeout_s=0.25)
    try:
        with eng.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "2s"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "250ms"
            assert conn.execute(text("SHOW application_name")).scalar() == "pgwarden"
    finally:
        eng.dispose()
    assert statement_timeout_option(0) == "-c statement_timeout=0"
    assert statement_timeout_option(0.0001) == "-c statement_timeout=1"
    with pytest.raises(ValueError, match=">= 0"):
        statement_timeout_option(-1)


def test_password_never_in_the_engine_url(pg15: PgServer) -> None:
    with scram_role(pg15) as (role, password):
        eng = make_engine(
            ConnSpec(pg15.dsn(user=role), Secret(password)),
            PoolSettings(pool_size=1, max_overflow=0),
            statement_timeout_s=5,
        )
        try:
            with eng.connect() as conn:
                assert conn.execute(text("SELECT current_user")).scalar() == role
            assert "Canary" not in str(eng.url)
            assert "Canary" not in repr(eng)
        finally:
            eng.dispose()

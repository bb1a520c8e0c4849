"""The test servers themselves: both majors start, and pgvector is available on 18."""

from tests.pgservers import PgServer


def test_pg18_has_pgvector(pg18: PgServer) -> None:
    pg18.create_database("t_vec")
    pg18.execute("CREATE EXTENSION vector", "t_vec")
    assert pg18.execute("SELECT current_setting('server_version_num')::int / 10000")[0][0] == 18


def test_pg15_runs(pg15: PgServer) -> None:
    assert pg15.execute("SELECT current_setting('server_version_num')::int / 10000")[0][0] == 15

"""pgvector health of one database: the extension, every vector column, its ANN indexes.

The strategy sizes pgvector for "<1M vectors, integrated with existing DB" and points beyond
that to a dedicated store (Pinecone, Weaviate, Qdrant).  This module reads an
:class:`Inventory` and judges it:

* the extension: installed version against the newest the server offers
  (``ALTER EXTENSION vector UPDATE``);
* every ``vector`` / ``halfvec`` / ``sparsevec`` column of an ordinary or partitioned table:
  its row count against the ~1M guidance (warn from 80 %), whether an ``ivfflat`` or ``hnsw``
  index covers it (a table under :data:`INDEX_MIN_ROWS` rows is searched exactly fast enough
  without one), and an ivfflat index's ``lists`` against pgvector's advice -- ``rows / 1000``
  up to 1M rows, ``sqrt(rows)`` beyond -- within a factor of :data:`LISTS_TOLERANCE`.  An
  ivfflat index built on an (almost) empty table, as in the strategy's own example, has lists
  computed from no data and poor recall: rebuild it once the data is loaded.

Row counts come from the planner's estimate (``reltuples`` / ``n_live_tup``); a table
estimated under :data:`EXACT_COUNT_BELOW` rows (or never analysed) is counted exactly, bounded
by the statement timeout.  An expression index (``(embedding::halfvec(3072))``) covers a column
when the column's name appears in its definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlalchemy.exc import DBAPIError

from pgwarden.monitor.verdicts import Status

GUIDANCE_ROWS = 1_000_000
APPROACHING = 0.8
INDEX_MIN_ROWS = 10_000
EXACT_COUNT_BELOW = 50_000
LISTS_TOLERANCE = 2.0
#: the most dimensions an ivfflat/hnsw index accepts, per type (sparsevec: non-zero elements)
MAX_INDEX_DIMS = {"vector": 2000, "halfvec": 4000, "sparsevec": 1000}
IVFFLAT_DEFAULT_LISTS = 100

_EXTENSION_SQL = sqlalchemy.text(
    """
    SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
           (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')
    """
)
_COLUMNS_SQL = sqlalchemy.text(
    """
    SELECT c.oid::bigint, n.nspname, c.relname, a.attname, a.attnum, t.typname, a.atttypmod,
           greatest(c.reltuples, 0)::bigint, coalesce(s.n_live_tup, 0)::bigint,
           c.reltuples < 0
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_type t ON t.oid = a.atttypid
      JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid
                      AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'vector'
      LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND a.attnum > 0 AND NOT a.attisdropped
       AND t.typname IN ('vector', 'halfvec', 'sparsevec')
     ORDER BY n.nspname, c.relname, a.attnum
    """
)
_INDEXES_SQL = sqlalchemy.text(
    """
    SELECT ic.relname, am.amname, coalesce(ic.reloptions, '{}'::text[]),
           i.indkey::int2[], pg_get_indexdef(i.indexrelid)
      FROM pg_index i
      JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
     WHERE i.indrelid = :oid AND am.amname IN ('ivfflat', 'hnsw')
    """
)


@dataclass(frozen=True)
class VectorIndex:
    name: str
    method: str  # "ivfflat" or "hnsw"
    options: tuple[tuple[str, str], ...]

    @property
    def lists(self) -> int | None:
        if self.method != "ivfflat":
            return None
        return int(dict(self.options).get("lists", IVFFLAT_DEFAULT_LISTS))


@dataclass(frozen=True)
class VectorColumn:
    schema: str
    table: str
    column: str
    type_name: str
    dims: int | None
    rows: int
    rows_exact: bool
    indexes: tuple[VectorIndex, ...]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class Inventory:
    installed: str | None
    available: str | None
    columns: tuple[VectorColumn, ...] = ()


def read_inventory(conn: sqlalchemy.Connection) -> Inventory:
    """The extension's versions and every vector column, in one transaction."""
    with conn.begin():
        installed, available = conn.execute(_EXTENSION_SQL).one()
        if installed is None:
            return Inventory(None, available)
        columns = [_column(conn, tuple(row)) for row in conn.execute(_COLUMNS_SQL).all()]
    return Inventory(str(installed), available and str(available), tuple(columns))


def _column(conn: sqlalchemy.Connection, row: Sequence[Any]) -> VectorColumn:
    oid, schema, table, column, attnum, typname, typmod, reltuples, live, unknown = row
    estimate = max(int(reltuples), int(live))
    rows, exact = estimate, False
    if unknown or estimate < EXACT_COUNT_BELOW:
        counted = _exact_count(conn, str(schema), str(table))
        if counted is not None:
            rows, exact = counted, True
    indexes = []
    for name, method, options, keys, definition in conn.execute(_INDEXES_SQL, {"oid": oid}):
        covers = attnum in keys or (0 in keys and str(column) in definition)
        if covers:
            pairs = tuple((k, v) for k, _, v in (o.partition("=") for o in options))
            indexes.append(VectorIndex(str(name), str(method), pairs))
    dims = int(typmod) if int(typmod) > 0 else None
    return VectorColumn(
        str(schema), str(table), str(column), str(typname), dims, rows, exact, tuple(indexes)
    )


def _exact_count(conn: sqlalchemy.Connection, schema: str, table: str) -> int | None:
    """``count(*)`` in a savepoint: a statement timeout leaves the estimate in place.

    Built with SQLAlchemy Core, never ``text()``: a quoted name such as ``"a :b"`` would be
    parsed there as a bind parameter ``:b``.
    """
    relation = sqlalchemy.table(table, schema=schema)
    query = sqlalchemy.select(sqlalchemy.func.count()).select_from(relation)
    try:
        with conn.begin_nested():
            return int(conn.execute(query).scalar_one())
    except DBAPIError:
        return None


def recommended_lists(rows: int) -> int:
    """pgvector's advice for ivfflat ``lists``: rows / 1000 up to 1M rows, sqrt(rows) beyond."""
    if rows <= GUIDANCE_ROWS:
        return max(rows // 1000, 1)
    return int(math.sqrt(rows))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def judge_extension(inv: Inventory) -> tuple[Status, str]:
    """(status, one line) for the extension itself."""
    if inv.installed is None:
        offered = f" (version {inv.available} is available)" if inv.available else ""
        return "pass", f"pgvector is not installed in this database{offered}"
    if inv.available and _version(inv.available) > _version(inv.installed):
        return "warn", (
            f"pgvector {inv.installed} is installed but {inv.available} is available: "
            "ALTER EXTENSION vector UPDATE"
        )
    return "pass", f"pgvector {inv.installed} (the newest this server offers)"


def judge_column(col: VectorColumn) -> tuple[Status, str]:
    """(status, one line) for one vector column: size, index, ivfflat lists."""
    about = "" if col.rows_exact else "about "
    findings: list[str] = []
    status: Status = "pass"
    if col.rows > GUIDANCE_ROWS:
        status = "warn"
        findings.append(
            f"{about}{col.rows:,} rows, beyond the strategy's ~1M guidance for pgvector: "
            "consider a dedicated vector store (Qdrant, Weaviate, Pinecone) or partitioning"
        )
    elif col.rows >= APPROACHING * GUIDANCE_ROWS:
        status = "warn"
        findings.append(f"{about}{col.rows:,} rows, approaching the ~1M guidance for pgvector")
    else:
        findings.append(f"{about}{col.rows:,} rows")
    hnsw = [i for i in col.indexes if i.method == "hnsw"]
    ivfflat = [i for i in col.indexes if i.method == "ivfflat"]
    if not col.indexes:
        limit = MAX_INDEX_DIMS.get(col.type_name)
        if col.rows >= INDEX_MIN_ROWS:
            status = "warn"
            ops = f"{col.type_name}_cosine_ops"
            advice = f"CREATE INDEX ON {col.table} USING hnsw ({col.column} {ops})"
            if col.dims and limit and col.dims > limit:
                advice = f"{col.dims} dimensions exceed the {limit} an index allows: index a "
                advice += "halfvec expression or reduce the dimensions"
            findings.append(f"no ivfflat/hnsw index, every search scans all rows ({advice})")
        else:
            findings.append("no index needed yet (an exact scan is fast at this size)")
    for index in ivfflat:
        lists = index.lists or IVFFLAT_DEFAULT_LISTS
        best = recommended_lists(col.rows)
        if lists > best * LISTS_TOLERANCE or lists * LISTS_TOLERANCE < best:
            status = "warn"
            rule = "rows/1000" if col.rows <= GUIDANCE_ROWS else "sqrt(rows)"
            findings.append(
                f"ivfflat {index.name} has lists={lists}, advice is ~{best} ({rule}); "
                "rebuild it with a fitting lists (an index built before the data is loaded "
                "has poor recall)"
            )
        else:
            findings.append(f"ivfflat {index.name} lists={lists} fits")
    if hnsw:
        findings.append(f"hnsw index {hnsw[0].name}")
    return status, "; ".join(findings)

"""SQLAlchemy models of the catalog: the run history of backups and restore drills.

The catalog is an index, not the source of truth: every complete backup is described by its
manifest in storage, and ``pgwarden catalog rebuild`` recreates these rows from the manifests.
What only the catalog knows is the history of attempts that produced no backup (failed,
interrupted) and of drills.  ``offsite_copies`` records which backup is confirmed on which
off-site destination (the bucket's manifests hold the truth for confirmed ones).

The schema itself is created and changed only by the numbered migrations in ``migrations/``;
these models must describe exactly what the migrations create (a test compares them).
Timestamps are timezone-aware UTC everywhere: :class:`UTCDateTime` stores UTC and returns aware
datetimes on every backend (SQLite has no time zones).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from pgwarden.catalog.states import (
    BACKUP_STATUSES,
    COPY_STATES,
    VERIFICATION_STATUSES,
    VERIFY_STATUSES,
)

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware (UTC).

    Naive datetimes are refused on the way in: a naive value is a bug (``datetime.utcnow()``),
    and guessing its zone would silently shift the history.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the catalog; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonDocument(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL.

    The PostgreSQL type is looked up when a PostgreSQL catalog needs it: importing
    ``sqlalchemy.dialects.postgresql`` (its psycopg and asyncpg drivers with it) cost every
    command ~0.1 s of start-up and the daemon its memory, with the default SQLite catalog too.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            # lazy import: the PostgreSQL dialect costs ~65 ms of start-up, SQLite never needs it
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


def json_type() -> JsonDocument:
    """JSON on SQLite, JSONB on PostgreSQL (:class:`JsonDocument`)."""
    return JsonDocument()


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Backup(Base):
    """One backup attempt; ``id`` is the backup id written in its manifest (uuid4 hex)."""

    __tablename__ = "backups"
    __table_args__ = (
        CheckConstraint(_in("status", BACKUP_STATUSES), name="status"),
        CheckConstraint(
            f"verify_status IS NULL OR {_in('verify_status', VERIFY_STATUSES)}",
            name="verify_status",
        ),
        CheckConstraint("attempt >= 1", name="attempt"),
        Index(None, "target", "started_at"),
        Index(None, "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(200))
    database: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    tags: Mapped[list[str]] = mapped_column(json_type())
    format: Mapped[str] = mapped_column(String(16))
    compression: Mapped[str | None] = mapped_column(String(32))
    path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    pinned: Mapped[bool] = mapped_column(Boolean(create_constraint=False), default=False)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verify_status: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    duration_s: Mapped[float | None] = mapped_column(Float)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Verification(Base):
    """One restore drill of one backup."""

    __tablename__ = "verifications"
    __table_args__ = (
        CheckConstraint(_in("status", VERIFICATION_STATUSES), name="status"),
        Index(None, "backup_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(String(32), ForeignKey("backups.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(json_type())
    error: Mapped[str | None] = mapped_column(Text)


class OffsiteCopy(Base):
    """One backup's copy on one off-site destination (``[[offsite]]`` name)."""

    __tablename__ = "offsite_copies"
    __table_args__ = (
        CheckConstraint(_in("state", COPY_STATES), name="state"),
        CheckConstraint("attempts >= 0", name="attempts"),
        UniqueConstraint("backup_id", "destination"),
        Index(None, "destination", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(String(32), ForeignKey("backups.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    object_sha256: Mapped[str | None] = mapped_column(String(64))
    encrypted: Mapped[bool] = mapped_column(Boolean(create_constraint=False), default=False)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

"""Initial catalog: backups and verifications.

Revision ID: 001
Revises:
Create Date: 2026-11-26

Forward-only (migrations/README.md): once released, this file never changes; its checksum is
recorded in migrations/LEDGER.  To undo it, write the next numbered migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("database", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("compression", sa.String(32), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verify_status", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_backups"),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'failed', 'interrupted', 'deleted')",
            name="ck_backups_status",
        ),
        sa.CheckConstraint(
            "verify_status IS NULL OR verify_status IN ('passed', 'failed')",
            name="ck_backups_verify_status",
        ),
        sa.CheckConstraint("attempt >= 1", name="ck_backups_attempt"),
    )
    op.create_index("ix_backups_target_started_at", "backups", ["target", "started_at"])
    op.create_index("ix_backups_status", "backups", ["status"])

    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backup_id", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_verifications"),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["backups.id"],
            name="fk_verifications_backup_id_backups",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('running', 'passed', 'failed', 'interrupted')",
            name="ck_verifications_status",
        ),
    )
    op.create_index(
        "ix_verifications_backup_id_started_at", "verifications", ["backup_id", "started_at"]
    )


def downgrade() -> None:
    raise NotImplementedError(
        "pgwarden catalog migrations are forward-only: to undo revision "
        f"{revision!r}, write a new numbered migration that reverses it"
    )

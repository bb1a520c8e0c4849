"""Off-site copies: which backup is confirmed on which [[offsite]] destination.

Revision ID: 002
Revises: 001
Create Date: 2026-12-03

Forward-only (migrations/README.md): once released, this file never changes; its checksum is
recorded in migrations/LEDGER.  To undo it, write the next numbered migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "002"
down_revision = "001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offsite_copies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backup_id", sa.String(32), nullable=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("object_sha256", sa.String(64), nullable=True),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_offsite_copies"),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["backups.id"],
            name="fk_offsite_copies_backup_id_backups",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "backup_id", "destination", name="uq_offsite_copies_backup_id_destination"
        ),
        sa.CheckConstraint(
            "state IN ('uploading', 'confirmed', 'failed', 'deleted')",
            name="ck_offsite_copies_state",
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_offsite_copies_attempts"),
    )
    op.create_index(
        "ix_offsite_copies_destination_state", "offsite_copies", ["destination", "state"]
    )


def downgrade() -> None:
    raise NotImplementedError(
        "pgwarden catalog migrations are forward-only: to undo revision "
        f"{revision!r}, write a new numbered migration that reverses it"
    )

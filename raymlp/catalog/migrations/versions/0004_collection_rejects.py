"""Collections count the malformed records they kept aside, and name the table that holds them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add collections.rows_rejected (0 for earlier collections) and collections.rejects_table."""
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("rows_rejected", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("rejects_table", sa.String(255), nullable=True))


def downgrade() -> None:
    """Drop the columns of this revision."""
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("rejects_table")
        batch.drop_column("rows_rejected")

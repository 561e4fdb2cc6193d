"""Runs may end `stopped`: a sweep's trial that its scheduler stopped early, neither succeeded nor failed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Let runs.status be 'stopped' too (the check constraint is replaced; SQLite copies the table in batch mode)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_status"), "status IN ('running', 'succeeded', 'failed', 'stopped')")


def downgrade() -> None:
    """Back to three statuses; a stopped run becomes failed (the nearest of the three: it did not succeed)."""
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'stopped'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_status"), "status IN ('running', 'succeeded', 'failed')")

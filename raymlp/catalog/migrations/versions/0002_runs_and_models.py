"""Job runs and the model versions they produced, with their dataset lineage.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create runs and model_versions."""
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("job_path", sa.Text(), nullable=False),
        sa.Column("job_sha256", sa.String(128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f("ck_runs_status")),
    )
    op.create_index(op.f("ix_runs_job_name_started_at"), "runs", ["job_name", "started_at"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("dataset_name", sa.String(255), nullable=True),
        sa.Column("dataset_version", sa.Integer(), nullable=True),
        sa.Column("dataset_digest", sa.String(128), nullable=True),
        sa.Column("package_uri", sa.Text(), nullable=True),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_model_versions_run_id_runs")),
        sa.UniqueConstraint("model_name", "model_version", name=op.f("uq_model_versions_model_name_model_version")),
    )
    op.create_index(
        op.f("ix_model_versions_dataset_name_dataset_version"),
        "model_versions",
        ["dataset_name", "dataset_version"],
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_index(op.f("ix_model_versions_dataset_name_dataset_version"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_runs_job_name_started_at"), table_name="runs")
    op.drop_table("runs")

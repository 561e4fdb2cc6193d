"""Pipelines: jobs the scheduler runs by itself, their triggers, every firing, and the lock a running job holds;
model steps: what happened on a model version's way to an alias (trigger, gates, promotion).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create pipelines, pipeline_triggers, pipeline_firings and pipeline_locks."""
    op.create_table(
        "pipelines",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("job_file", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("project_sha256", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pipelines")),
    )
    op.create_table(
        "pipeline_triggers",
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("anchor", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline"], ["pipelines.name"], name="fk_pipeline_triggers_pipeline_pipelines"),
        sa.PrimaryKeyConstraint("pipeline", "name", name=op.f("pk_pipeline_triggers")),
    )
    op.create_table(
        "pipeline_firings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("fired_by", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submission_id", sa.String(128), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_firings")),
        sa.UniqueConstraint("pipeline", "trigger", "due_at", name="uq_pipeline_firings_pipeline_trigger_due_at"),
    )
    op.create_index("ix_pipeline_firings_pipeline_id", "pipeline_firings", ["pipeline", "id"])
    op.create_index("ix_pipeline_firings_state", "pipeline_firings", ["state"])
    op.create_table(
        "pipeline_locks",
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("firing_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", name=op.f("pk_pipeline_locks")),
    )
    op.create_table(
        "model_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_steps")),
    )
    op.create_index("ix_model_steps_model_name_model_version", "model_steps", ["model_name", "model_version"])


def downgrade() -> None:
    """Drop the pipeline tables and model_steps."""
    op.drop_index("ix_model_steps_model_name_model_version", table_name="model_steps")
    op.drop_table("model_steps")
    op.drop_table("pipeline_locks")
    op.drop_index("ix_pipeline_firings_state", table_name="pipeline_firings")
    op.drop_index("ix_pipeline_firings_pipeline_id", table_name="pipeline_firings")
    op.drop_table("pipeline_firings")
    op.drop_table("pipeline_triggers")
    op.drop_table("pipelines")

"""The `monitor` section: defaults of `raymlp monitor` for the job's model (no stage runs it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ColumnDriftConfig(Section):
    test: Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"] | None = Field(
        default=None, description="The column's drift test (default: chosen by type and reference size)."
    )
    threshold: float | None = Field(
        default=None, gt=0, le=1000, description="Drift below this p-value, or at or above this distance."
    )


class MonitorConfig(Section):
    window: str | None = Field(
        default="24h",
        pattern=r"^\s*\d+(\.\d+)?\s*(s|m|h|d|w)\s*$",
        description="The window analysed: the last so long (30m, 24h, 7d); null: everything captured.",
    )
    reference: str | None = Field(
        default=None,
        description="What the window is compared with: DATASET@VERSION, or capture:SINCE..UNTIL "
        "(default: the model's own training split, from its lineage).",
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="The data drifts when at least this share of feature columns does."
    )
    correction: Literal["none", "bonferroni", "fdr"] = Field(
        default="none", description="Multiple-testing correction of the p-value tests over the columns."
    )
    columns: dict[str, ColumnDriftConfig] = Field(
        default_factory=dict, description="Per column (or `prediction`): its drift test and threshold."
    )
    buckets: int = Field(default=24, ge=1, le=1000, description="Time buckets of the report's charts.")
    fail_on_drift: bool = Field(default=False, description="Exit 3 when the data drifts (cron and CI act on it).")

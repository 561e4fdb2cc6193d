"""Printing results: tables on a terminal, JSON on request."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    # Into a pipe or a file, rich would wrap at 80 columns, cutting cells over lines that scripts grep.
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


def print_summary(summary: Any) -> None:
    """The closing table of `raymlp run`: what was made."""
    rows: list[list[Any]] = [["run", summary.run_id]]
    if summary.ray_startup_seconds is not None:
        rows.append(["ray", f"{summary.ray_address} (up in {summary.ray_startup_seconds:.1f}s)"])
    if summary.dataset:
        extra = f", {summary.quarantined_rows} quarantined" if summary.quarantined_rows else ""
        extra += ", reused: same rows as before" if summary.dataset_reused else ""
        rows.append(["dataset version", f"{summary.dataset} ({summary.dataset_rows} rows{extra})" if summary.dataset_rows else summary.dataset])
    if summary.mlflow_run_id:
        rows.append(["MLflow run", summary.mlflow_run_id])
    for key, value in sorted(summary.metrics.items()):
        rows.append([key, f"{value:.4f}"])
    if summary.model:
        alias = f" (alias {summary.alias} {'moved' if summary.alias_moved else 'NOT moved: gate failed'})" if summary.alias else ""
        rows.append(["model version", f"{summary.model} version {summary.model_version}{alias}"])
    if summary.predictions:
        rows.append(["predictions", f"{summary.predictions} ({summary.predicted_rows} rows)"])
    if summary.endpoint:
        rows.append(["endpoint", f"{summary.endpoint} (answered: {summary.sample_prediction!r})"])
    for stage, seconds in summary.stages.items():
        rows.append([f"time: {stage}", f"{seconds:.1f}s"])
    rows.append(["time: total", f"{summary.total_seconds:.1f}s"])
    print_table(f"raymlp run {summary.job}", ["what", "made"], rows)

"""Printing results: tables on a terminal, JSON on request."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

PIPE_WIDTH = 200  # off a terminal, without COLUMNS


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def number(value: Any) -> str:
    """A float to 6 significant digits (0.972222, 1.2e-05); anything else as it is."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def timestamp(value: datetime | int | float | None) -> str:
    """A time to the second, in UTC: a datetime, or milliseconds since the epoch (MLflow's)."""
    if value is None:
        return ""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value / 1000, UTC)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    """One table cell, never a Python repr: lists joined, mappings as key=value, floats shortened."""
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return number(value)


def width() -> int | None:
    """Table width: the terminal's; else COLUMNS when set; else a wide default a script can grep."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if sys.stdout.isatty() else PIPE_WIDTH


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(item) for item in row))
    # Into a pipe or a file, rich would wrap at 80 columns, cutting cells over lines that scripts grep.
    Console(highlight=False, width=width()).print(table)


def print_listing(rows: list[dict[str, Any]], as_json: bool, title: str, columns: list[str], cells: Any) -> None:
    """A `list` command's answer: the rows as JSON, else a table of `cells(row)` under `columns`."""
    if as_json:
        print_json(rows)
    else:
        print_table(title, columns, [cells(row) for row in rows])


def print_lines(title: str, lines: list[str]) -> None:
    """A titled list of plain lines (lineage, preprocessing steps): one per line, never wrapped into a box."""
    if lines:
        sys.stdout.write(f"{title}\n" + "".join(f"  {line}\n" for line in lines))


def print_summary(summary: Any) -> None:
    """The closing table of `raymlp run`: what was made."""
    rows: list[list[Any]] = [["run", summary.run_id]]
    if summary.ray_startup_seconds is not None:
        rows.append(["ray", f"{summary.ray_address} (up in {summary.ray_startup_seconds:.1f}s)"])
    if summary.dataset:
        extra = f", {summary.quarantined_rows} quarantined" if summary.quarantined_rows else ""
        extra += ", reused: same rows as before" if summary.dataset_reused else ""
        rows.append(
            [
                "dataset version",
                f"{summary.dataset} ({summary.dataset_rows} rows{extra})" if summary.dataset_rows else summary.dataset,
            ]
        )
    if summary.mlflow_run_id:
        rows.append(["MLflow run", summary.mlflow_run_id])
    for key, value in sorted(summary.metrics.items()):
        rows.append([key, f"{value:.4f}"])
    if summary.model:
        alias = (
            f" (alias {summary.alias} {'moved' if summary.alias_moved else 'NOT moved: gate failed'})"
            if summary.alias
            else ""
        )
        rows.append(["model version", f"{summary.model} version {summary.model_version}{alias}"])
    if summary.predictions:
        rows.append(["predictions", f"{summary.predictions} ({summary.predicted_rows} rows)"])
    if summary.endpoint:
        rows.append(["endpoint", f"{summary.endpoint} (answered: {summary.sample_prediction!r})"])
    for stage, seconds in summary.stages.items():
        rows.append([f"time: {stage}", f"{seconds:.1f}s"])
    rows.append(["time: total", f"{summary.total_seconds:.1f}s"])
    print_table(f"raymlp run {summary.job}", ["what", "made"], rows)


def print_drift_table(title: str, columns: list[dict[str, Any]], prediction: dict[str, Any] | None = None) -> None:
    """Drift test results (`raymlp monitor`, `data compare`), one row a column; the prediction's first."""
    tested = ([{**prediction, "column": "(prediction)"}] if prediction else []) + columns
    print_table(
        title,
        ["column", "kind", "test", "score", "threshold", "drift"],
        [
            [
                c["column"],
                c["kind"],
                c["test"],
                number(c["score"]),
                number(c["threshold"]),
                "DRIFT" if c["drifted"] else "-",
            ]
            for c in tested
        ],
    )

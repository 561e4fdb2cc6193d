"""The sweep's HTML report: one self-contained file next to the run (`runs/RUN/tune_report.html`),
logged to the sweep's MLflow run.

It shows the sweep's metric against each searched setting (a point per trial; finished trials
apart from those stopped early), the learning curves of the best trials (their per-epoch metric
from MLflow, with every other trial's curve faint behind them), and the trials table, best first.
Plots are drawn with matplotlib as inline SVG, so the file needs nothing else to open.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

BEST_CURVES = 5
_STATE_COLOURS = {"finished": "#1f77b4", "stopped early": "#ff7f0e", "error": "#d62728"}


def ordered_trials(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The trials best first; those without a metric last."""
    sign = -1 if results["mode"] == "max" else 1
    return sorted(results["trials"], key=lambda row: (row["metric"] is None, sign * (row["metric"] or 0.0)))


def learning_curves(tracker: Any, results: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Each trial's per-epoch metric (step = epoch) from its MLflow run."""
    curves = {}
    for row in results["trials"]:
        run = row.get("trial_mlflow_run_id") or row.get("mlflow_run_id")
        if not run:
            continue
        history = tracker.client.get_metric_history(run, results["metric"])
        curves[row["trial"]] = sorted((int(point.step), float(point.value)) for point in history)
    return curves


def write_report(
    results: dict[str, Any], curves: dict[str, list[tuple[int, float]]], space: dict[str, Any], path: str | Path
) -> str:
    """Write the report atomically (a local file or an object in a bucket); returns its name."""
    metric = results["metric"]
    sections = [_header(results)]
    sections.append(
        "<h2>"
        + html.escape(metric)
        + " against each setting</h2><div class='plots'>"
        + "".join(_parameter_plot(results, name, dimension) for name, dimension in space.items())
        + "</div>"
    )
    sections.append(f"<h2>Learning curves of the best {BEST_CURVES} trials</h2>" + _curves_plot(results, curves))
    sections.append("<h2>Trials</h2>" + _table(results))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(f"Sweep {results['job']}")
        + "</title><style>"
        + _STYLE
        + "</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )
    from raymlp.storage import files

    files.write_text(path, page)
    return str(path)


def _header(results: dict[str, Any]) -> str:
    best = results.get("best")
    states: dict[str, int] = {}
    for row in results["trials"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    lines = [
        f"<h1>Sweep of {html.escape(results['job'])}</h1>",
        f"<p>run {html.escape(results['run_id'])}, MLflow run {html.escape(results['mlflow_run_id'])}; "
        f"{len(results['trials'])} trials ({html.escape(counts)}) in {results['seconds']:.1f} s; "
        f"metric {html.escape(results['metric'])} ({html.escape(results['mode'])})</p>",
    ]
    if best:
        shown = ", ".join(
            f"{html.escape(key)} = {html.escape(json.dumps(value))}" for key, value in best["params"].items()
        )
        lines.append(
            f"<p class='best'>best trial {html.escape(best['trial'])}: {html.escape(results['metric'])} "
            f"{best['metric']:.4f} with {shown}</p>"
        )
    return "".join(lines)


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 3.0), layout="constrained")
    return figure, figure.subplots()


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _parameter_plot(results: dict[str, Any], name: str, dimension: Any) -> str:
    figure, axes = _figure()
    rows = [row for row in results["trials"] if row["metric"] is not None and name in row["params"]]
    values = [row["params"][name] for row in rows]
    numeric = all(isinstance(value, int | float) and not isinstance(value, bool) for value in values)
    if numeric:
        positions = values
        if getattr(dimension, "loguniform", None) is not None and all(value > 0 for value in values):
            axes.set_xscale("log")
    else:
        categories = sorted({json.dumps(value) for value in values})
        positions = [categories.index(json.dumps(value)) for value in values]
        axes.set_xticks(
            range(len(categories)), [label[:18] for label in categories], rotation=30, ha="right", fontsize=7
        )
    for state, colour in _STATE_COLOURS.items():
        chosen = [(x, row["metric"]) for x, row in zip(positions, rows) if row["state"] == state]
        if chosen:
            axes.scatter(*zip(*chosen), s=18, color=colour, label=state, alpha=0.8)
    best = results.get("best")
    if best and name in best["params"] and best["metric"] is not None:
        x = best["params"][name] if numeric else categories.index(json.dumps(best["params"][name]))
        axes.scatter([x], [best["metric"]], s=90, facecolors="none", edgecolors="black", label="best")
    axes.set_xlabel(name, fontsize=8)
    axes.set_ylabel(results["metric"], fontsize=8)
    if rows:
        axes.legend(fontsize=7)
    return f"<figure>{_svg(figure)}</figure>"


def _curves_plot(results: dict[str, Any], curves: dict[str, list[tuple[int, float]]]) -> str:
    figure, axes = _figure()
    figure.set_size_inches(7.0, 3.6)
    best = [row["trial"] for row in ordered_trials(results) if row["metric"] is not None][:BEST_CURVES]
    for trial, points in curves.items():
        if points and trial not in best:
            axes.plot(*zip(*points), color="#cccccc", linewidth=0.8, marker="." if len(points) == 1 else None)
    for trial in best:
        points = curves.get(trial) or []
        if points:
            axes.plot(*zip(*points), linewidth=1.6, marker="o", markersize=3, label=trial)
    axes.set_xlabel("epoch", fontsize=8)
    axes.set_ylabel(results["metric"], fontsize=8)
    if any(curves.get(trial) for trial in best):
        axes.legend(fontsize=7, title="trial", title_fontsize=7)
    return f"<figure>{_svg(figure)}</figure>"


def _table(results: dict[str, Any]) -> str:
    names = list(results["trials"][0]["params"]) if results["trials"] else []
    head = "".join(
        f"<th>{html.escape(text)}</th>"
        for text in ["trial", results["metric"], "state", "epochs", *names, "MLflow run"]
    )
    body = []
    for row in ordered_trials(results):
        metric = "" if row["metric"] is None else f"{row['metric']:.4f}"
        cells = [
            row["trial"],
            metric,
            row["state"] + (f": {row['error']}" if row.get("error") else ""),
            str(row["epochs"]),
            *(json.dumps(row["params"].get(name)) for name in names),
            row.get("trial_mlflow_run_id") or row.get("mlflow_run_id") or "",
        ]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.best { font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
"""

"""The monitoring report's HTML page: escaped, self-contained, most drifted first, and readable in Chromium."""

from __future__ import annotations

import copy
import html
import math
import re
from typing import Any

import numpy as np
from PIL import Image
from scipy import stats
from sklearn.datasets import load_wine

from raymlp.monitor.html import render_report
from tests.browser import open_page

HOSTILE_COLUMN = "<script>alert(1)</script>"
HOSTILE_CATEGORY = 'rosé & "natural"'
SHIFTED = {"alcohol": 0.9, "color_intensity": 2.5}


def sample_report() -> dict[str, Any]:
    """A report as the monitor writes it: wine's training split as the reference, the rest (alcohol and colour
    intensity shifted) as the current window, KS tests per numeric column, one categorical and one binary."""
    wine = load_wine(as_frame=True).frame
    rng = np.random.default_rng(0)
    order = rng.permutation(len(wine))
    reference, current = wine.iloc[order[:124]], wine.iloc[order[124:]].copy()
    for column, shift in SHIFTED.items():
        current[column] += shift
    columns, distributions = [], {}
    for column in wine.columns.drop("target"):
        before, after = reference[column].to_numpy(), current[column].to_numpy()
        edges = np.linspace(min(before.min(), after.min()), max(before.max(), after.max()), 13)
        p_value = float(stats.ks_2samp(before, after).pvalue)
        columns.append(_test(column, "numeric", "ks", "p_value", p_value, 0.05, p_value < 0.05, len(after)))
        distributions[column] = {
            "kind": "numeric",
            "edges": edges.tolist(),
            "reference": (np.histogram(before, edges)[0] / len(before)).tolist(),
            "current": (np.histogram(after, edges)[0] / len(after)).tolist(),
        }
    columns.append(_test(HOSTILE_COLUMN, "categorical", "chisquare", "p_value", 0.0021, 0.05, True, 54))
    distributions[HOSTILE_COLUMN] = {
        "kind": "categorical",
        "categories": ["red", "white", HOSTILE_CATEGORY, "sparkling dessert wine"],
        "reference": [0.55, 0.35, 0.1, 0.0],
        "current": [0.38, 0.3, 0.2, 0.12],
    }
    columns.append(_test("organic", "binary", "jensenshannon", "distance", 0.031, 0.1, False, 54))
    distributions["organic"] = {
        "kind": "binary",
        "categories": [False, True],
        "reference": [0.8, 0.2],
        "current": [0.77, 0.23],
    }
    drifted = sum(column["drifted"] for column in columns)
    hours = [f"2026-12-07T{hour:02d}:00:00+00:00" for hour in range(7)] + ["2026-12-07T07:00:00+00:00"]
    buckets = [
        {"start": start, "end": end, "rows": 6 + index} for index, (start, end) in enumerate(zip(hours, hours[1:]))
    ]
    return {
        "format": "raymlp.monitor-report/1",
        "model": "wine-sklearn",
        "versions": ["3"],
        "task": "classification",
        "label": "target",
        "created_at": "2026-12-07T08:00:13.52+00:00",
        "window": {
            "since": hours[0],
            "until": hours[-1],
            "rows": len(current),
            "requests": 50,
            "description": "last 7h",
        },
        "reference": {"description": "wine@2, training split", "rows": len(reference)},
        "drift": {
            "share": drifted / len(columns),
            "share_threshold": 0.5,
            "drifted": drifted / len(columns) >= 0.5,
            "correction": "none",
            "columns_tested": len(columns),
            "columns_drifted": drifted,
            "columns": columns,
            "prediction": _test("prediction", "categorical", "chisquare", "p_value", 0.41, 0.05, False, 54),
        },
        "anomalies": [
            {
                "column": HOSTILE_COLUMN,
                "kind": "unseen_category",
                "message": f"'{HOSTILE_CATEGORY}' (20% of rows) was never seen in the reference",
            },
            {"column": "magnesium", "kind": "null_rate", "message": "4% null, 0% in the reference"},
        ],
        "distributions": distributions,
        "predictions_over_time": [
            {
                **bucket,
                "shares": {"class_0": 0.3 + 0.02 * index, "class_1": 0.4 - 0.03 * index, "class_2": 0.3 + 0.01 * index},
            }
            for index, bucket in enumerate(buckets)
        ],
        "performance": {
            "metric": "accuracy",
            "measured": {"rows": 30, "metrics": {"accuracy": 0.9333, "f1_macro": 0.9281, "log_loss": 0.2114}},
            "estimated": {
                "rows": len(current),
                "metrics": {"accuracy": 0.9107},
                "assumption": "the model's confidence is calibrated on the reference and P(label | features) "
                "did not change (confidence-based performance estimation)",
            },
            "over_time": [
                {
                    **bucket,
                    "measured": None if index in (2, 5) else 0.95 - 0.01 * index,
                    "estimated": 0.94 - 0.008 * index,
                }
                for index, bucket in enumerate(buckets)
            ],
        },
        "skipped_files": [
            {
                "path": "s3://bucket/captures/wine-sklearn/3/2026-12-07/part-00017.parquet",
                "reason": "not a Parquet file: magic bytes b'PK\\x03\\x04' <zip?>",
            }
        ],
    }


def _test(column, kind, test, score_kind, score, threshold, drifted, current_rows) -> dict[str, Any]:
    return {
        "column": column,
        "kind": kind,
        "test": test,
        "score_kind": score_kind,
        "score": score,
        "threshold": threshold,
        "drifted": drifted,
        "reference_rows": 124,
        "current_rows": current_rows,
    }


def _drift_table_columns(page: str) -> list[str]:
    table = re.search(r"<table class='drift'>.*?</table>", page, re.S)
    assert table is not None
    return [html.unescape(name) for name in re.findall(r"<tr class='[^']*'><td><code>(.*?)</code>", table.group(0))]


def test_every_report_string_is_escaped_and_the_page_has_no_script():
    page = render_report(sample_report())

    assert HOSTILE_COLUMN not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "rosé &amp; &quot;natural&quot;" in page
    assert "&lt;zip?&gt;" in page
    assert "<script" not in page.lower()


def test_the_page_loads_nothing_from_anywhere():
    page = render_report(sample_report())

    assert not re.search(r"https?://", page, re.I)
    assert not re.search(r"\b(src|href|xlink:href)\s*=|@import|url\(|<link|<a\b|<iframe|<object|<embed", page, re.I)


def test_the_drift_table_lists_the_prediction_then_the_most_drifted_first():
    report = sample_report()
    report["drift"]["columns"].append(_test("sulphates", "numeric", "psi", "distance", 0.9, 0.2, True, 54))
    report["drift"]["columns"].append(_test("potassium", "numeric", "wasserstein", "distance", math.inf, 0.1, True, 54))

    order = _drift_table_columns(render_report(report))

    assert order[0] == "prediction"
    columns = {row["column"]: row for row in report["drift"]["columns"]}
    drifted = [name for name in order[1:] if columns[name]["drifted"]]
    assert order[1 : len(drifted) + 1] == drifted, "drifted columns come first"
    # severity: an infinite distance leads, then KS p-values far below 0.05, then 0.05 / 0.0021 = 24, then 0.9 / 0.2
    assert drifted[0] == "potassium"
    assert set(drifted[1:3]) == {"alcohol", "color_intensity"}
    assert drifted[3:] == [HOSTILE_COLUMN, "sulphates"]


def test_sections_without_data_say_so():
    report = sample_report()
    report.update(anomalies=[], distributions={}, predictions_over_time=[], performance=None, skipped_files=[])
    report["drift"].update(columns=[], prediction=None)
    del report["label"]
    report["window"].update(since=None, until=None)

    page = render_report(report)

    for line in (
        "No anomalies.",
        "No distributions in this report.",
        "No predictions over time in this report.",
        "No performance in this report.",
        "No files were skipped.",
        "No drift tests in this report.",
    ):
        assert line in page
    assert "<svg" not in page


def test_missing_pieces_and_a_regression_report_render():
    report = sample_report()
    report["task"] = "regression"
    report["predictions_over_time"] = [
        {"start": bucket["start"], "end": bucket["end"], "rows": bucket["rows"], "mean": 5.5 + index / 10}
        for index, bucket in enumerate(report["predictions_over_time"])
    ]
    report["performance"] = {
        "metric": "rmse",
        "measured": None,
        "estimated": None,
        "over_time": [{**bucket, "measured": None, "estimated": None} for bucket in report["performance"]["over_time"]],
    }
    report["drift"]["columns"][0]["score"] = None
    for key in ("anomalies", "skipped_files", "created_at", "format"):
        report[key] = None

    page = render_report(report)

    assert "No rmse over time" in page
    assert "Mean prediction per time bucket" in page
    assert page.count("<svg") == len(report["distributions"]) + 1


def test_numbers_have_four_significant_digits_and_times_are_shortened_to_the_minute():
    report = sample_report()
    report["drift"]["columns"][1]["score"] = 0.000123456
    report["drift"]["columns"][2]["note"] = "ties in <both> samples"
    report["window"]["rows"] = 1234567

    page = render_report(report)

    assert "0.0001235" in page
    assert "ties in &lt;both&gt; samples" in page
    assert "1,234,567" in page
    assert "2026-12-07 08:00 UTC" in page  # created_at 2026-12-07T08:00:13.52+00:00
    assert "08:00:13" not in page


def test_a_person_sees_every_plot_and_no_error_in_chromium(tmp_path):
    report = sample_report()
    page = render_report(report)
    path = tmp_path / "monitor.html"
    path.write_text(page, encoding="utf-8")
    screenshot = tmp_path / "monitor.png"

    view = open_page(path, screenshot)

    assert view.console_errors == []
    assert view.outside_requests == []
    assert view.svg_count == page.count("<svg") == len(report["distributions"]) + 2
    assert "wine-sklearn" in view.title and "wine-sklearn" in view.text
    for column in ("alcohol", "color_intensity", HOSTILE_COLUMN):
        assert column in view.text
    assert "No anomalies" not in view.text
    image = Image.open(screenshot).convert("RGB")
    assert image.width == 1280 and image.height > 2000, image.size
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is nearly blank"


def test_sample_report_is_not_changed_by_rendering():
    report = sample_report()
    before = copy.deepcopy(report)

    render_report(report)

    assert report == before

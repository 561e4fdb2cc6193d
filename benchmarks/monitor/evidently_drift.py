"""Column drift with Evidently 0.7, as a baseline for the raymlp drift monitor.

Runs in its own virtualenv (imports nothing of raymlp). Evidently 0.7 breaks with pandas 3, so:

    python3.11 -m venv VENV && VENV/bin/pip install "evidently>=0.7,<0.8" "pandas<3" pyarrow
    VENV/bin/python evidently_drift.py --reference ref.parquet --current a.parquet,b.parquet \
        --categorical city,device --json out.json

Evidently's DataDriftPreset picks each column's test (Wasserstein (normed) / Jensen-Shannon for references
over 1000 rows, K-S / chi-square / Z-test for smaller ones) and its default threshold. The per-column verdict is
the status of the "drift" test of each ValueDrift metric (FAIL means drift), the dataset verdict that of the
DriftedColumnsCount share test (FAIL when share >= drift_share, 0.5).
"""

import argparse
import json
import os
import time

os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently.telemetry (UI/collector event logger)
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")  # evidently.legacy._config

import evidently
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def split(value):
    return [v for v in (value or "").split(",") if v]


def read(files, columns):
    frames = [pd.read_parquet(f, engine="pyarrow", columns=columns) for f in split(files)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="Parquet file(s), comma-separated")
    parser.add_argument("--current", required=True, help="Parquet file(s), comma-separated")
    parser.add_argument("--columns", help="columns to test, comma-separated (default: all)")
    parser.add_argument("--categorical", help="columns to declare categorical; the others are numerical")
    parser.add_argument("--json", required=True, help="where to write the result")
    args = parser.parse_args()

    start = time.perf_counter()
    columns = split(args.columns) or None
    reference = read(args.reference, columns)
    current = read(args.current, columns)
    read_seconds = time.perf_counter() - start

    columns = list(reference.columns)
    categorical = [c for c in split(args.categorical) if c in columns]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categorical], categorical_columns=categorical
    )

    start = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    results = snapshot.dict()
    seconds = time.perf_counter() - start

    failed = {t["metric_config"]["metric_id"] for t in results["tests"] if t["status"] == "FAIL"}
    out = {"seconds": seconds, "read_seconds": read_seconds, "columns": {}}
    for metric in results["metrics"]:
        config, kind = metric["config"], metric["config"]["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            out["columns"][config["column"]] = {
                "test": config["method"],
                "score": float(metric["value"]),
                "threshold": float(config["threshold"]),
                "drifted": metric["id"] in failed,
            }
        elif kind == "DriftedColumnsCount":
            out["share"] = float(metric["value"]["share"])
            out["dataset_drift"] = metric["id"] in failed
    out["evidently_version"] = evidently.__version__
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

"""Quickstart benchmark: raymlp's stages against a plain one-process script doing the same work.

    .venv/bin/python benchmarks/quickstart/bench.py            # full: the quickstart as shipped
    .venv/bin/python benchmarks/quickstart/bench.py --smoke    # 3 epochs, for a quick check

Both sides run in this process, on the same CSV, one after the other. raymlp starts its own
embedded Ray (that start-up is reported separately); the baseline uses pandas, SQLite, pyarrow,
scikit-learn's StandardScaler and a plain PyTorch loop with the same model, epochs and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_startup_seconds(repeats: int = 3) -> list[float]:
    import ray

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), logging_level="ERROR", dashboard_host="127.0.0.1")
        times.append(time.perf_counter() - started)
        ray.shutdown()
    return times


def run_raymlp(workdir: Path, overrides: list[str]) -> dict:
    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    os.environ["RAYMLP_HOME"] = str(workdir / ".raymlp")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        job = load_job(REPO / "jobs" / "quickstart.yaml", [*overrides, f"serve.port={free_port()}"])
        summary = run_job(job, reporter=Reporter(quiet=True))
    finally:
        os.chdir(previous)
    return {
        "stages": summary.stages,
        "ray_startup": summary.ray_startup_seconds,
        "total": summary.total_seconds,
        "test_accuracy": summary.metrics.get("test_accuracy"),
    }


def run_baseline(workdir: Path, epochs: int) -> dict:
    """The same work as one plain Python process would script it."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    stages: dict[str, float] = {}
    started = time.perf_counter()
    frame = pd.read_csv(workdir / "data" / "wine.csv")
    with sqlite3.connect(workdir / "baseline.db") as connection:
        frame.to_sql("wine_raw", connection, if_exists="replace", index=False)
    stages["collect"] = time.perf_counter() - started

    started = time.perf_counter()
    with sqlite3.connect(workdir / "baseline.db") as connection:
        table = pd.read_sql("SELECT * FROM wine_raw", connection)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), workdir / "baseline.parquet")
    stages["convert"] = time.perf_counter() - started

    started = time.perf_counter()
    data = pd.read_parquet(workdir / "baseline.parquet")
    labels = data.pop("target")
    classes = sorted(labels.unique())
    y = labels.map({name: index for index, name in enumerate(classes)}).to_numpy()
    train_x, rest_x, train_y, rest_y = train_test_split(data, y, test_size=0.4, random_state=7, stratify=y)
    val_x, test_x, val_y, test_y = train_test_split(rest_x, rest_y, test_size=0.5, random_state=7, stratify=rest_y)
    scaler = StandardScaler().fit(train_x)
    tensor = lambda values: torch.tensor(scaler.transform(values), dtype=torch.float32)  # noqa: E731
    torch.manual_seed(7)
    model = torch.nn.Sequential(
        torch.nn.Linear(13, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(32, 16),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 3),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    features, targets = tensor(train_x), torch.tensor(train_y)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(features))
        for start in range(0, len(order), 16):
            batch = order[start : start + 16]
            loss = torch.nn.functional.cross_entropy(model(features[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(tensor(val_x)).argmax(1)
    with torch.no_grad():
        accuracy = float((model(tensor(test_x)).argmax(1).numpy() == test_y).mean())
    stages["train"] = time.perf_counter() - started

    started = time.perf_counter()
    with torch.no_grad():
        predictions = np.asarray(classes)[model(tensor(data)).argmax(1).numpy()]
    pd.DataFrame({"prediction": predictions}).to_csv(workdir / "baseline_predictions.csv", index=False)
    stages["predict"] = time.perf_counter() - started
    return {"stages": stages, "test_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 epochs instead of the job's 30")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    args = parser.parse_args()
    epochs = 3 if args.smoke else 30
    overrides = [f"train.epochs={epochs}"]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        from raymlp.data.sources import sklearn_frame

        (workdir / "data").mkdir()
        sklearn_frame("wine").to_csv(workdir / "data" / "wine.csv", index=False)
        startups = ray_startup_seconds()
        raymlp = run_raymlp(workdir, overrides)
        baseline = run_baseline(workdir, epochs)

    print(f"quickstart benchmark ({epochs} epochs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    print(f"Ray start-up (ray.init of a local cluster, 3 runs): {', '.join(f'{s:.1f}s' for s in startups)}")
    print(f"{'stage':<10}{'raymlp s':>10}{'baseline s':>12}{'ratio':>8}")
    for stage, seconds in raymlp["stages"].items():
        base = baseline["stages"].get(stage)
        ratio = f"{seconds / base:.1f}x" if base else "-"
        print(f"{stage:<10}{seconds:>10.2f}{(f'{base:.2f}' if base else '-'):>12}{ratio:>8}")
    print(f"{'total':<10}{raymlp['total']:>10.2f}{sum(baseline['stages'].values()):>12.2f}")
    print(f"test accuracy: raymlp {raymlp['test_accuracy']:.3f}, baseline {baseline['test_accuracy']:.3f}")
    if args.json:
        print(json.dumps({"epochs": epochs, "ray_startup": startups, "raymlp": raymlp, "baseline": baseline}))


if __name__ == "__main__":
    main()

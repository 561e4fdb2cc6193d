"""Batch prediction of 1M rows: raymlp's `predict_batch` (Ray Data) against one pandas process.

    .venv/bin/python benchmarks/predict/bench_batch_predict.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/predict/bench_batch_predict.py --rows 100000   # smoke size

The model: `jobs/wine-sklearn.yaml` trained and registered through the Python API (`run_job`) in a
temporary RAYMLP_HOME, with its forest cut to 50 trees and `n_jobs: 1` (so scoring runs on one
thread on both sides: the baseline would otherwise get the forest's own threads), behind the job's
`standard_scaler`. The input: `--rows` rows drawn from scikit-learn's wine data with Gaussian noise
(a tenth of each column's standard deviation), written as one Parquet file (row groups of 64Ki rows).

Baseline: one Python process reads the file with pyarrow in chunks of `--chunk` rows (65536 by
default: the fastest chunk size for it, measured against 4096 and 262144), calls the same package's
`predict` on each chunk as a pandas frame, puts input columns and predictions side by side
(`pd.concat`) and writes one Parquet file with `pyarrow.parquet.ParquetWriter`'s defaults. It runs
in this process (pandas, pyarrow and scikit-learn already imported; the package is loaded inside
the timing), before Ray starts. Two more baseline rows for reference: the same loop writing with
raymlp's Parquet settings (no dictionary for float columns), and the loop as a script in a fresh
Python process (its imports timed, as raymlp's replicas pay theirs).

raymlp: `predict_batch(package, input.parquet, output.parquet)` on an embedded local Ray started as
raymlp starts it (`raymlp.runtime.ray_runtime`; its start-up is printed apart and never counted):
Ray Data reads the file by row group and scores it in tasks (each worker loads the package on its first
block and keeps it), one Parquet file is written and renamed into place. The first call on the fresh
cluster is reported apart (Ray Data's own actors start then, and the workers load the package); the
figure for the ratio is the best of `--repeats` calls after it, the median printed beside it. Wall time from the
call to the file in place; the load average is printed beside each figure. The outputs are then
compared row for row (`prediction` equal, probabilities and input columns equal).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "wine-sklearn.yaml"
MODEL_OVERRIDES = ["train.model.params.n_estimators=50", "train.model.params.n_jobs=1", "register.model=wine-bench"]


def train(home: Path) -> str:
    """The wine job trained and registered in `home`; the package's folder."""
    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    os.environ["RAYMLP_HOME"] = str(home)
    summary = run_job(load_job(JOB, MODEL_OVERRIDES), reporter=Reporter(quiet=True))
    print(
        f"trained {summary.model} version {summary.model_version}: test accuracy "
        f"{summary.metrics.get('test_accuracy', float('nan')):.3f}",
        flush=True,
    )
    return str(summary.package_dir)


def write_input(path: Path, rows: int, feature_names: list[str], seed: int = 7) -> None:
    """`rows` wine-like rows: wine rows drawn at random, plus noise of a tenth of each column's std."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    base = wine[feature_names].to_numpy(dtype=np.float64)
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, len(base), rows)
    values = base[picks] + generator.standard_normal((rows, base.shape[1])) * (base.std(axis=0) * 0.1)
    table = pa.table({name: values[:, index] for index, name in enumerate(feature_names)})
    pq.write_table(table, path, row_group_size=65536)


def baseline(package_path: str, source: Path, output: Path, chunk: int, tuned_writer: bool = False) -> float:
    """One process: pyarrow reads chunks, the package predicts each as pandas, pyarrow writes
    (`tuned_writer`: with raymlp's writer settings, no dictionary for float columns)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlp.package import load_package

    started = time.perf_counter()
    package = load_package(package_path)
    writer = None
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=chunk):
            frame = batch.to_pandas()
            scored = pd.concat([frame, package.predict(frame)], axis=1)
            table = pa.Table.from_pandas(scored, preserve_index=False)
            if writer is None:
                dictionary = (
                    [field.name for field in table.schema if not pa.types.is_floating(field.type)]
                    if tuned_writer
                    else True
                )
                writer = pq.ParquetWriter(output, table.schema, use_dictionary=dictionary)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return time.perf_counter() - started


def raymlp_side(package_path: str, source: Path, output: Path) -> float:
    from raymlp.serve.batch import predict_batch

    started = time.perf_counter()
    result = predict_batch(package_path, str(source), str(output))
    assert result.output == output
    return time.perf_counter() - started


def compare(ours: Path, theirs: Path, rows: int) -> str:
    """Row for row: same columns, same predictions, same probabilities, same inputs."""
    import pyarrow.parquet as pq

    left, right = pq.read_table(ours), pq.read_table(theirs)
    if left.column_names != right.column_names:
        raise SystemExit(f"columns differ: raymlp {left.column_names} vs baseline {right.column_names}")
    if left.num_rows != rows or right.num_rows != rows:
        raise SystemExit(f"row counts differ: raymlp {left.num_rows}, baseline {right.num_rows}, input {rows}")
    worst = 0.0
    for name in left.column_names:
        a, b = left.column(name).to_numpy(), right.column(name).to_numpy()
        if name == "prediction" or not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, b):
                raise SystemExit(f"column {name}: {int((a != b).sum())} rows differ")
        else:
            if not np.allclose(a, b, rtol=0, atol=1e-12):
                raise SystemExit(f"column {name}: max difference {np.abs(a - b).max()}")
            worst = max(worst, float(np.abs(a - b).max()))
    exact = "bit for bit" if worst == 0.0 else f"probabilities within {worst:.1e}"
    return f"outputs identical row for row ({rows:,} rows, {len(left.column_names)} columns, {exact})"


def baseline_script(package_path: str, source: Path, output: Path, chunk: int) -> float:
    """The baseline loop as a script: a fresh Python process, timed from its start to its exit."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--baseline-child", json.dumps([package_path, str(source), str(output), chunk])],
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=65536, help="baseline rows per predict call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        package_path, source, output, chunk = json.loads(args.baseline_child)
        baseline(package_path, Path(source), Path(output), chunk)
        return

    def load() -> str:
        return f"load {os.getloadavg()[0]:.2f}"

    times: dict[str, list[float]] = {"base": [], "tuned": [], "script": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="raymlp-bench-predict-") as folder:
        work = Path(folder)
        package_path = train(work / "home")
        from raymlp.package import load_package

        features = load_package(package_path).feature_names
        source = work / "input.parquet"
        started = time.perf_counter()
        write_input(source, args.rows, features)
        print(
            f"input: {args.rows:,} rows x {len(features)} float64 features, "
            f"{source.stat().st_size / 1e6:.0f} MB Parquet ({time.perf_counter() - started:.1f} s to write)",
            flush=True,
        )

        for attempt in range(args.repeats):
            times["base"].append(baseline(package_path, source, work / "baseline.parquet", args.chunk))
            times["tuned"].append(baseline(package_path, source, work / "tuned.parquet", args.chunk, tuned_writer=True))
            times["script"].append(baseline_script(package_path, source, work / "script.parquet", args.chunk))
            print(
                f"  baseline #{attempt + 1}: {times['base'][-1]:.2f} s, with raymlp's writer settings "
                f"{times['tuned'][-1]:.2f} s, as a script {times['script'][-1]:.2f} s ({load()})",
                flush=True,
            )

        from raymlp.runtime import ray_runtime

        with ray_runtime() as runtime:
            print(
                f"Ray start-up (embedded, {os.cpu_count()} CPUs): {runtime.startup_seconds:.1f} s (not in the figures)",
                flush=True,
            )
            cold = raymlp_side(package_path, source, work / "raymlp.parquet")
            print(f"  raymlp, first call on the fresh cluster: {cold:.2f} s ({load()})", flush=True)
            for attempt in range(args.repeats):
                times["warm"].append(raymlp_side(package_path, source, work / "raymlp.parquet"))
                print(f"  raymlp #{attempt + 1}: {times['warm'][-1]:.2f} s ({load()})", flush=True)
        print(compare(work / "raymlp.parquet", work / "baseline.parquet", args.rows))

    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = args.rows
    print(
        f"\nbatch prediction, {rows:,} rows, best of {args.repeats} (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    print(f"{'side':<58}{'seconds':>9}{'rows/s':>12}")
    lines = [
        (f"baseline: pandas loop, chunks of {args.chunk}, in-process", best["base"]),
        ("  same, with raymlp's Parquet writer settings", best["tuned"]),
        ("  same, as a script in a fresh process (imports timed)", best["script"]),
        ("raymlp predict_batch, first call on a fresh Ray", cold),
        ("raymlp predict_batch (Ray Data, 2nd call on)", best["warm"]),
    ]
    for label, seconds in lines:
        print(f"{label:<58}{seconds:>9.2f}{rows / seconds:>12,.0f}")
    print(
        f"ratio raymlp / baseline (rows/s): {best['base'] / best['warm']:.2f}x (goal >= 1.5x); "
        f"against the baseline with raymlp's writer settings {best['tuned'] / best['warm']:.2f}x; "
        f"first call on a fresh Ray against the baseline script {best['script'] / cold:.2f}x"
    )
    print(
        f"medians of {args.repeats}: baseline {median['base']:.2f} s, raymlp {median['warm']:.2f} s, "
        f"ratio {median['base'] / median['warm']:.2f}x"
    )


if __name__ == "__main__":
    main()

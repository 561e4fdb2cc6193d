"""Profile and drift of a large window: raymlp's profiles on Ray Data against a single-process
pandas + scipy script computing the same statistics, and Evidently 0.7 in its own virtualenv.

Data (written once per run, synthetic, seeded): a reference of `--reference-rows` (1M) and a current
window of `--rows` (10M) rows x 30 columns: 22 float columns, 3 integer columns of 5 values, 5 text
columns of 8 categories; the current window has 4 of them moved (2 floats by 0.2 std, an integer's
and a category's mix). Parquet files of 500k rows.

- raymlp: `profile_of_dataset` over `captures.dataset_of` each side (the reader `raymlp monitor`
  uses: runs of row groups of at most 131,072 rows; one task per block: exact
  counts, KLL/frequent-items sketches) merged in the driver, then `drift_results` (the tests
  Evidently 0.7 picks for a reference over 1000 rows: Wasserstein / reference std for numeric columns
  with more than 5 distinct values, Jensen-Shannon otherwise). Timed from the read to the verdicts,
  on a local Ray started before the clock (its start-up is printed apart). Peak memory: the sum of
  the resident memory of the driver and every process of the Ray session, sampled every 0.1 s.
- baseline: what a user writes instead: pandas reads both sides, scipy's `wasserstein_distance` and
  `jensenshannon` (Evidently's binning: 30 equal-width bins over both sides, 0.0001 for empty bins)
  per column, and the same summary statistics (count, missing, mean, std, min, max, 5 quantiles,
  distinct values); one process (its peak resident memory from the kernel).
- Evidently 0.7's DataDriftPreset (`evidently_drift.py` beside this file) in a virtualenv the script
  makes at /tmp/raymlp-bench-evidently (once): its verdict per column, compared with raymlp's where
  both ran the same test, and its time.

    .venv/bin/python benchmarks/monitor/bench_drift.py                      # 10M rows
    .venv/bin/python benchmarks/monitor/bench_drift.py --rows 1000000 --no-evidently   # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EVIDENTLY_VENV = "/tmp/raymlp-bench-evidently"
FLOATS, INTS, TEXTS = 22, 3, 5
PART_ROWS = 500_000
CATEGORIES = [f"cat_{index}" for index in range(8)]


def write_side(folder: str, rows: int, seed: int, moved: bool) -> list[str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    paths = []
    rng = np.random.default_rng(seed)
    for part, start in enumerate(range(0, rows, PART_ROWS)):
        count = min(PART_ROWS, rows - start)
        columns = {}
        for index in range(FLOATS):
            shift = 0.2 if moved and index < 2 else 0.0
            columns[f"f{index}"] = rng.normal(index + shift, 1.0 + index / 10, count)
        for index in range(INTS):
            weights = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
            if moved and index == 0:
                weights = weights[::-1]
            columns[f"i{index}"] = rng.choice(5, count, p=weights)
        for index in range(TEXTS):
            weights = np.linspace(1, 2, len(CATEGORIES))
            if moved and index == 0:
                weights = weights[::-1]
            columns[f"t{index}"] = pa.array(rng.choice(CATEGORIES, count, p=weights / weights.sum()))
        path = os.path.join(folder, f"part-{part:04d}.parquet")
        pq.write_table(pa.table(columns), path, row_group_size=131_072)
        paths.append(path)
    return paths


def session_memory() -> int:
    """The summed resident memory of this process and every process of its Ray session."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for process in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(process.info["cmdline"] or [])
            if process.pid != me.pid and ("ray::" in line or "/ray/" in line or "raylet" in line):
                total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class MemorySampler:
    """Peak of `session_memory`, sampled every 0.1 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, session_memory())

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_raymlp(reference: list[str], current: list[str]) -> dict:
    import ray
    import ray.data

    from raymlp.monitor.analysis import Settings, drift_results
    from raymlp.monitor.captures import dataset_of
    from raymlp.monitor.profile import profile_of_dataset

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False
    time.sleep(3)  # the cluster's own processes settle
    idle = session_memory()
    try:
        with MemorySampler() as memory:
            clock = time.perf_counter()
            reference_profile = profile_of_dataset(dataset_of(reference, one_operator=True))
            current_profile = profile_of_dataset(dataset_of(current, one_operator=True))
            columns = list(reference_profile.columns)
            results = drift_results(reference_profile, current_profile, columns, Settings())
            seconds = time.perf_counter() - clock
    finally:
        ray.shutdown()
    summaries = {name: column.summary() for name, column in current_profile.columns.items()}
    return {
        "seconds": seconds,
        "ray_start": ray_start,
        "peak_bytes": memory.peak,
        "idle_bytes": idle,
        "columns": {result.column: result.to_json() for result in results},
        "summaries": summaries,
    }


BASELINE = r"""
import json, sys, time, resource
import numpy as np, pandas as pd
from scipy import stats
from scipy.spatial import distance

reference_files, current_files, out = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
clock = time.perf_counter()
reference = pd.concat([pd.read_parquet(path) for path in reference_files], ignore_index=True)
current = pd.concat([pd.read_parquet(path) for path in current_files], ignore_index=True)
read = time.perf_counter() - clock

def shares(ref, cur, numeric):
    if numeric:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
        a, b = np.histogram(ref, edges)[0] / len(ref), np.histogram(cur, edges)[0] / len(cur)
    else:
        keys = sorted(set(ref.unique()) | set(cur.unique()))
        rc, cc = ref.value_counts(), cur.value_counts()
        a = np.array([rc.get(k, 0) for k in keys]) / len(ref)
        b = np.array([cc.get(k, 0) for k in keys]) / len(cur)
    a, b = np.where(a == 0, 0.0001, a), np.where(b == 0, 0.0001, b)
    return a, b

columns, summaries = {}, {}
for name in reference.columns:
    ref, cur = reference[name].dropna(), current[name].dropna()
    numeric = pd.api.types.is_numeric_dtype(ref)
    distinct = pd.concat([ref, cur]).nunique()
    if numeric and distinct > 5:
        score = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
        test = "wasserstein"
    else:
        score = float(distance.jensenshannon(*shares(ref.to_numpy(), cur.to_numpy(), numeric) if numeric else shares(ref, cur, False)))
        test = "jensenshannon"
    columns[name] = {"test": test, "score": float(score), "drifted": bool(score >= 0.1)}
    entry = {"rows": int(len(current)), "missing": int(current[name].isna().sum()), "distinct": int(cur.nunique())}
    if numeric:
        q = np.quantile(cur, [0.05, 0.25, 0.5, 0.75, 0.95])
        entry.update(mean=float(cur.mean()), std=float(cur.std(ddof=0)), minimum=float(cur.min()), maximum=float(cur.max()),
                     p05=float(q[0]), p25=float(q[1]), median=float(q[2]), p75=float(q[3]), p95=float(q[4]))
    summaries[name] = entry
seconds = time.perf_counter() - clock
json.dump({"seconds": seconds, "read_seconds": read, "columns": columns, "summaries": summaries,
           "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}, open(out, "w"))
"""


def run_baseline(reference: list[str], current: list[str], folder: str) -> dict:
    script = os.path.join(folder, "baseline.py")
    out = os.path.join(folder, "baseline.json")
    with open(script, "w") as handle:
        handle.write(BASELINE)
    subprocess.run([sys.executable, script, ",".join(reference), ",".join(current), out], check=True)
    with open(out) as handle:
        return json.load(handle)


def run_evidently(reference: list[str], current: list[str], folder: str) -> dict | None:
    python = os.path.join(EVIDENTLY_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run(["python3.11", "-m", "venv", EVIDENTLY_VENV], check=True)
        # pandas < 3: Evidently 0.7 asks for pandas >= 1.3.5 but cannot be imported with pandas 3.
        subprocess.run([python, "-m", "pip", "install", "-q", "evidently>=0.7,<0.8", "pandas<3", "pyarrow"], check=True)
    out = os.path.join(folder, "evidently.json")
    categorical = [f"t{index}" for index in range(TEXTS)]
    subprocess.run(
        [
            python,
            os.path.join(HERE, "evidently_drift.py"),
            "--reference",
            ",".join(reference),
            "--current",
            ",".join(current),
            "--categorical",
            ",".join(categorical),
            "--json",
            out,
        ],
        check=True,
    )
    with open(out) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-drift-")
    clock = time.perf_counter()
    reference = write_side(os.path.join(folder, "reference"), args.reference_rows, 1, False)
    current = write_side(os.path.join(folder, "current"), args.rows, 2, True)
    print(
        f"data: {args.reference_rows:,} + {args.rows:,} rows x 30 columns written in {time.perf_counter() - clock:.1f}s"
    )
    ours = run_raymlp(reference, current)
    baseline = run_baseline(reference, current, folder)
    evidently = None if args.no_evidently else run_evidently(reference, current, folder)

    print(f"\n{'':28}{'raymlp':>10}{'pandas+scipy':>14}" + (f"{'evidently':>11}" if evidently else ""))
    line = f"{'seconds (read to verdicts)':28}{ours['seconds']:>10.1f}{baseline['seconds']:>14.1f}"
    print(line + (f"{evidently['seconds'] + evidently['read_seconds']:>11.1f}" if evidently else ""))
    print(f"{'peak memory (GB)':28}{ours['peak_bytes'] / 1e9:>10.2f}{baseline['peak_bytes'] / 1e9:>14.2f}")
    added = (ours["peak_bytes"] - ours["idle_bytes"]) / 1e9
    print(f"{'  of which the idle cluster':28}{ours['idle_bytes'] / 1e9:>10.2f}   (the work added {added:.2f} GB)")
    print(
        f"speed-up over pandas+scipy: {baseline['seconds'] / ours['seconds']:.2f}x (Ray start-up {ours['ray_start']:.1f}s apart)"
    )
    if evidently:
        print(f"speed-up over Evidently: {(evidently['seconds'] + evidently['read_seconds']) / ours['seconds']:.2f}x")
    worst: dict[str, float] = {}
    same_verdicts = 0
    for name, result in ours["columns"].items():
        other = baseline["columns"][name]
        assert result["test"] == other["test"], (name, result["test"], other["test"])
        worst[result["test"]] = max(worst.get(result["test"], 0.0), abs(result["score"] - other["score"]))
        same_verdicts += result["drifted"] == other["drifted"]
    print(
        f"same verdicts as pandas+scipy: {same_verdicts} of {len(ours['columns'])}; largest score difference by test: {worst}"
    )
    drifted = sorted(name for name, result in ours["columns"].items() if result["drifted"])
    print(f"drifted (raymlp): {', '.join(drifted)}")
    if evidently:
        agree = [
            name
            for name in ours["columns"]
            if evidently["columns"].get(name, {}).get("drifted") == ours["columns"][name]["drifted"]
        ]
        print(
            f"same verdicts as Evidently {evidently.get('evidently_version', '')}: {len(agree)} of {len(ours['columns'])}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"raymlp": ours, "baseline": baseline, "evidently": evidently}, handle, indent=1, default=str)


if __name__ == "__main__":
    main()

"""One large CSV file -> Parquet dataset version: `raymlp data convert` against pyarrow.

    .venv/bin/python benchmarks/data/bench_convert_csv.py                 # 300 MB file
    .venv/bin/python benchmarks/data/bench_convert_csv.py --megabytes 50  # smoke size

Baseline: pyarrow's multi-threaded `read_csv` + `write_table` in one process (what a user would
script by hand). raymlp's time is the whole convert stage of a job: source file hashed before and
after, every range parsed, content digest and statistics, Parquet parts written and hashed,
manifest, atomic publish and catalog record. Runs alternate, best of `--repeats` each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyarrow import csv as pacsv
from stage_timing import time_stage, write_job


def write_csv(path: Path, megabytes: int) -> int:
    """A CSV of about `megabytes` MB (ints, floats, short and quoted text), written in batches."""
    rng = np.random.default_rng(0)
    rows, batch = 0, 500_000
    with pacsv.CSVWriter(
        path,
        pa.schema(
            [
                ("id", pa.int64()),
                ("value", pa.float64()),
                ("kind", pa.string()),
                ("count", pa.int64()),
                ("score", pa.float64()),
                ("note", pa.string()),
            ]
        ),
    ) as writer:
        while path.stat().st_size < megabytes * 1_000_000:
            writer.write_table(
                pa.table(
                    {
                        "id": np.arange(rows, rows + batch),
                        "value": rng.random(batch),
                        "kind": rng.choice(["alpha", "beta", "gamma"], batch),
                        "count": rng.integers(0, 10_000, batch),
                        "score": rng.normal(size=batch),
                        "note": rng.choice(["", "short note", "a somewhat longer note, with a comma"], batch),
                    }
                )
            )
            rows += batch
    return rows


def time_pyarrow(csv: Path, out: Path) -> float:
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = pacsv.read_csv(csv)
    pq.write_table(table, out)
    return time.perf_counter() - started


def time_raymlp(csv: Path, home: Path) -> tuple[float, int]:
    seconds, summary = time_stage(write_job(home, f"  source: {{format: csv, path: '{csv}'}}\n"), home, "convert")
    return seconds, summary.dataset_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        csv = home / "events.csv"
        rows = write_csv(csv, args.megabytes)
        size = csv.stat().st_size
        csv.read_bytes()  # both sides start from a warm page cache
        baseline, ours = [], []
        for _ in range(args.repeats):
            baseline.append(time_pyarrow(csv, home / "baseline.parquet"))
            seconds, converted = time_raymlp(csv, home)
            assert converted == rows, (converted, rows)
            ours.append(seconds)
    print(
        f"CSV -> Parquet dataset: {size / 1e6:,.0f} MB, {rows:,} rows, best of {args.repeats}, {os.cpu_count()} cores"
    )
    print(f"{'pyarrow read_csv+write_table':<30}{min(baseline):>8.2f} s  {size / 1e6 / min(baseline):>7.1f} MB/s")
    print(f"{'raymlp data convert':<30}{min(ours):>8.2f} s  {size / 1e6 / min(ours):>7.1f} MB/s")
    print(f"speed ratio raymlp / pyarrow: {min(baseline) / min(ours):.2f}x (goal: at least 1.0x)")


if __name__ == "__main__":
    main()

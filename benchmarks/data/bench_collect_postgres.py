"""File -> PostgreSQL table: `raymlp data collect` against `psql -c "\\copy ... FROM ... CSV"`.

    .venv/bin/python benchmarks/data/bench_collect_postgres.py              # 2,000,000 rows (~150 MB)
    .venv/bin/python benchmarks/data/bench_collect_postgres.py --rows 200000 # smoke size

Same CSV, same server, one after the other, each into a fresh table. raymlp's time includes all it
promises: hashing the source before and after, type mapping, the staging table and the swap.
The URL comes from RAYMLP_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from stage_timing import time_stage, write_job

URL = os.environ.get("RAYMLP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COLUMNS = "id BIGINT, value DOUBLE PRECISION, kind TEXT, count BIGINT, score DOUBLE PRECISION, note TEXT"


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "id": np.arange(rows),
            "value": rng.random(rows),
            "kind": rng.choice(["alpha", "beta", "gamma"], rows),
            "count": rng.integers(0, 10_000, rows),
            "score": rng.normal(size=rows),
            "note": rng.choice(["", "short note", "a somewhat longer note, with a comma"], rows),
        }
    )
    pacsv.write_csv(table, path)


def psql(sql: str) -> None:
    subprocess.run(["psql", URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True)


def time_psql_copy(csv: Path) -> float:
    psql("DROP TABLE IF EXISTS bench_psql")
    started = time.perf_counter()
    psql(f"CREATE TABLE bench_psql ({COLUMNS})")
    psql(f"\\copy bench_psql FROM '{csv}' CSV HEADER")
    return time.perf_counter() - started


def time_raymlp(csv: Path, home: Path) -> float:
    job_file = write_job(
        home,
        f"  source: {{format: csv, path: '{csv}'}}\n  collect: {{url: '{URL}', table: bench_raymlp, mode: replace}}\n",
    )
    return time_stage(job_file, home, "collect")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "events.csv"
        write_csv(csv, args.rows)
        size_mb = csv.stat().st_size / 1e6
        baseline = min(time_psql_copy(csv) for _ in range(args.repeats))
        ours = min(time_raymlp(csv, Path(folder)) for _ in range(args.repeats))
        psql("DROP TABLE IF EXISTS bench_psql; DROP TABLE IF EXISTS bench_raymlp")
    print(f"file -> PostgreSQL table: {args.rows:,} rows, {size_mb:.0f} MB CSV, best of {args.repeats}")
    print(f"{'':<22}{'seconds':>9}{'MB/s':>8}")
    label = "psql \\copy"
    print(f"{label:<22}{baseline:>9.2f}{size_mb / baseline:>8.1f}")
    print(f"{'raymlp data collect':<22}{ours:>9.2f}{size_mb / ours:>8.1f}")
    print(f"speed ratio raymlp / psql: {baseline / ours:.2f}x (goal: at least 0.8x)")


if __name__ == "__main__":
    main()

"""PostgreSQL table -> dataset version: `raymlp data convert` against one `COPY ... TO STDOUT`.

    .venv/bin/python benchmarks/data/bench_convert_postgres.py              # 2,000,000 rows
    .venv/bin/python benchmarks/data/bench_convert_postgres.py --rows 200000 # smoke size

The baseline is one `COPY (SELECT * FROM t) TO STDOUT (FORMAT csv)` received by psql into
/dev/null (no disk write in its way; runs alternate with raymlp's). raymlp's
time is the whole convert stage: the rows read, the content digest, Parquet files written and
hashed, the manifest, the atomic publish and the catalog record.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench_collect_postgres import URL, psql, write_csv
from stage_timing import time_stage, write_job


def time_psql_copy_out() -> float:
    """One `COPY ... TO STDOUT` in CSV, received by psql and thrown away (no disk in the way)."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            ["psql", URL, "-q", "-c", "COPY (SELECT * FROM bench_source) TO STDOUT WITH (FORMAT csv)"],
            check=True,
            stdout=sink,
        )
    return time.perf_counter() - started


def time_raymlp(home: Path) -> tuple[float, int]:
    job_file = write_job(
        home,
        "  source: {format: csv, path: unused.csv}\n"
        f"  collect: {{url: '{URL}', table: bench_source, mode: append}}\n",
    )
    seconds, summary = time_stage(job_file, home, "convert")
    return seconds, summary.dataset_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        csv = home / "events.csv"
        write_csv(csv, args.rows)
        psql("DROP TABLE IF EXISTS bench_source")
        psql(
            "CREATE TABLE bench_source (id BIGINT, value DOUBLE PRECISION, kind TEXT, count BIGINT, "
            "score DOUBLE PRECISION, note TEXT)"
        )
        psql(f"\\copy bench_source FROM '{csv}' CSV HEADER")
        baseline_runs, runs = [], []
        for _ in range(args.repeats):  # alternated, so both sides see the same machine
            baseline_runs.append(time_psql_copy_out())
            runs.append(time_raymlp(home))
        baseline = min(baseline_runs)
        psql("DROP TABLE IF EXISTS bench_source")
    ours = min(seconds for seconds, _ in runs)
    assert all(rows == args.rows for _, rows in runs)
    print(f"PostgreSQL table -> dataset version: {args.rows:,} rows, best of {args.repeats}")
    print(f"{'COPY ... TO STDOUT (psql)':<28}{baseline:>8.2f} s")
    print(f"{'raymlp data convert':<28}{ours:>8.2f} s")
    print(f"speed ratio raymlp / COPY: {baseline / ours:.2f}x (goal: at least 0.8x)")


if __name__ == "__main__":
    main()

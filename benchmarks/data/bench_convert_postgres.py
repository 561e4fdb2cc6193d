"""PostgreSQL table -> dataset version: `raymlp data convert` against one `COPY ... TO STDOUT`.

    .venv/bin/python benchmarks/data/bench_convert_postgres.py              # 2,000,000 rows
    .venv/bin/python benchmarks/data/bench_convert_postgres.py --rows 200000 # smoke size

The baseline streams the table out with psql's `\\copy (SELECT * FROM t) TO file CSV`. raymlp's
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


def time_psql_copy_out(target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", URL, "-q", "-c", f"\\copy (SELECT * FROM bench_source) TO '{target}' CSV"], check=True)
    return time.perf_counter() - started


def time_raymlp(home: Path) -> tuple[float, int]:
    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    job_file = home / "convert.yaml"
    job_file.write_text(
        "version: 1\nname: bench\n"
        "data:\n  source: {format: csv, path: unused.csv}\n"
        f"  collect: {{url: '{URL}', table: bench_source, mode: append}}\n"
        "  dataset: {name: bench}\n"
    )
    os.environ["RAYMLP_HOME"] = str(home / ".raymlp")
    started = time.perf_counter()
    summary = run_job(load_job(job_file), only=["convert"], reporter=Reporter(quiet=True))
    return time.perf_counter() - started, summary.dataset_rows


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
        psql("CREATE TABLE bench_source (id BIGINT, value DOUBLE PRECISION, kind TEXT, count BIGINT, "
             "score DOUBLE PRECISION, note TEXT)")
        psql(f"\\copy bench_source FROM '{csv}' CSV HEADER")
        baseline = min(time_psql_copy_out(home / "out.csv") for _ in range(args.repeats))
        runs = [time_raymlp(home) for _ in range(args.repeats)]
        psql("DROP TABLE IF EXISTS bench_source")
    ours = min(seconds for seconds, _ in runs)
    assert all(rows == args.rows for _, rows in runs)
    print(f"PostgreSQL table -> dataset version: {args.rows:,} rows, best of {args.repeats}")
    print(f"{'COPY ... TO STDOUT (psql)':<28}{baseline:>8.2f} s")
    print(f"{'raymlp data convert':<28}{ours:>8.2f} s")
    print(f"speed ratio raymlp / COPY: {baseline / ours:.2f}x (goal: at least 0.8x)")


if __name__ == "__main__":
    main()

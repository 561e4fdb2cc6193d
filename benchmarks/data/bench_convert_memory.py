"""Peak memory of converting a 2 GB CSV into a dataset version (goal: under 1.5 GB).

    .venv/bin/python benchmarks/data/bench_convert_memory.py                  # 2,000 MB file
    .venv/bin/python benchmarks/data/bench_convert_memory.py --megabytes 200  # smoke size

Each side runs in a fresh child process; its peak resident memory is the kernel's
`ru_maxrss` for that child (every thread, pyarrow's allocations included). The baseline is the
load-all way: pyarrow `read_csv` of the whole file, then `write_table`.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_convert_csv import write_csv
from stage_timing import write_job

CONVERT = """
import os, sys
from raymlp import load_job, run_job
from raymlp.context import Reporter
summary = run_job(load_job(sys.argv[1]), only=["convert"], reporter=Reporter(quiet=True))
print(summary.dataset_rows)
"""
LOAD_ALL = """
import sys
import pyarrow.csv as pacsv, pyarrow.parquet as pq
table = pacsv.read_csv(sys.argv[1])
pq.write_table(table, sys.argv[2])
print(table.num_rows)
"""


def peak_of(code: str, *arguments: str, env: dict[str, str] | None = None) -> tuple[float | None, float, str]:
    """(peak resident bytes, seconds, stdout) of one child process; the peak is None when it was
    not above an earlier child's (the kernel only reports the largest of all children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (peak * 1024 if peak > before else None), seconds, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        csv = home / "events.csv"
        rows = write_csv(csv, args.megabytes)
        size = csv.stat().st_size
        job = write_job(home, f"  source: {{format: csv, path: '{csv}'}}\n")
        env = {**os.environ, "RAYMLP_HOME": str(home / ".raymlp")}
        # raymlp first: ru_maxrss of children is a maximum over all of them so far.
        ours, ours_seconds, converted = peak_of(CONVERT, str(job), env=env)
        assert int(converted) == rows, (converted, rows)
        baseline, baseline_seconds, _ = peak_of(LOAD_ALL, str(csv), str(home / "all.parquet"))
    print(f"peak memory converting one CSV file: {size / 1e9:.2f} GB, {rows:,} rows")
    print(f"{'raymlp data convert':<30}{ours / 1e9:>6.2f} GB peak  {ours_seconds:>7.1f} s")
    if baseline is not None:
        print(f"{'pyarrow load-all':<30}{baseline / 1e9:>6.2f} GB peak  {baseline_seconds:>7.1f} s")
    else:
        print(f"{'pyarrow load-all':<30}  <= raymlp's (ru_maxrss only shows the largest child)")
    print(f"goal: under 1.5 GB -> {'met' if ours < 1.5e9 else 'NOT met'}")


if __name__ == "__main__":
    main()

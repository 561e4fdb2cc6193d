"""A large CSV object in a bucket -> Parquet dataset version in the same bucket: `raymlp data convert`
against pyarrow reading the object and writing Parquet to the bucket by itself.

    .venv/bin/python benchmarks/data/bench_convert_bucket.py                 # 300 MB object
    .venv/bin/python benchmarks/data/bench_convert_bucket.py --megabytes 50  # smoke size

The S3-compatible server is the one the tests start (moto in server mode on loopback,
tests/s3server.py); both sides talk to it with the same credentials and endpoint
(AWS_ENDPOINT_URL). Baseline: pyarrow's S3 filesystem, `read_csv` of the object (multi-threaded)
and `write_table` to a key in the bucket: what a user would script by hand, nothing of raymlp's.
raymlp's time is the whole convert stage of a job whose source and storage root are in the bucket:
the object read in parallel byte ranges, its sha256 before (from the bytes the ranges read) and
after (read again), every range parsed and checked, content digest and statistics, Parquet parts
hashed and sent, the manifest, the catalog's commit. Runs alternate, best of `--repeats` each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_convert_csv import write_csv
from stage_timing import time_stage, write_job

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/s3server.py: the server harness


def time_pyarrow(bucket: str, source_key: str, output_key: str) -> float:
    import pyarrow.csv as pacsv
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    started = time.perf_counter()
    filesystem, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")
    with filesystem.open_input_stream(f"{bucket}/{source_key}") as stream:
        table = pacsv.read_csv(stream)
    pq.write_table(table, f"{bucket}/{output_key}", filesystem=filesystem)
    return time.perf_counter() - started


def time_raymlp(bucket: str, source_key: str, home: Path) -> tuple[float, int]:
    job = write_job(home, f"  source: {{format: csv, path: 's3://{bucket}/{source_key}'}}\n")
    job.write_text(job.read_text().replace("name: bench\n", f"name: bench\nstorage: {{root: 's3://{bucket}/root'}}\n"))
    seconds, summary = time_stage(job, home, "convert")
    return seconds, summary.dataset_rows


def main() -> None:
    from tests.s3server import start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        server_process, server = start_server(home)
        try:
            os.environ.update(server.env())
            bucket = server.new_bucket()
            csv = home / "events.csv"
            rows = write_csv(csv, args.megabytes)
            size = csv.stat().st_size
            server.client().upload_file(str(csv), bucket, "in/events.csv")
            csv.unlink()
            baseline, ours = [], []
            for _ in range(args.repeats):
                baseline.append(time_pyarrow(bucket, "in/events.csv", "baseline/events.parquet"))
                seconds, converted = time_raymlp(bucket, "in/events.csv", home)
                assert converted == rows, (converted, rows)
                ours.append(seconds)
        finally:
            server_process.terminate()
            server_process.wait(timeout=30)
    print(
        f"CSV object -> Parquet dataset in the bucket: {size / 1e6:,.0f} MB, {rows:,} rows, best of {args.repeats}, "
        f"{os.cpu_count()} cores, moto server on loopback"
    )
    print(f"{'pyarrow read_csv+write_table':<30}{min(baseline):>8.2f} s  {size / 1e6 / min(baseline):>7.1f} MB/s")
    print(f"{'raymlp data convert':<30}{min(ours):>8.2f} s  {size / 1e6 / min(ours):>7.1f} MB/s")
    print(f"speed ratio raymlp / pyarrow: {min(baseline) / min(ours):.2f}x (goal: at least 0.9x)")


if __name__ == "__main__":
    main()

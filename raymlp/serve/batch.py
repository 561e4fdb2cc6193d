"""Batch prediction with Ray Data: an actor pool of package replicas, output written atomically."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raymlp.errors import UsageError

_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet", ".json": "read_json", ".jsonl": "read_json"}


@dataclass(frozen=True)
class BatchResult:
    """Where predictions went and how many rows."""

    output: Path
    rows: int
    seconds: float


class _PackagePredictor:
    """One actor of the pool: loads the package once, predicts batch after batch."""

    def __init__(self, package_path: str):
        from raymlp.train.package import load_package

        self.package = load_package(package_path)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        predictions = self.package.predict(batch)
        return pd.concat([batch.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)


def _reader_for(path: str) -> str:
    lowered = path.lower()
    for suffix, reader in _READERS.items():
        if lowered.endswith(suffix) or lowered.endswith(suffix + ".gz"):
            return reader
    if os.path.isdir(path):
        files = [name.lower() for name in os.listdir(path)]
        for suffix, reader in _READERS.items():
            if any(name.endswith(suffix) for name in files):
                return reader
    raise UsageError(f"--input {path}: cannot tell the format; use a .csv, .parquet or .jsonl file or a folder of them")


def predict_batch(package_path: str, source: str, output: str, batch_size: int = 4096, replicas: int | None = None) -> BatchResult:
    """Score every row of `source` and write input columns plus predictions to `output`."""
    import ray
    import ray.data

    started = time.perf_counter()
    if not (os.path.exists(source) or any(ch in source for ch in "*?[")):
        raise UsageError(f"--input {source}: no such file or folder")
    if "://" not in source:
        # Ray Data reads in worker processes, whose working directory is not this one.
        source = os.path.abspath(source)
    reader = getattr(ray.data, _reader_for(source))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = reader(source)
    pool = replicas or max(1, min(4, int(ray.available_resources().get("CPU", 1))))
    scored = dataset.map_batches(
        _PackagePredictor, fn_constructor_args=(package_path,), batch_format="pandas", batch_size=batch_size,
        concurrency=(1, pool), num_cpus=0.5,
    )
    target = Path(os.path.abspath(output))  # a folder output is written by Ray workers
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    rows = 0
    try:
        suffix = target.suffix.lower()
        if suffix in (".csv", ".parquet"):
            rows = _write_single_file(scored, staging, suffix)
        else:
            scored.write_parquet(str(staging))
            rows = scored.count()
        if target.is_dir() and suffix not in (".csv", ".parquet"):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
    return BatchResult(output=target, rows=rows, seconds=time.perf_counter() - started)


def _write_single_file(scored, staging: Path, suffix: str) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    writer = None
    try:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if writer is None:
                writer = pq.ParquetWriter(staging, table.schema) if suffix == ".parquet" else pacsv.CSVWriter(staging, table.schema)
            writer.write_table(table.cast(writer.schema) if suffix == ".parquet" else table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        staging.write_text("")
    return rows

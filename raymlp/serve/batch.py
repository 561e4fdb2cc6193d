"""Batch prediction with Ray Data: scoring tasks on CPUs (an actor per GPU with `use_gpu`), each
worker process loading the package once; output written atomically."""

from __future__ import annotations

import glob
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError, WorkFailed, raised_in_a_worker
from raymlp.storage import files as storage_files

_READERS = {
    ".csv": "read_csv",
    ".parquet": "read_parquet",
    ".pq": "read_parquet",
    ".json": "read_json",
    ".jsonl": "read_json",
}

#: Rows per model call when the caller does not say. A call has a fixed cost (pandas conversion,
#: preprocessing steps, the estimator's own dispatch: about 19 ms for a 50-tree forest on wine),
#: so 4096-row calls scored 165k rows/s and 65536-row calls 554k rows/s on one core.
DEFAULT_BATCH_SIZE = 65536
#: Input bytes per replica: a replica costs a Ray worker process, Ray Data's import and the model
#: framework's (measured: 0.4 s + 0.45 s + 1.2 s for scikit-learn and the package), so a small
#: input gets fewer replicas than there are CPUs; the 178-row quickstart file gets one.
BYTES_PER_REPLICA = 8 << 20
#: Most replicas raymlp starts unasked (a larger cluster: `replicas=`).
MAX_REPLICAS = 8
#: Input bytes per block where the row count is not known up front (CSV, JSON).
BYTES_PER_BLOCK = 8 << 20
#: Most blocks an input is split into.
MAX_BLOCKS = 4096
NO_GPU = "--gpu: no GPU here (Ray sees none); run without --gpu, or on a cluster with GPU nodes (--address)"


@dataclass(frozen=True)
class BatchResult:
    """Where predictions went and how many rows."""

    output: str  # a local path, or a URI in a bucket
    rows: int
    seconds: float


class _PackagePredictor:
    """One actor of the GPU pool: loads the package once (onto its GPU), then scores block after
    block, in model calls of at most `batch_size` rows."""

    def __init__(self, package_path: str, batch_size: int, capture: Any = None):
        from raymlp.package import load_package

        self.package = load_package(package_path)
        self.batch_size = batch_size
        self.capture = capture

    def __call__(self, block: Any) -> Any:
        return _scored(self.package, block, self.batch_size, self.capture)


#: Packages loaded in this worker process, by (folder, description file's mtime and size): the
#: last one only. Ray keeps a job's task workers alive between tasks and between runs, so a
#: worker loads a package once, not once per block (see `_score_block`).
_LOADED: dict[tuple[str, int, int], Any] = {}


def _package_in_this_process(package_path: str) -> Any:
    from raymlp.package import DESCRIPTION_FILE, load_package

    state = storage_files.state(storage_files.join(package_path, DESCRIPTION_FILE))
    if state is None:
        raise WorkFailed(f"{package_path} is not a raymlp model package (no {DESCRIPTION_FILE})")
    key = (package_path, state.mtime_ns, state.size)
    package = _LOADED.get(key)
    if package is None:
        _LOADED.clear()  # one model at a time per worker: a long-lived worker does not collect them
        package = _LOADED[key] = load_package(package_path)
    return package


def _score_block(block: Any, package_path: str, batch_size: int, capture: Any = None) -> Any:
    """A Ray Data task on CPUs: score one block with the package this worker holds (loaded on its
    first block)."""
    return _scored(_package_in_this_process(package_path), block, batch_size, capture)


def _scored(package: Any, block: Any, batch_size: int, capture: Any = None) -> Any:
    """`block` (Arrow) with the package's prediction columns appended, scored in Arrow in model
    calls of at most `batch_size` rows; the input columns go out as they came. `capture`:
    (CaptureSettings, version) to also write the block's rows and answers to the capture."""
    import pyarrow as pa

    if block.num_rows == 0:  # nothing to score (the models refuse 0 rows); the writer skips it
        return block
    features = [name for name in package.feature_names if name in block.column_names]
    inputs = block.select(features)
    parts = [package.predict_table(inputs.slice(start, batch_size)) for start in range(0, block.num_rows, batch_size)]
    predictions = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    for name, column in zip(predictions.column_names, predictions.columns):
        block = block.append_column(name, column)
    _count_scored(package, block.num_rows)
    if capture is not None:
        from .capture import capture_scored_block

        capture_scored_block(capture[0], package, capture[1], block)
    return block


def _count_scored(package: Any, rows: int) -> None:
    """`raymlp_predict_rows_scored` of the job that trained the package (one call per block)."""
    from raymlp import metrics

    job = ((package.description.get("lineage") or {}).get("job") or {}).get("name", "")
    metrics.inc(metrics.PREDICT_ROWS, rows, metrics.tags(job, "predict"))


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


def _read(
    reader: str,
    source: str,
    batch_size: int,
    pool: int,
    concurrency: int,
    progress_bars: bool | None,
    runtime_env: dict[str, Any] | None = None,
):
    """A Ray Data dataset of `source`'s rows, in input order, in blocks of about one model call,
    and whether it reads row groups.

    Local Parquet is read in row groups (`row_groups.RowGroupDatasource`: on CPUs, reads that fuse
    with the scoring). Other inputs go through Ray Data's readers, Parquet through its first datasource
    (V1): V2 lists files by starting 32 footer-reading actors per read (one Python process each),
    which cost 1-4 s before the first row on a 2-core machine.
    """
    import ray.data

    files = _local_parquet_files(source) if reader == "read_parquet" else None
    if files is not None:
        from raymlp.serve.row_groups import RowGroupDatasource, plan_slices

        slices = plan_slices(files, batch_size, pool)
        if slices is not None:
            # The scoring's concurrency: Ray Data fuses only reads and maps that agree on it.
            # The scoring's runtime_env too: Ray Data fuses only ops whose remote args are equal.
            return ray.data.read_datasource(
                RowGroupDatasource(slices),
                override_num_blocks=len(slices),
                concurrency=concurrency,
                runtime_env=runtime_env,
            ), True
    context = ray.data.DataContext.get_current()
    saved = {
        name: getattr(context, name) for name in ("use_datasource_v2", "enable_progress_bars") if hasattr(context, name)
    }
    try:
        if reader == "read_parquet" and "use_datasource_v2" in saved:
            context.use_datasource_v2 = False
        if progress_bars is not None:  # the reader's own bar (Parquet sampling) follows the run's choice
            context.enable_progress_bars = progress_bars
        return getattr(ray.data, reader)(
            source, override_num_blocks=_planned_blocks(source, pool), runtime_env=runtime_env
        ), False
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def _local_parquet_files(source: str) -> list[str] | None:
    """The files of a local Parquet input (a file, a folder or a glob; at most
    `row_groups.MAX_FILES`), or None: remote, or too many to read their footers here."""
    from raymlp.serve.row_groups import MAX_FILES

    if "://" in source:
        return None
    if os.path.isdir(source):
        files = sorted(
            entry.path for entry in os.scandir(source) if entry.is_file() and not entry.name.startswith((".", "_"))
        )
    else:
        files = sorted(name for name in glob.glob(source) if os.path.isfile(name))
    return files if files and len(files) <= MAX_FILES else None


def _planned_blocks(source: str, pool: int) -> int | None:
    """Blocks to read a CSV or JSON input into: about 8 MiB each, at least one per replica; None
    (Ray Data's own split) for a remote input."""
    size = _input_bytes(source)
    if size is None:
        return None
    return max(pool, min(math.ceil(size / BYTES_PER_BLOCK), MAX_BLOCKS))


def _input_bytes(source: str) -> int | None:
    """Bytes of a local file, folder or glob; None for a remote one (size unknown: treated as large)."""
    if "://" in source:
        return None
    if os.path.isdir(source):
        return sum(entry.stat().st_size for entry in os.scandir(source) if entry.is_file())
    return sum(os.path.getsize(name) for name in glob.glob(source) if os.path.isfile(name))


def local_gpus() -> int | None:
    """GPUs an embedded Ray started on this machine would have (Ray's own detection, CUDA_VISIBLE_DEVICES
    included), or None where that cannot be told."""
    from raymlp.ray_internals import local_gpu_counts

    try:
        count, visible = local_gpu_counts()
        return min(count, len(visible)) if visible is not None else count
    except Exception:  # a private Ray API: where it moved, the check after start-up still holds
        return None


def _pool_size(source: str, use_gpu: bool, replicas: int | None) -> int:
    """Replicas: one per CPU Ray has free (one per GPU with `use_gpu`), no more than the input's size
    pays for, unless `replicas` says."""
    import ray

    resources = ray.available_resources()
    if use_gpu:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise UsageError(NO_GPU)
        limit = max(1, int(resources.get("GPU", 0)) or gpus)
        return min(replicas, limit) if replicas else limit
    if replicas:
        return replicas
    cpus = max(1, int(resources.get("CPU", 1)))
    size = _input_bytes(source)
    wanted = MAX_REPLICAS if size is None else max(1, math.ceil(size / BYTES_PER_REPLICA))
    return max(1, min(cpus, wanted, MAX_REPLICAS))


def _replica_cpus(pool: int) -> float:
    """Logical CPUs per replica: half a CPU, less where `pool` of them would leave no whole CPU for
    Ray Data's read tasks (which take one each: with none left the run waits for ever)."""
    import ray

    free = float(ray.available_resources().get("CPU", 0.0))
    return max(0.0, min(0.5, math.floor((free - 1.0) / pool * 100) / 100))


def _in_flight(pool: int) -> int:
    """Scoring tasks Ray Data keeps submitted: twice the pool where the pool takes every free CPU
    (Ray's CPU accounting still runs `pool` at once; the rest wait in Ray's queue and start the
    moment a CPU frees, instead of after Ray Data's scheduling loop in the driver notices: 1.05 →
    0.95 s for 1M rows on 2 CPUs), else the pool (more would run more replicas than asked)."""
    import ray

    free = int(ray.available_resources().get("CPU", 0))
    return 2 * pool if pool >= free else pool


def predict_batch(
    package_path: str,
    source: str,
    output: str,
    batch_size: int | None = None,
    replicas: int | None = None,
    *,
    use_gpu: bool = False,
    progress: Callable[[int], None] | None = None,
    progress_bars: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    capture: Any = None,
) -> BatchResult:
    """Score every row of `source` and write input columns plus predictions to `output`.

    `batch_size`: rows per model call (default `DEFAULT_BATCH_SIZE`). `replicas`: model replicas, i.e.
    scoring tasks at once on CPUs (default: one per free CPU, fewer for a small input). `use_gpu`: an
    actor per GPU holds the model there, as many as the cluster has GPUs; a UsageError before
    anything runs where the cluster has none.
    `progress(rows)` is called as rows reach a single output file; `progress_bars` turns Ray Data's
    own progress bars on or off for this run (None: as the current DataContext says).
    `runtime_env`: the reading and scoring tasks' (the job's `predict.env`), laid by Ray over the job's.
    `capture`: (CaptureSettings, version): the scoring tasks also write the rows they scored and
    their predictions to the model's capture (`raymlp monitor`).
    """
    import ray
    import ray.data

    started = time.perf_counter()
    if storage_files.is_remote(source):
        source = storage_files.normalized(source, key="--input")
        with storage_files.translated_errors(source, "read"):
            found = storage_files.glob(source) if any(ch in source for ch in "*?[") else storage_files.exists(source)
        if not found:
            raise UsageError(f"--input {source}: no such object or prefix")
    elif not (os.path.exists(source) or any(ch in source for ch in "*?[")):
        raise UsageError(f"--input {source}: no such file or folder")
    if "://" not in source:
        # Ray Data reads in worker processes, whose working directory is not this one.
        source = os.path.abspath(source)
    reader = _reader_for(source)
    pool = _pool_size(source, use_gpu, replicas)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    concurrency = pool if use_gpu else _in_flight(pool)
    dataset, by_row_groups = _read(reader, source, batch_size, pool, concurrency, progress_bars, runtime_env)
    context = dataset.context  # this dataset's own copy: the caller's DataContext is left as it was
    context.execution_options.preserve_order = True
    if by_row_groups and not use_gpu:
        # One fused operator (read and score) feeding this process: there is nothing to split
        # resources between. Ray Data 2.60 reserves them from a coordinator actor's answer, which
        # only comes after the execution's first second; until then it ran one task at a time
        # (a 1M-row call took 1.4 s instead of 1.0 on 2 CPUs). Its downstream-capacity policy
        # still holds finished blocks back from outpacing the writer.
        context.op_resource_reservation_enabled = False
    if progress_bars is not None:
        context.enable_progress_bars = progress_bars
    if use_gpu:
        # An actor per GPU holds the model on its device. Ray Data refuses batch_size=None with
        # GPUs; blocks are planned at one call's rows, so that size keeps them whole.
        scored = dataset.map_batches(
            _PackagePredictor,
            fn_constructor_args=(package_path, batch_size, capture),
            batch_format="pyarrow",
            batch_size=batch_size,
            zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=_replica_cpus(pool),
            num_gpus=1,
            runtime_env=runtime_env,
        )
    else:
        # Tasks, one per block (batch_size=None: Ray Data would otherwise gather small blocks into
        # bundles one by one), that fuse with the read; each worker keeps the package it loaded.
        scored = dataset.map_batches(
            _score_block,
            fn_args=(package_path, batch_size, capture),
            batch_format="pyarrow",
            batch_size=None,
            zero_copy_batch=True,
            compute=ray.data.TaskPoolStrategy(size=concurrency),
            runtime_env=runtime_env,
        )
    if storage_files.is_remote(output):
        return _predict_into_bucket(scored, storage_files.normalized(output, key="--output"), progress, started)
    target = Path(os.path.abspath(output))  # a folder output is written by Ray workers
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    rows = 0
    try:
        suffix = target.suffix.lower()
        if suffix in (".csv", ".parquet"):
            rows = _write_single_file(scored, staging, suffix, progress)
        else:
            scored.write_parquet(str(staging))
            rows = _parquet_rows(staging)  # not scored.count(): that would score everything again
        if target.is_dir() and suffix not in (".csv", ".parquet"):
            shutil.rmtree(target)
        os.replace(staging, target)
    except Exception as error:
        # A scoring task's own failure (a module step's WorkFailed: the user's exception, the step,
        # its line) comes back wrapped by Ray Data; say it as the step said it.
        raised = raised_in_a_worker(error)
        if raised is None or raised is error:
            raise
        raise raised from None
    finally:
        if staging.exists():
            shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
    return BatchResult(output=str(target), rows=rows, seconds=time.perf_counter() - started)


def _predict_into_bucket(
    scored: Any, target: str, progress: Callable[[int], None] | None, started: float
) -> BatchResult:
    """Predictions written to a bucket. A .csv or .parquet file is made in a local temporary folder
    and sent in one PUT (it appears whole). A folder is written by Ray Data's workers under a
    staging prefix, copied into place inside the store, and `_SUCCESS` is written last: the folder
    is complete when that marker is there (an earlier folder at the place is removed first)."""
    import tempfile

    suffix = os.path.splitext(target)[1].lower()
    try:
        if suffix in (".csv", ".parquet"):
            with tempfile.TemporaryDirectory(prefix="raymlp-predict-") as folder:
                staging = Path(folder) / f"predictions{suffix}"
                rows = _write_single_file(scored, staging, suffix, progress)
                storage_files.write_bytes(target, staging.read_bytes())
        else:
            staging_prefix = storage_files.join(
                storage_files.parent(target), f".{storage_files.name_of(target)}.{uuid.uuid4().hex[:8]}.partial"
            )
            try:
                scored.write_parquet(staging_prefix)
                copied = storage_files.copy_tree(staging_prefix, target, replace=True)
                rows = sum(_parquet_file_rows(name) for name in copied if name.endswith(".parquet"))
            finally:
                storage_files.delete_tree(staging_prefix)
            storage_files.write_bytes(storage_files.join(target, "_SUCCESS"), b"")
    except Exception as error:
        raised = raised_in_a_worker(error)
        if raised is None or raised is error:
            raise
        raise raised from None
    return BatchResult(output=target, rows=rows, seconds=time.perf_counter() - started)


def _parquet_file_rows(name: str) -> int:
    import pyarrow.parquet as pq

    with storage_files.open_input(name) as handle:
        return pq.read_metadata(handle).num_rows


def _parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(path).num_rows for path in folder.rglob("*.parquet"))


def _write_single_file(scored, staging: Path, suffix: str, progress: Callable[[int], None] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    writer = None
    try:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if table.num_rows == 0:  # replicas hand empty blocks back unscored
                continue
            if writer is None:
                writer = (
                    pq.ParquetWriter(staging, table.schema, use_dictionary=_dictionary_columns(table.schema))
                    if suffix == ".parquet"
                    else pacsv.CSVWriter(staging, table.schema)
                )
            if suffix == ".parquet" and table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
            rows += table.num_rows
            if progress is not None:
                progress(rows)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        staging.write_text("")
    return rows


def _dictionary_columns(schema) -> list[str]:
    """Columns worth dictionary-encoding: all but floating-point ones. Model inputs and probabilities
    rarely repeat a value, and trying a dictionary first (Parquet's default) made writing 1M rows of
    17 columns cost 0.86 CPU-seconds instead of 0.19, for a larger file."""
    import pyarrow as pa

    return [field.name for field in schema if not pa.types.is_floating(field.type)]

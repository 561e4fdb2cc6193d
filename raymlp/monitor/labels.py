"""Ground truth that arrives later, joined to the capture (`raymlp monitor labels`).

A labels file (csv, parquet, json lines) names each row by a key: `request_id` (with a `record`
column for requests of several records), or a feature the capture holds (an order id, say). It is
joined to the model's capture with Ray Data's hash join; the captured rows it matched are written
as one Parquet file under `captures/model=NAME/labels/`, named by a digest of the input file and
the options, so joining the same file again rewrites the same file (idempotent), and input rows
that matched nothing are kept aside in `labels/unmatched/` with the reason. When labels of one
captured row come from several files, the latest join wins.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from raymlp.errors import UsageError
from raymlp.serve.capture import FEATURES_COLUMN, labels_folder

from .captures import dataset_of

UNMATCHED_FOLDER = "unmatched"


@dataclass(frozen=True)
class LabelsJoined:
    input_rows: int
    matched_rows: int  # input rows that found captured rows
    labelled_rows: int  # captured rows they label
    unmatched_rows: int
    written: str
    unmatched: str | None


def _reader(path: str) -> str:
    lowered = path.lower().rstrip("/")
    for suffix, reader in ((".csv", "csv"), (".parquet", "parquet"), (".jsonl", "json"), (".json", "json")):
        if lowered.endswith(suffix):
            return reader
    raise UsageError(f"--input {path}: a .csv, .parquet or .jsonl file of labels")


def _read_labels_input(path: str) -> Any:
    import pyarrow.csv as pv
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from raymlp.storage import files

    reader = _reader(path)
    if not files.exists(path):
        raise UsageError(f"--input {path}: no such file")
    data = files.read_bytes(path)
    try:
        if reader == "csv":
            return pv.read_csv(io.BytesIO(data)), data
        if reader == "parquet":
            return pq.read_table(io.BytesIO(data)), data
        return pj.read_json(io.BytesIO(data)), data
    except Exception as error:
        raise UsageError(f"--input {path}: cannot be read as {reader}: {str(error).splitlines()[0]}") from None


def join_labels(root: str, model: str, input_path: str, key: str, label: str, capture_files: list[str]) -> LabelsJoined:
    """Join the labels in `input_path` to the model's captured rows on `key`; see the module's docstring."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray.data

    from raymlp.storage import files

    table, data = _read_labels_input(input_path)
    for name, option in ((key, "--key"), (label, "--label")):
        if name not in table.column_names:
            raise UsageError(
                f"{option} {name}: not a column of {input_path} (columns: {', '.join(table.column_names)})"
            )
    if not table.num_rows:
        raise UsageError(f"--input {input_path}: no rows")
    by_record = key == "request_id" and "record" in table.column_names
    keys = [key, "record"] if by_record else [key]
    labels = table.select([*keys, label]).rename_columns([*keys, "__label"])
    labels = labels.set_column(keys.index(key), key, pc.cast(labels.column(key), pa.string()))
    if by_record:
        labels = labels.set_column(1, "record", pc.cast(labels.column("record"), pa.int32()))
    labels = labels.append_column("__input_row", pa.array(range(labels.num_rows), pa.int64()))
    labels = labels.set_column(
        labels.column_names.index("__label"), "__label", pc.cast(labels.column("__label"), pa.string())
    )
    if not capture_files:
        raise UsageError(f"model {model}: nothing captured yet to join labels to")
    captured = dataset_of(capture_files)
    task: Any = _capture_keys
    captured = captured.map_batches(task, fn_args=(key,), batch_format="pyarrow", batch_size=None)
    join_keys: Any = tuple(keys)
    joined = ray.data.from_arrow(labels).join(
        captured, "left_outer", num_partitions=max(1, min(16, len(capture_files))), on=join_keys
    )
    result = pa.concat_tables(
        [pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch for batch in _batches(joined)]
    )
    matched = result.filter(pc.is_valid(result.column("__request_id")))
    unmatched_rows = sorted(set(range(labels.num_rows)) - set(matched.column("__input_row").to_pylist()))
    now = datetime.datetime.now(datetime.UTC)
    digest = hashlib.sha256(data + f"|{key}|{label}".encode()).hexdigest()[:20]
    folder = labels_folder(root, model)
    written = files.join(folder, f"labels-{digest}.parquet")
    out = pa.table(
        {
            "request_id": matched.column("__request_id"),
            "record": pc.cast(matched.column("__record" if not by_record else "record"), pa.int32()),
            "label": matched.column("__label"),
            "labelled_at": pa.array([now] * matched.num_rows, pa.timestamp("us", tz="UTC")),
        }
    )
    files.write_bytes(written, _parquet_bytes(out))
    unmatched_file = None
    if unmatched_rows:
        aside = table.take(pa.array(unmatched_rows))
        reason = f"no captured row of {model} has this {key}" + (" and record" if by_record else "")
        aside = aside.append_column("reason", pa.array([reason] * aside.num_rows))
        unmatched_file = files.join(folder, UNMATCHED_FOLDER, f"labels-{digest}.parquet")
        files.write_bytes(unmatched_file, _parquet_bytes(aside))
    del pq
    return LabelsJoined(
        input_rows=labels.num_rows,
        matched_rows=labels.num_rows - len(unmatched_rows),
        labelled_rows=out.num_rows,
        unmatched_rows=len(unmatched_rows),
        written=written,
        unmatched=unmatched_file,
    )


def _batches(dataset: Any) -> list[Any]:
    return list(dataset.iter_batches(batch_format="pyarrow", batch_size=None))


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _capture_keys(block: Any, key: str) -> Any:
    """A Ray Data task: the key columns of captured rows (the request's, or a feature's as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {"__request_id": block.column("request_id"), "__record": block.column("record")}
    if key == "request_id":
        columns["request_id"] = block.column("request_id")
        columns["record"] = pc.cast(block.column("record"), pa.int32())
    else:
        struct = block.column(FEATURES_COLUMN).combine_chunks()
        names = [struct.type.field(index).name for index in range(struct.type.num_fields)]
        if key not in names:
            raise UsageError(f"--key {key}: not request_id nor a captured feature (features: {', '.join(names)})")
        columns[key] = pc.cast(struct.field(names.index(key)), pa.string())
    return pa.table(columns)


def read_labels(root: str, model: str) -> Any:
    """Every joined label of the model, the latest per (request_id, record); None when there are none."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raymlp.storage import files

    folder = labels_folder(root, model)
    tables = []
    for name in files.children(folder):
        if name.startswith("labels-") and name.endswith(".parquet"):
            with files.open_input(files.join(folder, name)) as handle:
                tables.append(pq.read_table(handle))
    if not tables:
        return None
    every = pa.concat_tables(tables)
    order = pc.sort_indices(every, sort_keys=[("labelled_at", "descending")])
    every = every.take(order)
    seen: set[tuple[str, int]] = set()
    keep = []
    for index, pair in enumerate(zip(every.column("request_id").to_pylist(), every.column("record").to_pylist())):
        if pair not in seen:
            seen.add(pair)
            keep.append(index)
    return every.take(pa.array(keep, pa.int64()))

"""Skew replay: captured records run again through the batch path (`serve.batch.predict_batch` on
Ray Data, the code `raymlp predict` runs), every answer compared with what the endpoint gave, by
request id and record. Online and offline share `ModelPackage.predict_table`, so any difference is
skew: a feature the endpoint saw differently, a package that changed, a framework's nondeterminism."""

from __future__ import annotations

import io
import uuid
from typing import Any

from raymlp.errors import UsageError

#: A probability or a regression's prediction differs when it is further apart than this
#: (relative to the value's size above 1): float64 arithmetic in another batch shape may differ
#: in the last bits, not in this.
TOLERANCE = 1e-6
SERVED = "__served_"
EXAMPLES = 10


def replay_version(package_path: Any, version: str, found: Any, window: Any, scratch: str) -> dict[str, Any]:
    """Replay one version's captured rows of `window` (files `found`); the comparison's summary.
    `scratch`: a folder every node reads (under the storage root) for the replay's input and output."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlp.package import load_package
    from raymlp.serve.batch import predict_batch
    from raymlp.storage import files

    from .captures import flattened, read_window

    package = load_package(package_path)
    captured = flattened(read_window(found.files, window))
    missing = [name for name in package.feature_names if name not in captured.column_names]
    if missing:
        raise UsageError(
            f"version {version}: the capture lacks features {', '.join(missing)} (serve.capture.exclude), "
            "so its requests cannot be replayed"
        )
    answers = [name for name in captured.column_names if name == "prediction" or name.startswith("probability_")]
    inputs = captured.select(["request_id", "record", *package.feature_names]).cast(
        pa.schema(
            [
                ("request_id", pa.string()),
                ("record", pa.int32()),
                *[(field.name, field.type) for field in captured.select(package.feature_names).schema],
            ]
        )
    )
    for name in answers:
        inputs = inputs.append_column(SERVED + name, captured.column(name))
    work = files.join(scratch, f"replay-{uuid.uuid4().hex[:12]}")
    try:
        sink = io.BytesIO()
        pq.write_table(inputs, sink)
        files.write_bytes(files.join(work, "input.parquet"), sink.getvalue())
        predict_batch(str(package.path), files.join(work, "input.parquet"), files.join(work, "output.parquet"))
        with files.open_input(files.join(work, "output.parquet")) as handle:
            scored = pq.read_table(handle)
    finally:
        files.delete_tree(work)
    rows = scored.num_rows
    served = [str(value) for value in scored.column(SERVED + "prediction").to_pylist()]
    replayed = [str(value) for value in scored.column("prediction").to_pylist()]
    different = np.array([a != b for a, b in zip(served, replayed)])
    largest = 0.0
    if package.description["task"] == "classification":
        for name in [name for name in answers if name.startswith("probability_")]:
            if name not in scored.column_names:
                different[:] = True
                continue
            before = scored.column(SERVED + name).to_numpy(zero_copy_only=False).astype(np.float64)
            after = scored.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            gap = np.abs(before - after)
            largest = max(largest, float(np.nanmax(gap)) if len(gap) else 0.0)
            different |= gap > TOLERANCE
    else:
        before = np.array([float(value) for value in served])
        after = np.array([float(value) for value in replayed])
        gap = np.abs(before - after) / np.maximum(np.abs(before), 1.0)
        largest = float(gap.max()) if len(gap) else 0.0
        different = gap > TOLERANCE
    examples = []
    for index in np.flatnonzero(different)[:EXAMPLES]:
        examples.append(
            f"request {scored.column('request_id')[index].as_py()} record {scored.column('record')[index].as_py()}: "
            f"endpoint answered {served[index]}, batch predict {replayed[index]}"
        )
    return {
        "version": version,
        "rows": rows,
        "mismatches": int(different.sum()),
        "max_difference": largest,
        "examples": examples,
        "skipped_files": found.skipped,
    }

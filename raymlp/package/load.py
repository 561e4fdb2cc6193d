"""Loading a package: `load_package`, the one loader (batch predict, Serve replicas, evaluation, the
MLflow pyfunc model), and `ModelPackage.predict`."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlp.errors import UsageError, WorkFailed

from .features import feature_matrix
from .formats import model_format
from .layout import BUILDER_FILE, DESCRIPTION_FILE, MODEL_DIR, PACKAGE_FORMAT, PREDICTION_COLUMN, PREPROCESSOR_FILE
from .sources import verify_package_sources


def numeric_features_as_float(frame: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame:
    """`frame` with its int and float features as float64 (JSON and CSV input may give either).

    Training applies it too, so preprocessing steps, and users' function steps above all, see the
    same dtypes offline and online.
    """
    for feature in features:
        name = feature["name"]
        if feature["type"] in ("int", "float") and name in frame.columns and frame[name].dtype != np.float64:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


@dataclass
class ModelPackage:
    """A loaded package: `predict` takes raw feature rows and returns predictions."""

    path: Path
    description: dict[str, Any]
    preprocessor: Any
    network: Any

    @property
    def features(self) -> list[dict[str, Any]]:
        return self.description["features"]

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.features]

    @property
    def classes(self) -> list[Any] | None:
        return self.description.get("classes")

    def missing_features(self, frame: pd.DataFrame) -> list[str]:
        return [name for name in self.feature_names if name not in frame.columns]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for raw rows: a `prediction` column, plus `probability_<class>` for classifiers."""
        missing = self.missing_features(frame)
        if missing:
            raise UsageError(
                f"input lacks feature columns: {', '.join(missing)} (the model needs: {', '.join(self.feature_names)})"
            )
        features = numeric_features_as_float(frame[self.feature_names].copy(), self.features)
        try:
            table = pa.Table.from_pandas(features, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise UsageError(_mixed_types(features)) from None
        result = self.predict_table(table).to_pandas()
        result.index = frame.index
        return result

    def records_table(self, records: list[dict[str, Any]]) -> pa.Table:
        """The feature columns of JSON-like records (validated against `features`) as an Arrow table."""
        arrow_types = {"int": pa.float64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
        return pa.table(
            {
                feature["name"]: pa.array(
                    [record[feature["name"]] for record in records], type=arrow_types.get(feature["type"])
                )
                for feature in self.features
            }
        )

    def predict_table(self, table: pa.Table) -> pa.Table:
        """Predictions for raw rows in Arrow, row for row: the same columns as `predict`.

        Rows stay in Arrow through the preprocessing steps that have an Arrow form (Ray Data's
        scalers, encoders), which costs a small fraction of a pandas round trip on each step.
        """
        missing = [name for name in self.feature_names if name not in table.column_names]
        if missing:
            raise UsageError(
                f"input lacks feature columns: {', '.join(missing)} (the model needs: {', '.join(self.feature_names)})"
            )
        features = table.select(self.feature_names)
        for index, feature in enumerate(self.features):
            if feature["type"] in ("int", "float") and features.column(index).type != pa.float64():
                features = features.set_column(index, feature["name"], _as_float64(features.column(index)))
        transformed = self.preprocessor.transform_batch(features) if self.preprocessor is not None else features
        matrix = feature_matrix(transformed, self.description["model"]["feature_columns"])
        # A value the preprocessing took past float32's range (a scaler on a huge input) saturates at
        # its largest value, as the model could not take an infinity; missing values stay NaN.
        np.clip(matrix, -_FLOAT32_MAX, _FLOAT32_MAX, out=matrix)
        scores = model_format(self.description["framework"]).predict_scores(self.network, matrix)
        if self.description["task"] == "classification":
            shifted = scores - scores.max(axis=1, keepdims=True)
            probabilities = np.exp(shifted)
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            columns = {PREDICTION_COLUMN: pa.array(self.classes).take(pa.array(probabilities.argmax(axis=1)))}
            for index, name in enumerate(self.classes or []):
                columns[f"probability_{name}"] = pa.array(probabilities[:, index])
            return pa.table(columns)
        scale = self.description["model"].get("target_scale") or {"mean": 0.0, "std": 1.0}
        return pa.table(
            {PREDICTION_COLUMN: pa.array(scores.reshape(-1).astype(np.float64) * scale["std"] + scale["mean"])}
        )


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_float64(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A numeric feature as float64; text that is no number becomes null, as pandas' to_numeric(errors='coerce')."""
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_null(column.type)
        or pa.types.is_boolean(column.type)
        or pa.types.is_decimal(column.type)
    ):
        return column.cast(pa.float64())
    return pa.chunked_array(
        [pa.array(pd.to_numeric(column.to_pandas(), errors="coerce").astype("float64"), type=pa.float64())]
    )


def _mixed_types(frame: pd.DataFrame) -> str:
    for name in frame.columns:
        try:
            pa.array(frame[name])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kinds = sorted({type(value).__name__ for value in frame[name].dropna()})
            return f"feature '{name}' holds values of mixed types ({', '.join(kinds)}); give it one type"
    return "the feature columns cannot be read as typed columns"


def local_copy(path: str | os.PathLike[str]) -> Path:
    """The package folder at `path` on this machine: itself when local; a package in a bucket is
    fetched once into RAYMLP_HOME/cache/packages (keyed by its URI and its description's size and
    time, so a rewritten package is fetched again), downloaded beside and renamed into place."""
    import hashlib
    import shutil
    import uuid

    from raymlp import settings
    from raymlp.storage import files

    if not files.is_remote(path):
        return Path(path)
    uri = files.normalized(path)
    state = files.state(files.join(uri, DESCRIPTION_FILE))
    if state is None:
        raise WorkFailed(f"{uri} is not a raymlp model package (no {DESCRIPTION_FILE})")
    key = hashlib.sha256(f"{uri}|{state.size}|{state.mtime_ns}".encode()).hexdigest()[:20]
    cache = settings.home().resolve() / "cache" / "packages"
    target = cache / key
    if (target / DESCRIPTION_FILE).exists():
        return target
    staging = cache / f".{key}.{uuid.uuid4().hex[:8]}.download"
    try:
        files.download_folder(uri, staging)
        try:
            os.rename(staging, target)
        except OSError:  # fetched meanwhile by another process on this machine
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_package(path: str | os.PathLike[str]) -> ModelPackage:
    """Load a package folder written by `write_package` (local, or in a bucket: fetched first)."""
    folder = local_copy(path)
    description_file = folder / DESCRIPTION_FILE
    if not description_file.exists():
        raise WorkFailed(f"{folder} is not a raymlp model package (no {DESCRIPTION_FILE})")
    description = json.loads(description_file.read_text())
    if description.get("format") != PACKAGE_FORMAT:
        raise WorkFailed(f"{folder}: package format {description.get('format')!r} is not {PACKAGE_FORMAT!r}")
    with open(folder / PREPROCESSOR_FILE, "rb") as handle:
        preprocessor = pickle.load(handle)
    verify_package_sources(preprocessor, description, folder)
    spec = dict(description["model"])
    if spec.get("type") == "custom":  # the builder runs from the source the package carries
        spec["builder_source"] = (folder / MODEL_DIR / BUILDER_FILE).read_text()
    network = model_format(description["framework"]).load_for_inference(folder, spec)
    return ModelPackage(path=folder, description=description, preprocessor=preprocessor, network=network)

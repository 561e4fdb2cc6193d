"""Writing a package folder: atomically, with the module sources its chain runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any

from raymlp.storage import files as storage_files

from .layout import BUILDER_FILE, DESCRIPTION_FILE, MODEL_DIR, PACKAGE_FORMAT, PREPROCESSOR_FILE
from .sources import write_package_sources


def write_package(
    destination: Path,
    *,
    description: dict[str, Any],
    preprocessor: Any,
    weights: Path,
    builder_source: str | None = None,
) -> Path:
    """Write a package folder atomically (built beside `destination`, then renamed into place).
    A custom model's builder source goes to `model/builder.py` (the description keeps its sha256)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".staging-{uuid.uuid4().hex}"
    (staging / MODEL_DIR).mkdir(parents=True)
    try:
        shutil.copy2(weights, staging / MODEL_DIR / weights.name)
        if builder_source is not None:
            (staging / MODEL_DIR / BUILDER_FILE).write_text(builder_source)
        with open(staging / PREPROCESSOR_FILE, "wb") as handle:
            pickle.dump(preprocessor, handle)
        write_package_sources(preprocessor, staging)
        (staging / DESCRIPTION_FILE).write_text(
            json.dumps({"format": PACKAGE_FORMAT, **description}, indent=2, sort_keys=True, default=str)
        )
        os.rename(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def rewrite_description(package_dir: Path, description: dict[str, Any]) -> None:
    """Update a written package's description with `description`'s keys (the test metrics, once known)."""
    path = Path(package_dir) / DESCRIPTION_FILE
    current = json.loads(path.read_text())
    current.update(description)
    storage_files.write_json(path, current)

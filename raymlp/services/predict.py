"""Batch predict with a model package: a registered model (`raymlp predict`) or the package a run
trained or names (the pipeline's predict stage), on Ray Data."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError

from .jobs import storage_for
from .models import fetch_model, parse_model_ref


@dataclass(frozen=True)
class Prediction:
    """What a batch predict with a registered model made."""

    model: str
    version: int
    rows: int
    output: str  # a local path or a URI in a bucket
    seconds: float


def predict_package(
    package: str,
    input: str,
    output: str,
    batch_size: int | None,
    *,
    use_gpu: bool = False,
    runtime_env: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    progress_bars: bool = False,
    capture: Any = None,
) -> Any:
    """Score `input` with the package folder into `output` on the Ray this process has (a BatchResult)."""
    from raymlp.serve.batch import predict_batch

    return predict_batch(
        package,
        input,
        output,
        batch_size,
        use_gpu=use_gpu,
        runtime_env=runtime_env,
        progress=progress,
        progress_bars=progress_bars,
        capture=capture,
    )


def predict_registered(
    model: str,
    input: str,
    output: str,
    batch_size: int | None,
    *,
    gpu: bool,
    job: Path | None,
    address: str | None,
    progress: Callable[[int], None] | None,
    on_start: Callable[[], None] | None = None,
    capture_sample: float | None = None,
) -> Prediction:
    """`raymlp predict`: what can be refused is refused before the package is fetched and Ray is
    started (no GPU on this machine, a malformed reference, an input that names nothing); then the
    registered model is scored on `address`'s Ray (else an embedded one). `progress(rows)` is
    called as rows are scored; without it Ray Data draws its own bars. `on_start()` runs once Ray is up.
    `capture_sample`: the share of rows also written to the model's capture (None: no capture)."""
    from raymlp import settings
    from raymlp.runtime import ray_runtime
    from raymlp.serve.batch import NO_GPU, local_gpus

    from .inputs import input_problem

    if gpu and not (address or settings.ray_address()) and local_gpus() == 0:
        raise UsageError(NO_GPU)  # before the package is fetched and an embedded Ray started for nothing
    ref = parse_model_ref(model)
    missing_input = input_problem(input)
    if missing_input:
        raise UsageError(f"--input {missing_input}")  # before Ray starts
    storage = storage_for(job)
    package, version = fetch_model(storage, ref)
    capture = None
    if capture_sample is not None:
        from raymlp.serve.capture import CaptureSettings

        if capture_sample <= 0:
            raise UsageError("--capture-sample: a share above 0 and at most 1")
        capture = (CaptureSettings(root=str(storage.root), model=ref.name, sample=capture_sample), version)
    if progress is not None:  # no "progress bars disabled" notice: the progress lines stand for them
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    with ray_runtime(address):
        if on_start is not None:
            on_start()
        result = predict_package(
            str(package),
            input,
            output,
            batch_size,
            use_gpu=gpu,
            progress=progress,
            progress_bars=progress is None,
            capture=capture,
        )
    return Prediction(model=ref.name, version=version, rows=result.rows, output=result.output, seconds=result.seconds)

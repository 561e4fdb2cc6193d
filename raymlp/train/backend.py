"""The one interface every training backend implements, and the registry of backends by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raymlp.config.schema import TrainConfig
from raymlp.errors import UsageError

#: framework -> module implementing `fit(TrainRequest) -> FitOutcome`, `load_for_inference`, `predict_scores`.
BACKENDS: dict[str, str] = {"torch": "raymlp.train.torch_backend"}


@dataclass
class TrainRequest:
    """What a backend needs to train one model."""

    train: TrainConfig
    task: str
    input_dim: int
    output_dim: int
    datasets: dict[str, Any]
    storage_path: str
    run_name: str
    output_dir: Path
    target_scale: dict[str, float] | None = None


@dataclass
class FitOutcome:
    """What a backend returns: the best weights and the per-epoch history."""

    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    best_epoch: int
    weights: Path
    checkpoint_path: str
    result_path: str
    extra: dict[str, Any] = field(default_factory=dict)


def backend(framework: str) -> Any:
    """The backend module of a framework, imported on first use."""
    if framework not in BACKENDS:
        raise UsageError(f"train.framework: no backend for '{framework}'; available: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[framework])


def fit(request: TrainRequest) -> FitOutcome:
    """Train with the backend of the request's framework."""
    run: Callable[[TrainRequest], FitOutcome] = backend(request.train.framework).fit
    return run(request)

"""What a package says about itself (`raymlp-package.json`) and what its MLflow model needs installed."""

from __future__ import annotations

from typing import Any

from .formats import model_format
from .sources import package_modules, package_transforms


def step_description(step: Any, preprocessor: Any, index: int) -> dict[str, Any]:
    """A job step as the package records it; module steps with the version and sha256 they ran."""
    described = step.model_dump(exclude_none=True)
    fitted = preprocessor.preprocessors[index] if preprocessor is not None else None
    if fitted is not None and hasattr(fitted, "describe"):
        described.update(fitted.describe(), requested=step.ref)
    return described


def describe_package(
    *,
    framework: str,
    task: str,
    label: str,
    classes: list[Any] | None,
    feature_types: dict[str, str],
    model_spec: dict[str, Any],
    input_dim: int,
    output_dim: int,
    model_columns: list[str],
    target_scale: dict[str, float] | None,
    steps: list[Any],
    preprocessor: Any,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """The description of a trained model (`metrics` empty until the package's own test predictions
    give them): `feature_types` in the features' order, the model spec without the builder source
    (that is `model/builder.py`), the job's `steps` as run by the fitted `preprocessor`, and the
    module versions the chain runs."""
    return {
        "framework": framework,
        "task": task,
        "label": label,
        "classes": classes,
        "features": [{"name": name, "type": kind} for name, kind in feature_types.items()],
        "model": {
            **{key: value for key, value in model_spec.items() if key != "builder_source"},
            "input_dim": input_dim,
            "output_dim": output_dim,
            "feature_columns": model_columns,
            "target_scale": target_scale,
        },
        "preprocess": [step_description(step, preprocessor, index) for index, step in enumerate(steps)],
        "modules": package_modules(preprocessor),
        "metrics": {},
        "lineage": lineage,
    }


def pip_requirements(framework: str, preprocessor: Any = None) -> list[str]:
    """What the MLflow pyfunc model needs installed, pinned to this environment's versions: pandas,
    pyarrow, pydantic and PyYAML (imported by the raymlp code the model carries with it, see
    `raymlp.tracking.pyfunc`), Ray Data when there is a fitted chain (it pickles Ray Data's
    preprocessors), dask for dask steps, and the framework's own packages. raymlp itself is not a
    requirement: it is not published, its code travels with the model."""
    from importlib.metadata import version

    pinned = [
        f"pandas=={version('pandas')}",
        f"pyarrow=={version('pyarrow')}",
        f"pydantic=={version('pydantic')}",
        f"PyYAML=={version('PyYAML')}",
    ]
    if preprocessor is not None:
        pinned.insert(0, f"ray[data]=={version('ray')}")
    if any(step.kind == "dask" for step in package_transforms(preprocessor)):
        pinned.append(f"dask[dataframe]=={version('dask')}")
    return pinned + model_format(framework).pip_requirements()

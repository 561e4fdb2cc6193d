"""The one table of training frameworks: what each can do and which module trains it.

The job schema's `train.framework` values, the cross-field checks (`config/checks.py`), the
backend registry (`train/backend.py`) and the train stage's wording all read this table. It sits
on the lowest floor: it imports nothing from raymlp, and naming a backend module here imports
nothing (backends are imported on first use, so torch and TensorFlow stay out of a process that
does not train with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: The names `train.framework` takes (the schema's enum); every one has a row in `FRAMEWORKS`.
FrameworkName = Literal["torch", "tensorflow", "sklearn", "xgboost"]

#: Model kinds, as the job schema tags `train.model` (`mlp`, `cnn`, `custom`, `xgboost`, or an
#: estimator class path, tagged `estimator`).
ModelKind = Literal["mlp", "cnn", "custom", "xgboost", "estimator"]


@dataclass(frozen=True)
class Framework:
    """One training framework: its name, what it trains and how."""

    name: FrameworkName
    #: The module that trains it: the training contract, `raymlp.train.backend.TrainingBackend`.
    backend_module: str
    #: The model kinds it builds (`train.model.type`).
    models: tuple[ModelKind, ...]
    #: The tasks it trains.
    tasks: tuple[str, ...] = ("classification", "regression")
    #: Trains in passes that each end with a report and a checkpoint (epochs, boosting rounds) on
    #: Ray Train workers; False: one fit (a Ray task), one history row.
    epoch_wise: bool = True
    #: What one pass is called in the stage's lines ("epochs", "boosting rounds").
    passes: str = "epochs"
    #: Population based training: a trial may go on from another trial's checkpoint with new
    #: optimizer settings.
    pbt: bool = False
    #: Trains on GPUs with `train.scaling.use_gpu` (the framework's own GPU code runs).
    gpu: bool = True
    #: A light sweep trial (the fit inside the Tune trial's own process) is possible.
    light_trials: bool = False
    #: Settings of `train` only this framework reads: (field, how a message names it, with its verb),
    #: refused, when set, for the other frameworks.
    own_options: tuple[tuple[str, str], ...] = ()

    @property
    def format_module(self) -> str:
        """The module that loads and scores its models in a package (`raymlp.package.formats`)."""
        return f"raymlp.package.formats.{self.name}_format"


FRAMEWORKS: dict[str, Framework] = {
    row.name: row
    for row in (
        Framework(
            "torch",
            "raymlp.train.torch_backend",
            ("mlp", "cnn", "custom"),
            pbt=True,
            own_options=(
                ("gradient_accumulation_steps", "gradient accumulation is"),
                ("mixed_precision", "mixed precision is"),
            ),
        ),
        Framework("tensorflow", "raymlp.train.tensorflow_backend", ("mlp", "cnn", "custom"), pbt=True),
        Framework(
            "sklearn",
            "raymlp.train.sklearn_backend",
            ("estimator",),
            epoch_wise=False,
            passes="fits",
            gpu=False,
            light_trials=True,
            own_options=(("cv_folds", "cross-validation folds are"),),
        ),
        Framework("xgboost", "raymlp.train.xgboost_backend", ("xgboost",), passes="boosting rounds"),
    )
}

#: Framework names in the table's order (the order messages list them in).
FRAMEWORK_NAMES: tuple[str, ...] = tuple(FRAMEWORKS)

if set(FRAMEWORK_NAMES) != set(get_args(FrameworkName)):  # pragma: no cover - caught by any import
    raise ImportError(
        f"raymlp.frameworks: FrameworkName {get_args(FrameworkName)} and FRAMEWORKS {FRAMEWORK_NAMES} differ"
    )


def framework(name: str) -> Framework | None:
    """The table's row of a framework, or None for a name it does not have."""
    return FRAMEWORKS.get(name)


def names_where(**wanted: object) -> tuple[str, ...]:
    """The frameworks whose rows have every attribute given, e.g. `names_where(pbt=True)`."""
    return tuple(
        name for name, row in FRAMEWORKS.items() if all(getattr(row, key) == value for key, value in wanted.items())
    )


def said(names: tuple[str, ...], joiner: str = "and") -> str:
    """Names as a message lists them: 'torch', 'torch and tensorflow', 'torch, tensorflow and xgboost'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {joiner} {names[-1]}"

"""The job file: loading, overrides, ${ENV}, migrations, and the exact error messages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from raymlp.config import ConfigError, load_job
from raymlp.config import loader as loader_module
from raymlp.config.checks import reported_metrics

REPO = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
name: wine
data:
  source: {format: csv, path: data/wine.csv}
  dataset: {name: wine}
  schema:
    columns:
      alcohol: {type: float, min: 0}
      target: {type: string}
  label: target
  split: {validation: 0.2, test: 0.2, stratify: true}
preprocess:
  - {type: standard_scaler}
train:
  framework: torch
  model: {type: mlp, hidden_layers: [16]}
  epochs: 3
register: {model: wine-classifier, alias: champion, require: {test_accuracy: ">= 0.9"}}
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def issues(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_job(path, overrides)
    return [str(issue) for issue in caught.value.issues]


def test_valid_job_loads_with_defaults(tmp_path):
    job = load_job(write(tmp_path, VALID)).config
    assert job.train.epochs == 3
    assert job.train.optimizer.lr == 0.001
    assert job.data.split.seed == 42
    assert job.stages() == ["convert", "train", "register"]


# --- the broken files: every message pinned --------------------------------------------------------

BROKEN = {
    "unknown key with a suggestion": (
        VALID.replace("  epochs: 3", "  epoch: 3"),
        [
            "{f}:17: train.epoch: unknown key; did you mean 'epochs'? allowed keys: framework, task, model, epochs, "
            "batch_size, optimizer, scaling, checkpoint, max_failures, seed, early_stopping, gradient_accumulation_steps, "
            "mixed_precision, cv_folds, env"
        ],
    ),
    "wrong type": (
        VALID.replace("epochs: 3", "epochs: three"),
        ["{f}:17: train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'three')"],
    ),
    "label missing from the schema": (
        VALID.replace("label: target", "label: cultivar"),
        ["{f}:10: data.label: 'cultivar' is not a column of data.schema (columns: alcohol, target)"],
    ),
    "bad YAML syntax": (
        VALID.replace("  epochs: 3", "  epochs: [3"),
        ["{f}:17: '[' opened on this line is not closed (at line 18: expected ',' or ']', but got ':')"],
    ),
    "unclosed brace, reported where it opened": (
        VALID.replace("  dataset: {name: wine}", "  dataset: {name: wine"),
        ["{f}:5: '{{' opened on this line is not closed (at line 6: expected ',' or '}}', but got ':')"],
    ),
    "tab indentation": (
        VALID.replace("  epochs: 3", "\tepochs: 3"),
        ["{f}:17: tab character; indent with spaces"],
    ),
    "out-of-range value": (
        VALID.replace("validation: 0.2", "validation: 1.5"),
        ["{f}:11: data.split.validation: Input should be less than 1 (got 1.5)"],
    ),
    "missing required key": (
        VALID.replace("  dataset: {name: wine}\n", ""),
        ["{f}:3: data.dataset: required key is missing"],
    ),
    "unknown preprocess type": (
        VALID.replace("standard_scaler", "standard_scalr"),
        [
            "{f}:13: preprocess.0.type: unknown type 'standard_scalr'; allowed: standard_scaler, min_max_scaler, "
            "max_abs_scaler, robust_scaler, one_hot_encoder, ordinal_encoder, simple_imputer, function, dask"
        ],
    ),
    "duplicate key": (
        VALID.replace("  epochs: 3", "  epochs: 3\n  epochs: 4"),
        ["{f}:18: train.epochs: duplicate key (first given at line 17)"],
    ),
    "register gate on a metric the trainer does not report": (
        VALID.replace("test_accuracy:", "test_acc:"),
        [
            "{f}:18: register.require.test_acc: 'test_acc' is not a metric the trainer reports; reported: "
            + ", ".join(sorted(reported_metrics("auto")))
        ],
    ),
    "bad comparison in the gate": (
        VALID.replace('">= 0.9"', '"at least 0.9"'),
        [
            "{f}:18: register.require: require.test_accuracy: 'at least 0.9' is not a comparison like '>= 0.9' "
            "(>=, <=, >, <, ==)"
        ],
    ),
    "newer version": (
        VALID.replace("version: 1", "version: 2"),
        ["{f}:1: version: version 2 is newer than this raymlp reads (up to 1); upgrade raymlp"],
    ),
    "no version": (
        VALID.replace("version: 1\n", ""),
        ["{f}:1: version: required key is missing; this raymlp reads job files of version 1"],
    ),
    "empty file": ("", ["{f}:1: the file is empty; a job needs version, name and data"]),
    "model type the framework does not build": (
        VALID.replace("framework: torch", "framework: xgboost"),
        ["{f}:16: train.model.type: 'mlp' is not a model for xgboost; use xgboost"],
    ),
    "stratify without a label": (
        VALID.split("preprocess:")[0].replace("  label: target\n", ""),
        ["{f}:10: data.split.stratify: stratify needs data.label"],
    ),
    "train without a validation split": (
        VALID.replace("validation: 0.2", "validation: 0"),
        [
            "{f}:11: data.split.validation: training needs a validation split (checkpoints are ranked on it); "
            "give a fraction > 0"
        ],
    ),
    "dataset name that is a path": (
        VALID.replace("dataset: {name: wine}", "dataset: {name: ../../etc}"),
        [
            "{f}:5: data.dataset.name: '../../etc' is not a usable name: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '/' or spaces)"
        ],
    ),
    "top level is not a mapping": ("- version: 1\n", ["{f}:1: the top level must be a mapping of sections, got list"]),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_job_files_are_reported_exactly(tmp_path, case):
    text, expected = BROKEN[case]
    path = write(tmp_path, text)
    assert issues(path) == [line.format(f=path) for line in expected]


def test_every_independent_mistake_is_reported_at_once(tmp_path):
    text = (
        VALID.replace("  epochs: 3", "  epoch: 3")
        .replace("validation: 0.2", "validation: 2")
        .replace("hidden_layers: [16]", "hidden_layers: [16, 0]")
    )
    path = write(tmp_path, text)
    assert issues(path) == [
        f"{path}:11: data.split.validation: Input should be less than 1 (got 2)",
        f"{path}:16: train.model.hidden_layers.1: Input should be greater than or equal to 1 (got 0)",
        f"{path}:17: train.epoch: unknown key; did you mean 'epochs'? allowed keys: framework, task, model, epochs, "
        "batch_size, optimizer, scaling, checkpoint, max_failures, seed, early_stopping, gradient_accumulation_steps, "
        "mixed_precision, cv_folds, env",
    ]


def test_cross_field_rules_run_on_the_defaulted_job(tmp_path):
    text = VALID.replace("label: target", "label: cultivar").replace(
        "- {type: standard_scaler}", "- {type: standard_scaler, columns: [alcohol, colour]}"
    )
    path = write(tmp_path, text)
    assert issues(path) == [
        f"{path}:10: data.label: 'cultivar' is not a column of data.schema (columns: alcohol, target)",
        f"{path}:13: preprocess.0.columns.1: 'colour' is not a feature column (features: alcohol, target)",
    ]


def test_tune_paths_metric_and_ranges_are_checked(tmp_path):
    text = VALID + textwrap.dedent("""\
        tune:
          metric: val_acc
          mode: max
          space:
            train.optimizer.lr: {loguniform: [0, 0.1]}
            train.optimiser.lr: {uniform: [0.1, 0.2]}
            train.model.hidden_layers: {choice: []}
        """)
    path = write(tmp_path, text)
    assert issues(path) == [
        f"{path}:23: tune.space.train.optimizer.lr: loguniform bounds must be > 0, got 0.0",
        f"{path}:25: tune.space.train.model.hidden_layers: choice needs at least one value",
    ]
    fixed = text.replace("[0, 0.1]", "[0.001, 0.1]").replace("choice: []", "choice: [[8], [16]]")
    path = write(tmp_path, fixed)
    assert issues(path) == [
        f"{path}:20: tune.metric: 'val_acc' is not a metric the trainer reports; reported: "
        + ", ".join(sorted(reported_metrics("auto"))),
        f"{path}:24: tune.space.train.optimiser.lr: 'train.optimiser.lr' is not a setting of the job file",
    ]


def test_what_a_sweep_cannot_do_is_a_config_error_with_the_line(tmp_path):
    text = VALID + textwrap.dedent("""\
        tune:
          metric: val_accuracy
          mode: max
          search: optuna
          trials: light
          space:
            train.optimizer.lr: {grid: [0.01, 0.1]}
            data.dataset.name: {choice: [wine, iris]}
        """)
    path = write(tmp_path, text)
    assert issues(path) == [
        f"{path}:23: tune.trials: light trials fit in the trial's own process, which only sklearn does (torch trains on "
        "Ray Train); use full or auto",
        f"{path}:25: tune.space.train.optimizer.lr: grid needs search: grid or random (optuna samples; use choice)",
        f"{path}:26: tune.space.data.dataset.name: every trial of a sweep trains on the one dataset version it started "
        "with; search other settings",
    ]


def test_pbt_needs_epochs_from_checkpoints_its_own_sampling_and_settings_it_may_change(tmp_path):
    text = VALID + textwrap.dedent("""\
        tune:
          metric: val_accuracy
          mode: max
          search: hyperopt
          scheduler: {type: pbt, perturbation_interval: 2}
          space:
            train.model.hidden_layers: {choice: [[8], [16]]}
            train.epochs: {randint: [2, 10]}
        """)
    path = write(tmp_path, text)
    assert issues(path) == [
        f"{path}:22: tune.search: pbt samples the first settings itself; use search: random (not hyperopt)",
        f"{path}:24: tune.space: pbt changes train.optimizer.* and train.batch_size between epochs (a model's shape "
        "cannot change mid-run); the space searches none of them",
        f"{path}:26: tune.space.train.epochs: pbt runs every trial for the same epochs; set train.epochs, do not search it",
    ]
    fixed = text.replace("search: hyperopt", "search: random").replace(
        "train.epochs: {randint: [2, 10]}", "train.optimizer.lr: {loguniform: [0.001, 0.1]}"
    )
    assert load_job(write(tmp_path, fixed)).config.tune.scheduler.type == "pbt"
    sklearn = fixed.replace("framework: torch", "framework: sklearn")
    path = write(tmp_path, sklearn)
    assert (
        f"{path}:23: tune.scheduler.type: pbt continues trials from other trials' checkpoints, which torch and "
        "tensorflow training does; sklearn does not (use asha, median or fifo)" in issues(path)
    )


def test_a_trial_starts_from_the_jobs_own_values_only_when_they_lie_in_the_space(tmp_path):
    from raymlp.tune.space import decoded, job_values, trial_overrides

    text = VALID + textwrap.dedent("""\
        tune:
          metric: val_accuracy
          mode: max
          space:
            train.optimizer.lr: {loguniform: [0.0001, 0.1]}
            train.model.hidden_layers: {choice: [[8], [16, 8]]}
        """)
    loaded = load_job(write(tmp_path, text))
    space = loaded.config.tune.space
    job = loaded.public_dict()
    lr = job["train"]["optimizer"]["lr"]
    assert job["train"]["model"]["hidden_layers"] == [16]
    assert job_values(job, space) is None  # [16] is not one of the options
    job["train"]["model"]["hidden_layers"] = [16, 8]
    # Options that are lists reach Tune as their positions (Tune would read a list as more space).
    assert job_values(job, space) == {"train.optimizer.lr": lr, "train.model.hidden_layers": 1}
    assert decoded(space, {"train.optimizer.lr": lr, "train.model.hidden_layers": 1}) == {
        "train.optimizer.lr": lr,
        "train.model.hidden_layers": [16, 8],
    }
    job["train"]["optimizer"]["lr"] = 0.5  # outside the range: the searcher could not start there
    assert job_values(job, space) is None
    import numpy as np

    overrides = trial_overrides({"train.optimizer.lr": np.float64(0.25), "train.model.hidden_layers": (16, 8)})
    assert overrides == ["train.model.hidden_layers=[16, 8]", "train.optimizer.lr=0.25"]
    applied = load_job(write(tmp_path, text), overrides).config
    assert applied.train.optimizer.lr == 0.25 and applied.train.model.hidden_layers == [16, 8]


# --- --set ------------------------------------------------------------------------------------------


def test_set_overrides_values_and_types(tmp_path):
    job = load_job(
        write(tmp_path, VALID), ["train.epochs=7", "train.model.hidden_layers=[8, 4]", "data.split.seed=1"]
    ).config
    assert job.train.epochs == 7
    assert job.train.model.hidden_layers == [8, 4]
    assert job.data.split.seed == 1


def test_set_into_a_list_item(tmp_path):
    job = load_job(write(tmp_path, VALID), ["preprocess.0.type=min_max_scaler"]).config
    assert job.preprocess[0].type == "min_max_scaler"


def test_bad_set_is_reported_with_the_override(tmp_path):
    path = write(tmp_path, VALID)
    assert issues(path, ["train.epochs", "train.epochs=lots", "train.epochz=3"]) == [
        "--set train.epochs: train.epochs: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=5",
        "--set train.epochs=lots: train.epochs: Input should be a valid integer, unable to parse string as an "
        "integer (got 'lots')",
        "--set train.epochz=3: train.epochz: unknown key; did you mean 'epochs'? allowed keys: framework, task, "
        "model, epochs, batch_size, optimizer, scaling, checkpoint, max_failures, seed, early_stopping, gradient_accumulation_steps, "
        "mixed_precision, cv_folds, env",
    ]


# --- ${ENV} -------------------------------------------------------------------------------------------


def test_env_interpolation_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("WINE_EPOCHS", "5")
    monkeypatch.delenv("WINE_LR", raising=False)
    text = VALID.replace("epochs: 3", "epochs: ${WINE_EPOCHS}\n  optimizer: {lr: '${WINE_LR:-0.05}'}")
    job = load_job(write(tmp_path, text)).config
    assert job.train.epochs == 5
    assert job.train.optimizer.lr == 0.05


def test_undefined_env_is_an_error_with_line_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_RAYMLP_VAR", raising=False)
    path = write(tmp_path, VALID.replace("path: data/wine.csv", "path: '${NO_SUCH_RAYMLP_VAR}/wine.csv'"))
    assert issues(path) == [
        f"{path}:4: data.source.path: environment variable NO_SUCH_RAYMLP_VAR is not set "
        "(write ${NO_SUCH_RAYMLP_VAR:-default} to give a default)"
    ]


def test_secrets_from_env_never_appear_in_the_public_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://loader:s3cret@db.internal/warehouse")
    text = VALID.replace(
        "  dataset: {name: wine}", "  collect: {url: '${WAREHOUSE_URL}', table: wine_raw}\n  dataset: {name: wine}"
    )
    loaded = load_job(write(tmp_path, text))
    assert loaded.config.data.collect.url.endswith("s3cret@db.internal/warehouse")
    public = json.dumps(loaded.public_dict())
    assert "s3cret" not in public
    assert loaded.public_dict()["data"]["collect"]["url"] == "${WAREHOUSE_URL}"


def test_dollar_dollar_escapes(tmp_path):
    job = load_job(
        write(tmp_path, VALID.replace("name: wine\n", "name: wine\nenv: {env_vars: {PRICE: '$${NOT_A_VAR}'}}\n"))
    ).config
    assert job.env.env_vars == {"PRICE": "${NOT_A_VAR}"}


# --- migrations ---------------------------------------------------------------------------------------


def test_migration_hook_upgrades_old_files_and_keeps_lines(tmp_path, monkeypatch):
    def rename_epochs(raw):
        raw["train"]["epochs"] = raw["train"].pop("num_epochs")
        return raw, {("train", "num_epochs"): ("train", "epochs")}

    monkeypatch.setattr(loader_module, "MIGRATIONS", {0: rename_epochs})
    old = VALID.replace("version: 1", "version: 0").replace("epochs: 3", "num_epochs: 4")
    job = load_job(write(tmp_path, old)).config
    assert (job.version, job.train.epochs) == (1, 4)
    broken = write(tmp_path, old.replace("num_epochs: 4", "num_epochs: four"), "broken.yaml")
    assert issues(broken) == [
        f"{broken}:17: train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'four')"
    ]


def test_a_version_without_a_migration_is_refused(tmp_path):
    path = write(tmp_path, VALID.replace("version: 1", "version: 0"))
    assert issues(path) == [f"{path}:1: version: no migration from version 0; supported: none"]


def test_job_files_that_do_not_exist_or_are_not_text(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert issues(missing) == [f"{missing}: no such job file"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe")
    assert issues(binary) == [f"{binary}:2: the file is not UTF-8 text"]


# --- the examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_file", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_job_validates(job_file):
    loaded = load_job(job_file)
    assert loaded.config.name


def test_examples_exist():
    assert (REPO / "jobs" / "quickstart.yaml").exists()


def test_json_schema_comes_from_the_models():
    from raymlp.config import job_json_schema

    schema = job_json_schema()
    assert schema["title"] == "raymlp job file, version 1"
    assert set(schema["required"]) == {"version", "name", "data"}
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["epochs"]["minimum"] == 1 and train["epochs"]["description"]
    assert schema["$defs"]["TrainConfig"]["additionalProperties"] is False

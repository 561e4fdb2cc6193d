"""The training-backend contract and the framework table: every backend module satisfies
`TrainingBackend` without importing its framework, the schema, checks and registry read one table,
and a failed Ray Train run is reported by its workers' own exception line."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from typing import get_args

import pytest

from raymlp.errors import UsageError, WorkFailed
from raymlp.frameworks import FRAMEWORK_NAMES, FRAMEWORKS, names_where
from raymlp.train.backend import BACKENDS, TrainingBackend, training_backend
from raymlp.train.driver import root_cause, training_failure

HEAVY = ("torch", "tensorflow", "keras", "xgboost", "sklearn")


def test_every_backend_module_implements_the_contract_and_imports_no_framework():
    script = f"""
import inspect, json, sys
from raymlp.train.backend import TrainingBackend, training_backend
found = {{}}
for name in {list(FRAMEWORK_NAMES)!r}:
    module = training_backend(name)
    found[name] = {{"module": module.__name__, "is_backend": isinstance(module, TrainingBackend),
                   "fit": list(inspect.signature(module.fit).parameters)}}
print(json.dumps({{"found": found, "heavy": sorted(set(sys.modules) & set({list(HEAVY)!r}))}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], (
        f"importing the backends imported {result['heavy']} (imports must stay inside functions)"
    )
    for name, row in FRAMEWORKS.items():
        found = result["found"][name]
        assert found["module"] == row.backend_module
        assert found["is_backend"], f"{row.backend_module} lacks a function of TrainingBackend"
        assert found["fit"] == ["request"], f"{row.backend_module}.fit takes {found['fit']}, not (request)"


def test_the_contract_names_what_the_backends_provide():
    contract = [name for name, _ in inspect.getmembers(TrainingBackend, inspect.isfunction) if not name.startswith("_")]
    assert contract == ["fit"]
    with pytest.raises(UsageError, match=r"^train\.framework: no backend for 'jax'; available: torch, tensorflow"):
        training_backend("jax")


def test_schema_checks_and_registry_read_the_one_framework_table():
    from raymlp.config.checks import AVAILABLE_FRAMEWORKS
    from raymlp.config.schema import TrainConfig

    assert get_args(TrainConfig.model_fields["framework"].annotation) == FRAMEWORK_NAMES
    assert AVAILABLE_FRAMEWORKS == FRAMEWORK_NAMES == tuple(BACKENDS)
    assert names_where(pbt=True) == ("torch", "tensorflow")
    assert names_where(epoch_wise=True) == ("torch", "tensorflow", "xgboost")
    assert names_where(light_trials=True) == ("sklearn",)
    for row in FRAMEWORKS.values():
        for option, _ in row.own_options:
            assert option in TrainConfig.model_fields


WORKER_TRACEBACK = """Training failed due to worker errors:
[Rank 0,1 Error Snippet]:
ray::_RayTrainWorker__execute.get_next() (pid=4242, ip=10.0.0.1)
  File "/site-packages/ray/train/v2/_internal/execution/worker_group/thread_runner.py", line 38, in _run_target
    result = target()
  File "/work/raymlp/train/models.py", line 138, in build_torch_model
    raise WorkFailed(f"train.model.builder {{spec['builder']}} returned ...")
{last}
"""


def test_the_root_cause_is_the_workers_exception_line():
    error = RuntimeError(
        WORKER_TRACEBACK.format(
            last="xgboost.core.XGBoostError: [10:15:01] value -1 for Parameter max_depth should be greater equal to 0"
        )
    )
    assert root_cause(error) == "XGBoostError: [10:15:01] value -1 for Parameter max_depth should be greater equal to 0"
    failure = training_failure(error)
    assert isinstance(failure, WorkFailed) and str(failure).startswith(
        "training failed: XGBoostError: [10:15:01] value -1"
    )
    assert root_cause(RuntimeError("no traceback here\n\nlast words  ")) == "last words"
    assert root_cause(RuntimeError("")) == "RuntimeError"


@pytest.mark.parametrize("kind", [WorkFailed, UsageError])
def test_a_workers_own_raymlp_error_comes_back_as_itself(kind):
    message = "train.model.builder nets:bad returned str, not a torch.nn.Module"
    failure = training_failure(RuntimeError(WORKER_TRACEBACK.format(last=f"raymlp.errors.{kind.__name__}: {message}")))
    assert type(failure) is kind and str(failure) == message
    # A class of the same name elsewhere is not raymlp's: reported as a training failure.
    other = training_failure(RuntimeError(WORKER_TRACEBACK.format(last=f"theirs.{kind.__name__}: {message}")))
    assert type(other) is WorkFailed and str(other) == f"training failed: {kind.__name__}: {message}"


@pytest.mark.parametrize(
    ("framework", "model", "said"),
    [
        ("torch", {"type": "mlp"}, "2 worker(s), up to 10 epochs"),
        ("tensorflow", {"type": "mlp"}, "2 worker(s), up to 10 epochs"),
        ("xgboost", {"type": "xgboost"}, "2 worker(s), up to 10 boosting rounds"),
        ("sklearn", {"type": "sklearn.linear_model.Ridge"}, "one Ray task"),
    ],
)
def test_the_stage_says_how_each_framework_runs_from_the_table(framework, model, said):
    from raymlp.config.schema import TrainConfig
    from raymlp.train.stage import _how_it_runs

    train = TrainConfig(framework=framework, model=model, scaling={"num_workers": 2})
    assert _how_it_runs(train) == said


def test_a_resume_is_refused_while_the_runs_controller_lives(monkeypatch):
    from types import SimpleNamespace

    from raymlp.train import resume

    asked = []
    alive = [SimpleNamespace(actor_id="9f3c2a1b7e6d5c4b3a29", pid=4242, job_id="05000000")]
    monkeypatch.setattr(resume, "alive_controllers", lambda run_id, address: asked.append((run_id, address)) or alive)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import ray

    # The suite's own session Ray may be up in this process; the case here is a command's first Ray.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    resume.refuse_while_training("run-1", None)  # an embedded Ray, started afresh: nothing to look at
    assert asked == []
    with pytest.raises(UsageError) as refused:
        resume.refuse_while_training("run-1", "10.0.0.1:6379")
    assert asked == [("run-1", "10.0.0.1:6379")]
    assert str(refused.value).startswith(
        "--resume: run run-1 is still training: its Ray Train controller is alive on "
        "the cluster (actor 9f3c2a1b7e6d (pid 4242))"
    )
    assert "then run --resume run-1 again" in str(refused.value)
    alive.clear()
    resume.refuse_while_training("run-1", "10.0.0.1:6379")
    asked.clear()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a process already joined to a Ray looks there
    resume.refuse_while_training("run-1", None)
    assert asked == [("run-1", None)]

    def unreachable(run_id, address):
        raise ConnectionError("no dashboard")

    monkeypatch.setattr(resume, "alive_controllers", unreachable)
    resume.refuse_while_training("run-1", "10.0.0.1:6379")  # nothing to go on: the resume goes on as before

"""Named runtime environments (envs/*.yaml): files, their errors, jobs naming them, and how they
reach Ray (ray.init inside a submitted job, Train workers, Ray Data, Serve). No Ray is started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raymlp.config import ConfigError, envs, load_job
from raymlp.config.envs import EnvLookupError, import_name, list_envs, load_env
from raymlp.errors import UsageError
from raymlp.launch import env_check

REPO = Path(__file__).resolve().parents[2]

JOB = """\
version: 1
name: wine
{env}data:
  source: {{format: sklearn, sklearn: {{name: wine}}}}
  dataset: {{name: wine}}
  label: target
train:
  framework: {framework}
  model: {model}
{train_env}"""


def job_text(env: str = "", train_env: str = "", framework: str = "torch", model: str = "{type: mlp}") -> str:
    return JOB.format(
        env=f"env: {env}\n" if env else "",
        train_env=f"  env: {train_env}\n" if train_env else "",
        framework=framework,
        model=model,
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with envs/ as the working directory, and no remembered environments."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(envs, "_RESOLVED", {})
    monkeypatch.delenv("TUNE_ORIG_WORKING_DIR", raising=False)
    from raymlp.ray_internals import job_config_env_var

    monkeypatch.delenv(job_config_env_var(), raising=False)
    write(
        tmp_path,
        "envs/torch.yaml",
        """\
        description: torch training
        pip: [torch==2.13.0]
        env_vars: {OMP_NUM_THREADS: 2}
        """,
    )
    write(
        tmp_path,
        "envs/tf.yaml",
        """\
        pip: [tensorflow==2.21.0, keras>=3]
        env_vars: {TF_CPP_MIN_LOG_LEVEL: "2"}
        """,
    )
    return tmp_path


def problems(error: ConfigError) -> list[str]:
    return [str(issue) for issue in error.issues]


# --- the files ------------------------------------------------------------------------------------


def test_envs_are_listed_by_file_stem_with_their_runtime_env(project):
    found = {named.name: named for named in list_envs()}
    assert sorted(found) == ["tf", "torch"]
    torch = found["torch"]
    assert torch.label == "envs/torch.yaml"
    assert torch.kind == "pip"
    assert torch.config.description == "torch training"
    # A number in env_vars is the text it reads as.
    assert torch.runtime_env() == {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    assert torch.imports() == ["torch"]
    assert found["tf"].imports() == ["tensorflow", "keras"]
    assert load_env("tf").runtime_env()["pip"] == ["tensorflow==2.21.0", "keras>=3"]


def test_every_runtime_env_key_has_its_ray_form(project):
    write(
        project,
        "envs/opts.yaml",
        """\
        pip: [tabulate==0.9.0]
        install_options: [--index-url, https://mirror.example/simple]
        dependency_check: true
        setup_timeout_s: 1200
        """,
    )
    write(project, "envs/fast.yml", "uv: [tabulate==0.9.0]\ninstall_options: [--no-cache]\n")
    write(project, "envs/image.yaml", "container: rayproject/ray:2.60.0-py311\nenv_vars: {A: b}\n")
    write(project, "envs/vars.yaml", "env_vars: {ONLY: vars}\nimports: [json, os.path]\n")
    assert load_env("opts").runtime_env() == {
        "pip": {
            "packages": ["tabulate==0.9.0"],
            "pip_check": True,
            "pip_install_options": ["--index-url", "https://mirror.example/simple"],
        },
        "config": {"setup_timeout_seconds": 1200},
    }
    assert load_env("fast").runtime_env() == {
        "uv": {"packages": ["tabulate==0.9.0"], "uv_check": False, "uv_pip_install_options": ["--no-cache"]}
    }
    assert load_env("image").runtime_env() == {"image_uri": "rayproject/ray:2.60.0-py311", "env_vars": {"A": "b"}}
    assert load_env("image").kind == "container"
    assert load_env("vars").runtime_env() == {"env_vars": {"ONLY": "vars"}}
    assert load_env("vars").imports() == ["json", "os.path"]
    # What Ray itself accepts.
    from ray.runtime_env import RuntimeEnv

    for name in ("opts", "fast", "image", "vars", "torch"):
        RuntimeEnv(**load_env(name).runtime_env())


def test_import_names_come_from_requirement_names():
    assert import_name("scikit-learn>=1.4") == "sklearn"
    assert import_name("Pillow") == "PIL"
    assert import_name("PyYAML==6.0") == "yaml"
    assert import_name("opencv-python-headless") == "cv2"
    assert import_name("ray[default,serve]==2.60.0") == "ray"
    assert import_name("my.pkg-name[x]>=1; python_version > '3'") == "my_pkg_name"
    assert import_name("tabulate @ https://example.com/tabulate.whl") == "tabulate"
    assert import_name("--index-url https://x") is None
    assert import_name("-r requirements.txt") is None
    assert import_name("git+https://github.com/a/b.git") is None
    assert import_name("./local/pkg") is None


def test_a_bad_file_is_reported_line_by_line(project):
    write(
        project,
        "envs/bad.yaml",
        """\
        description: broken
        pip: [tabulate]
        uv: [tabulate]
        env_vars:
          GOOD: 1
          FLAG: true
          "not a name": x
        container: image:1
        pipp: 3
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_env("bad")
    assert problems(caught.value) == [
        "envs/bad.yaml:3: uv: give pip or uv, not both (Ray installs a worker environment with one installer)",
        'envs/bad.yaml:6: env_vars.FLAG: true is a YAML boolean; an environment variable holds text: quote it: "true"',
        "envs/bad.yaml:7: env_vars.not a name: 'not a name' is not an environment variable name (letters, digits and '_', "
        "not starting with a digit)",
        "envs/bad.yaml:8: container: a container cannot be combined with pip: Ray 2.60's image_uri runtime_env allows only "
        "env_vars beside it; install those packages into the image instead",
        "envs/bad.yaml:9: pipp: unknown key; did you mean 'pip'? allowed keys: description, pip, uv, install_options, "
        "dependency_check, env_vars, container, imports, setup_timeout_s",
    ]
    assert str(caught.value).endswith("5 problems in the environment file")
    assert caught.value.exit_code == 2


def test_file_level_problems(project):
    write(project, "envs/empty.yaml", "")
    write(project, "envs/list.yaml", "- torch\n")
    write(project, "envs/default.yaml", "pip: [x]\n")
    write(project, "envs/twice.yaml", "pip: [x]\n")
    write(project, "envs/twice.yml", "pip: [y]\n")
    write(project, "envs/opts.yaml", "install_options: [--no-deps]\n")
    write(project, "envs/syntax.yaml", "pip: [x\n")
    with pytest.raises(ConfigError) as caught:
        list_envs()
    found = problems(caught.value)
    assert "envs/default.yaml: `default` is reserved for the cluster's own environment; rename the file" in found
    assert "envs/empty.yaml:1: the file is empty; an environment needs pip, uv, env_vars or container" in found
    assert "envs/list.yaml:1: the top level must be a mapping of settings, got list" in found
    assert "envs/opts.yaml:1: install_options: installer settings need pip or uv packages" in found
    assert any(line.startswith("envs/syntax.yaml:1: '[' opened on this line is not closed") for line in found)
    assert "envs/twice.yaml: environment 'twice' has two files (envs/twice.yaml, envs/twice.yml); keep one" in found
    assert str(caught.value).endswith("problems in the environment files")


def test_unknown_names_say_what_there_is(project, tmp_path_factory):
    with pytest.raises(EnvLookupError, match=r"no environment 'nope' in envs/ \(there are: tf, torch\)"):
        load_env("nope")
    elsewhere = tmp_path_factory.mktemp("no-envs")
    with pytest.raises(EnvLookupError, match="there is no envs/ folder in"):
        load_env("torch", elsewhere)
    assert issubclass(EnvLookupError, UsageError)


def test_secret_values_are_shown_as_their_reference(project, monkeypatch):
    monkeypatch.setenv("WANDB_KEY_FOR_TEST", "s3cret")
    write(project, "envs/secret.yaml", "env_vars: {WANDB_API_KEY: '${WANDB_KEY_FOR_TEST}'}\n")
    named = load_env("secret")
    assert named.runtime_env() == {"env_vars": {"WANDB_API_KEY": "s3cret"}}
    assert named.public_runtime_env() == {"env_vars": {"WANDB_API_KEY": "${WANDB_KEY_FOR_TEST}"}}
    assert "s3cret" not in json.dumps(named.public_settings())


def test_the_repositorys_example_envs_load():
    found = {named.name: named for named in list_envs(REPO)}
    assert {"torch", "tensorflow"} <= set(found)
    assert "torch==2.13.0" in found["torch"].requirements
    assert "tensorflow" in found["tensorflow"].imports()


# --- jobs naming environments ---------------------------------------------------------------------------


def _runtime_env(loaded) -> dict | None:
    """What `ray_runtime` gives `ray.init` for a job's `env`: the pipeline's arguments, reconciled with
    the submission's runtime_env as `ray_runtime` does (`raymlp.runtime.envs.outside_the_submission`)."""
    from raymlp.pipeline import _runtime_env as arguments
    from raymlp.runtime.envs import outside_the_submission

    given = arguments(loaded)
    return outside_the_submission(given["runtime_env"], given["env_described"])


def test_inline_and_named_envs_in_a_job(project):
    named = load_job(write(project, "named.yaml", job_text(env="torch")))
    assert named.config.env == "torch"
    assert _runtime_env(named) == {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    inline = load_job(write(project, "inline.yaml", job_text(env="{pip: [tabulate==0.9.0], env_vars: {A: 1}}")))
    assert _runtime_env(inline) == {"pip": ["tabulate==0.9.0"], "env_vars": {"A": "1"}}
    uv = load_job(write(project, "uv.yaml", job_text(env="{uv: [tabulate==0.9.0]}")))
    assert _runtime_env(uv) == {"uv": ["tabulate==0.9.0"]}
    assert _runtime_env(load_job(write(project, "default.yaml", job_text()))) is None
    # The public config (MLflow params, the catalog's run) keeps the name.
    assert named.public_dict()["env"] == "torch"


def test_unknown_env_name_is_a_config_error_on_its_line(project):
    path = write(project, "job.yaml", job_text(env="nope", train_env="tff"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert problems(caught.value) == [
        f"{path}:3: env: no environment 'nope' in envs/ (there are: tf, torch)",
        f"{path}:11: train.env: no environment 'tff' in envs/ (there are: tf, torch)",
    ]


def test_validate_names_the_line_of_an_unknown_env_and_exits_2(project):
    write(project, "job.yaml", job_text(train_env="tensorflw"))
    result = subprocess.run(
        [sys.executable, "-m", "raymlp", "validate", "job.yaml"],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "job.yaml:10: train.env: no environment 'tensorflw' in envs/ (there are: tf, torch)",
        "1 problem in the job file",
    ]


def test_a_job_naming_a_bad_env_file_shows_its_problems(project):
    write(project, "envs/broken.yaml", "pip: [x]\nuv: [y]\n")
    path = write(project, "job.yaml", job_text(env="broken"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert problems(caught.value) == [
        f"{path}:3: env: environment 'broken' is not valid: envs/broken.yaml:2: uv: give pip or uv, not both "
        "(Ray installs a worker environment with one installer)"
    ]


def test_bad_env_values_in_a_job(project):
    path = write(project, "job.yaml", job_text(env="'not a name'", train_env="{pip: [a], uv: [b], pipz: 1}"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    found = problems(caught.value)
    assert found[0].startswith(
        f"{path}:3: env: 'not a name' is not an environment name: `default`, or the stem of a file"
    )
    assert (
        f"{path}:11: train.env.uv: give pip or uv, not both (Ray installs a worker environment with one installer)"
        in found
    )
    assert f"{path}:11: train.env.pipz: unknown key; did you mean 'pip'? allowed keys: pip, uv, env_vars" in found


def test_stage_envs_must_combine_with_the_jobs_the_way_ray_merges_them(project):
    write(project, "envs/fastuv.yaml", "uv: [tabulate]\n")
    write(project, "envs/image.yaml", "container: img:1\n")
    path = write(project, "job.yaml", job_text(env="torch", train_env="fastuv"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert "installs with uv and the job's `env` with pip" in problems(caught.value)[0]
    path = write(project, "job.yaml", job_text(env="torch", train_env="image"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert "a container environment and a pip/uv one cannot be laid over each other" in problems(caught.value)[0]
    path = write(project, "job.yaml", job_text(env="torch", train_env="default"))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert problems(caught.value) == [
        f"{path}:11: train.env: `default` means the cluster's own environment, which a stage cannot return to: Ray lays a "
        "stage's environment over the job's `env`. Remove it to run in the job's environment"
    ]
    # Same installer, or a job without an environment: fine.
    assert load_job(write(project, "ok.yaml", job_text(env="torch", train_env="tf"))).config.train.env == "tf"
    assert load_job(write(project, "ok2.yaml", job_text(train_env="default"))).config.train.env == "default"


def test_light_tune_trials_cannot_have_a_train_env(project):
    text = job_text(train_env="tf", framework="sklearn", model="{type: sklearn.linear_model.LogisticRegression}")
    text += "tune:\n  metric: val_accuracy\n  mode: max\n  space: {train.model.params.C: {loguniform: [0.01, 10]}}\n"
    path = write(project, "job.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert problems(caught.value)[0].startswith(
        f"{path}:10: train.env: light tune trials fit inside Ray Tune's trial processes"
    )
    assert load_job(write(project, "full.yaml", text + "  trials: full\n")).config.tune.trials == "full"


def test_envs_are_found_beside_the_job_when_the_working_directory_has_none(project, tmp_path_factory, monkeypatch):
    path = write(project, "jobs/job.yaml", job_text(env="torch"))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # a Tune trial's folder, say
    assert load_job(path).config.env == "torch"
    assert envs.job_runtime_env(load_job(path))["pip"] == ["torch==2.13.0"]


def test_the_json_schema_documents_env():
    from raymlp.config import job_json_schema
    from raymlp.config.schema import EnvFileConfig

    schema = job_json_schema()
    assert "envs/NAME.yaml" in schema["properties"]["env"]["description"]
    for section in ("TrainConfig", "PredictConfig", "ServeConfig"):
        assert "envs/NAME.yaml" in schema["$defs"][section]["properties"]["env"]["description"]
    assert "image_uri" in EnvFileConfig.model_json_schema()["properties"]["container"]["description"]


# --- inside a submitted Ray job -------------------------------------------------------------------------


def _submitted_with(monkeypatch, runtime_env: dict) -> None:
    from raymlp.ray_internals import job_config_env_var

    monkeypatch.setenv(job_config_env_var(), json.dumps({"runtime_env": runtime_env, "metadata": {}}))


def test_inside_a_submitted_job_ray_init_gets_only_what_the_submission_lacks(project, monkeypatch):
    loaded = load_job(write(project, "job.yaml", job_text(env="torch")))
    # raymlp submit sent the same environment (and the working dir): nothing more for ray.init.
    _submitted_with(
        monkeypatch,
        {"working_dir": "gcs://_ray_pkg_x.zip", "pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}},
    )
    assert _runtime_env(loaded) is None
    # Ray's dict form of the same list is the same setting; an env var it lacks is still given.
    _submitted_with(monkeypatch, {"pip": {"packages": ["torch==2.13.0"], "pip_check": False}, "env_vars": {"X": "1"}})
    assert _runtime_env(loaded) == {"env_vars": {"OMP_NUM_THREADS": "2"}}
    # What Ray's Jobs client makes of a uv list (its default options filled in) is the same uv list.
    from ray.runtime_env import RuntimeEnv

    uv = load_job(write(project, "uv.yaml", job_text(env="{uv: [tabulate==0.9.0]}")))
    _submitted_with(monkeypatch, RuntimeEnv(uv=["tabulate==0.9.0"]).to_dict())
    assert _runtime_env(uv) is None
    # Submitted without a runtime_env: the job file's environment goes to ray.init whole.
    _submitted_with(monkeypatch, {})
    assert _runtime_env(loaded) == {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}


def test_a_submission_that_disagrees_with_the_job_file_is_a_usage_error(project, monkeypatch):
    loaded = load_job(write(project, "job.yaml", job_text(env="torch")))
    _submitted_with(monkeypatch, {"pip": ["torch==2.12.0"]})
    with pytest.raises(UsageError) as caught:
        _runtime_env(loaded)
    message = str(caught.value)
    assert message.startswith(
        "the job file's env (torch) and the runtime_env this Ray job was submitted with disagree on pip"
    )
    assert "torch==2.12.0" in message and "raymlp submit" in message and "env: default" in message
    _submitted_with(monkeypatch, {"image_uri": "rayproject/ray:2.60.0"})
    with pytest.raises(UsageError, match=r"disagree on pip \(the submission has image_uri\)"):
        _runtime_env(loaded)
    _submitted_with(monkeypatch, {"uv": ["torch==2.13.0"]})
    with pytest.raises(UsageError, match=r"disagree on pip \(the submission has uv\)"):
        _runtime_env(loaded)


def test_an_env_var_the_submission_sets_otherwise_keeps_the_submissions_value(project, monkeypatch, capsys):
    loaded = load_job(write(project, "job.yaml", job_text(env="torch")))
    _submitted_with(monkeypatch, {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "8"}})  # submit --env-var
    assert _runtime_env(loaded) is None
    assert capsys.readouterr().err.strip() == (
        "note: env_vars OMP_NUM_THREADS: the submission's values are used, not the job file's env (torch)'s"
    )


def test_the_forwarded_api_server_address_is_reconciled_with_the_job_env(project, monkeypatch, capsys):
    """`ray_runtime` forwards RAY_API_SERVER_ADDRESS to a joined cluster's job under the job env's own
    env_vars; inside a submission that sets it otherwise, the submission's value stays (said by name)."""
    from raymlp.runtime.envs import outside_the_submission

    forwarded = {"RAY_API_SERVER_ADDRESS": "http://127.0.0.1:8265"}
    job_env = {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    # Outside a submitted job: the job's env with the variable added (the job's own value would win).
    assert outside_the_submission(job_env, "the job file's env (torch)", forwarded) == {
        "pip": ["torch==2.13.0"],
        "env_vars": {"RAY_API_SERVER_ADDRESS": "http://127.0.0.1:8265", "OMP_NUM_THREADS": "2"},
    }
    assert outside_the_submission(None, "the job file's env", forwarded) == {"env_vars": forwarded}
    # Inside one whose runtime_env has the same env and another address: nothing more for ray.init.
    _submitted_with(
        monkeypatch, {**job_env, "env_vars": {"OMP_NUM_THREADS": "2", "RAY_API_SERVER_ADDRESS": "http://h:1"}}
    )
    assert outside_the_submission(job_env, "the job file's env (torch)", forwarded) is None
    assert capsys.readouterr().err.strip() == (
        "note: env_vars RAY_API_SERVER_ADDRESS: the submission's values are used, not RAY_API_SERVER_ADDRESS's"
    )


def test_named_runtime_env_for_submissions(project):
    assert envs.named_runtime_env("torch", project) == {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    assert envs.named_runtime_env("default", project) is None
    assert envs.named_runtime_env({"pip": ["a"], "env_vars": {"B": "c"}}, project) == {
        "pip": ["a"],
        "env_vars": {"B": "c"},
    }
    from raymlp.config.schema import InlineEnv

    assert envs.named_runtime_env(InlineEnv(uv=["a"]), project) == {"uv": ["a"]}
    with pytest.raises(EnvLookupError):
        envs.named_runtime_env("nope", project)


# --- stages ---------------------------------------------------------------------------------------------


def test_train_workers_get_the_train_env_over_the_backends_variables(project, tmp_path_factory, monkeypatch):
    from raymlp.train.backend import TrainRequest
    from raymlp.train.driver import worker_runtime_env

    loaded = load_job(write(project, "job.yaml", job_text(env="torch", train_env="tf")))
    request = TrainRequest(
        train=loaded.config.train,
        task="classification",
        input_dim=1,
        output_dim=2,
        datasets={},
        storage_path="/tmp",
        run_name="r",
        output_dir=Path("/tmp"),
    )
    # Resolved when the job was loaded: found even from a folder without envs/ (a Tune trial's).
    monkeypatch.chdir(tmp_path_factory.mktemp("trial"))
    assert worker_runtime_env(request, {"TF_CPP_MIN_LOG_LEVEL": "3", "OTHER": "1"}) == {
        "pip": ["tensorflow==2.21.0", "keras>=3"],
        "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "OTHER": "1"},
    }
    plain = load_job(write(project, "plain.yaml", job_text())).config.train
    request.train = plain
    assert worker_runtime_env(request) is None
    assert worker_runtime_env(request, {"A": "1"}) == {"env_vars": {"A": "1"}}


def test_sklearn_fit_tasks_get_the_train_env(project):
    from raymlp.train.backend import TrainRequest
    from raymlp.train.sklearn_backend import _task_options

    loaded = load_job(
        write(
            project,
            "job.yaml",
            job_text(
                train_env="{env_vars: {A: b}}",
                framework="sklearn",
                model="{type: sklearn.linear_model.LogisticRegression}",
            ),
        )
    )
    request = TrainRequest(
        train=loaded.config.train,
        task="classification",
        input_dim=1,
        output_dim=2,
        datasets={},
        storage_path="/tmp",
        run_name="r",
        output_dir=Path("/tmp"),
    )
    assert _task_options(request)["runtime_env"] == {"env_vars": {"A": "b"}}


def test_serve_replicas_get_the_serve_env_and_a_serve_file_carries_it_resolved(project):
    from raymlp.config.schema import ServeConfig
    from raymlp.serve.app import deployment_options
    from raymlp.serve.spec import EndpointSpec

    load_job(write(project, "job.yaml", job_text(env="torch") + "serve: {env: torch}\n"))
    spec = EndpointSpec(model="m", traffic={"1": 100.0}, packages={"1": "/tmp/p"})
    options = deployment_options(ServeConfig(env="torch"), spec)
    assert options["ray_actor_options"]["runtime_env"] == {
        "pip": ["torch==2.13.0"],
        "env_vars": {"OMP_NUM_THREADS": "2"},
    }
    assert "runtime_env" not in deployment_options(ServeConfig(), spec)["ray_actor_options"]

    from raymlp.serve.deploy import serve_config_file

    written = serve_config_file(spec, ServeConfig(env="torch"), "wine", project / "serve.yaml")
    import yaml

    document = yaml.safe_load(written.read_text())
    application = document["applications"][0]
    assert "env" not in application["args"]["serve"]  # resolved here: the cluster has no envs/
    assert application["deployments"][0]["ray_actor_options"]["runtime_env"]["pip"] == ["torch==2.13.0"]


# --- env check, without a cluster -------------------------------------------------------------------------


def test_the_check_script_runs_anywhere_and_reports_versions(project):
    write(
        project,
        "envs/probe.yaml",
        """\
        pip: [PyYAML, raymlp-no-such-module-xyz]
        env_vars: {RAYMLP_PROBE_SET: "1", RAYMLP_PROBE_UNSET: "1"}
        """,
    )
    entrypoint = env_check.check_entrypoint(load_env("probe"))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "PATH": path, "RAYMLP_PROBE_SET": "1"}
    environment.pop("RAYMLP_PROBE_UNSET", None)
    environment.pop("VIRTUAL_ENV", None)  # set by Ray's activation of a pip/uv environment
    result = subprocess.run(["sh", "-c", entrypoint], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 1  # one module does not import, one variable is missing
    report = env_check._report(result.stdout)
    import yaml

    assert report["modules"]["yaml"]["version"] == __import__("importlib.metadata").metadata.version("PyYAML")
    assert report["modules"]["yaml"]["file"] == yaml.__file__
    assert report["failed"]["raymlp_no_such_module_xyz"].startswith("ModuleNotFoundError")
    assert report["env_vars"] == {"RAYMLP_PROBE_SET": True, "RAYMLP_PROBE_UNSET": False}
    assert report["executable"] == sys.executable and report["ray"]


def test_pip_errors_are_picked_out_of_a_failed_build():
    message = textwrap.dedent("""\
        runtime_env setup failed: Failed to set up runtime environment.
        Traceback (most recent call last):
          File "pip.py", line 1, in _install_pip_packages
        RuntimeError: Failed to execute command: pip install ...
        ERROR: Could not find a version that satisfies the requirement raymlp-no-such-package-xyz==1.0 (from versions: none)
        ERROR: No matching distribution found for raymlp-no-such-package-xyz==1.0
        """)
    assert env_check._error_lines(message) == [
        "ERROR: Could not find a version that satisfies the requirement raymlp-no-such-package-xyz==1.0 (from versions: none)",
        "ERROR: No matching distribution found for raymlp-no-such-package-xyz==1.0",
    ]


def test_env_commands(project):
    def raymlp(*args: str) -> subprocess.CompletedProcess:
        # An address nobody listens on: a command that touched Ray would fail differently.
        return subprocess.run(
            [sys.executable, "-m", "raymlp", *args],
            capture_output=True,
            text=True,
            cwd=project,
            timeout=120,
            env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},
        )

    listed = raymlp("env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["tf", "torch"]
    shown = raymlp("env", "show", "torch", "--json")
    assert json.loads(shown.stdout)["runtime_env"] == {"pip": ["torch==2.13.0"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    table = raymlp("env", "show", "tf")
    assert "tensorflow==2.21.0" in table.stdout and "imports (derived)" in table.stdout
    unknown = raymlp("env", "check", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: no environment 'nope' in envs/ (there are: tf, torch)"
    write(project, "envs/bad.yaml", "pip: [x]\ncontainer: y\n")
    bad = raymlp("env", "check", "bad")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0].startswith("envs/bad.yaml:2: container: a container cannot be combined with pip")
    assert raymlp("env", "list").returncode == 2
    schema = raymlp("env", "schema")
    assert "container" in json.loads(schema.stdout)["properties"]

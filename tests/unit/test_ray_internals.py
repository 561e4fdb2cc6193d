"""Every Ray internal raymlp uses (raymlp/ray_internals.py), one test each: a Ray upgrade that moves or
renames one fails here, by name, instead of somewhere deep in a run. None of these starts Ray."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

from raymlp import ray_internals


def needs(module: str, name: str, function: str) -> object:
    """`module.name`, or a failure that says which Ray name moved and which function must follow it."""
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"{module} moved ({error}): raymlp.ray_internals.{function} needs updating")
    for part in name.split("."):
        if not hasattr(found, part):
            pytest.fail(f"{module}.{name} moved: raymlp.ray_internals.{function} needs updating")
        found = getattr(found, part)
    return found


def test_job_config_env_var():
    needs("ray._private.runtime_env.constants", "RAY_JOB_CONFIG_JSON_ENV_VAR", "job_config_env_var")
    assert ray_internals.job_config_env_var() == "RAY_JOB_CONFIG_JSON_ENV_VAR"


def test_upload_limit_bytes():
    needs("ray._private.runtime_env.packaging", "GCS_STORAGE_MAX_SIZE", "upload_limit_bytes")
    assert ray_internals.upload_limit_bytes() > 1 << 20


def test_upload_walk(tmp_path: Path):
    needs("ray._private.runtime_env.packaging", "_dir_travel", "upload_walk")
    needs("ray._private.runtime_env.packaging", "_get_excludes", "upload_walk")
    (tmp_path / "keep.txt").write_text("a")
    (tmp_path / "skip.log").write_text("b")
    (tmp_path / ".gitignore").write_text("*.log\n")
    seen: list[str] = []
    ray_internals.upload_walk(
        tmp_path,
        ["nothing"],
        lambda path: seen.append(path.name),
        include_gitignore=True,
        logger=logging.getLogger("test"),
    )
    assert "keep.txt" in seen and "skip.log" not in seen


def test_zip_upload(tmp_path: Path):
    needs("ray._private.runtime_env.packaging", "_zip_files", "zip_upload")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    target = tmp_path / "package.zip"
    ray_internals.zip_upload(
        str(tmp_path / "src"), [], str(target), include_gitignore=True, logger=logging.getLogger("test")
    )
    assert target.stat().st_size > 0


def test_gitwildmatch_pattern():
    needs("ray._private.thirdparty.pathspec.patterns.gitwildmatch", "GitWildMatchPattern", "gitwildmatch_pattern")
    pattern = ray_internals.gitwildmatch_pattern("/data/")
    assert pattern.include is True and pattern.regex.match("data/x.csv")
    assert ray_internals.gitwildmatch_pattern("# a comment").include is None


def test_default_upload_excludes():
    needs("ray._private.ray_constants", "get_runtime_env_default_excludes", "default_upload_excludes")
    assert ".git" in ray_internals.default_upload_excludes()


def test_ignore_gitignore_env_var():
    needs("ray._private.ray_constants", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "ignore_gitignore_env_var")
    assert ray_internals.ignore_gitignore_env_var() == "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"


def test_token_auth_mode():
    needs("ray._raylet", "get_authentication_mode", "token_auth_mode")
    needs("ray._raylet", "AuthenticationMode.TOKEN", "token_auth_mode")
    assert isinstance(ray_internals.token_auth_mode(), bool)


def test_wrap_driver_printer(monkeypatch):
    original = needs("ray._private.worker", "print_to_stdstream", "wrap_driver_printer")
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", original)
    calls: list[object] = []
    ray_internals.wrap_driver_printer(lambda printer: lambda *args, **kwargs: calls.append(printer), "_test_mark")
    ray_internals.wrap_driver_printer(lambda printer: pytest.fail("wrapped twice"), "_test_mark")
    worker.print_to_stdstream()
    assert calls == [original]


def test_fake_multinode_provider():
    needs("ray.autoscaler._private.fake_multi_node.node_provider", "FakeMultiNodeProvider", "fake_multinode_provider")
    needs(
        "ray.autoscaler._private.fake_multi_node.node_provider",
        "FakeMultiNodeProvider._create_node_with_resources_and_labels",
        "fake_multinode_provider",
    )
    assert ray_internals.fake_multinode_provider().__name__ == "FakeMultiNodeProvider"


def test_node_params_default():
    original = needs("ray._private.parameter", "RayParams", "node_params_default")
    import inspect

    import ray._private.parameter as parameter

    if "runtime_env_dir_name" not in inspect.signature(original.__init__).parameters:
        pytest.fail(
            "ray._private.parameter.RayParams(runtime_env_dir_name=) moved: "
            "raymlp.ray_internals.node_params_default (raymlp.launch.local_provider) needs updating"
        )
    with ray_internals.node_params_default("runtime_env_dir_name", "runtime_resources_x"):
        assert parameter.RayParams().runtime_env_dir_name == "runtime_resources_x"
    assert parameter.RayParams is original


def test_connected_dashboard_url():
    needs("ray._private.services", "get_webui_url_from_internal_kv", "connected_dashboard_url")


def test_serve_controller():
    needs("ray.serve._private.constants", "SERVE_CONTROLLER_NAME", "serve_controller")
    needs("ray.serve._private.constants", "SERVE_NAMESPACE", "serve_controller")
    name, namespace = ray_internals.serve_controller()
    assert name and namespace


def test_local_gpu_counts():
    needs("ray._private.accelerators", "get_accelerator_manager_for_resource", "local_gpu_counts")
    count, visible = ray_internals.local_gpu_counts()
    assert isinstance(count, int) and (visible is None or isinstance(visible, list))


def test_in_tune_session():
    needs("ray.tune.trainable.trainable_fn_utils", "_in_tune_session", "in_tune_session")
    assert ray_internals.in_tune_session() is False


def test_train_report_logger_name():
    needs("ray.train.v2._internal.execution.context", "__file__", "train_report_logger_name")
    assert ray_internals.train_report_logger_name().endswith(".py")


def test_start_ray_data_actors():
    needs("ray.data._internal.stats", "get_or_create_stats_actor", "start_ray_data_actors")
    needs(
        "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
        "get_or_create_autoscaling_coordinator",
        "start_ray_data_actors",
    )


def test_report_train_checkpoints_to_tune(tmp_path: Path, monkeypatch):
    import inspect

    needs("ray.train._internal.session", "get_session", "report_train_checkpoints_to_tune")
    needs("ray.train._internal.session", "_TrainSession.report", "report_train_checkpoints_to_tune")
    queued = needs(
        "ray.train._internal.session", "_TrainSession._get_result_from_queues", "report_train_checkpoints_to_tune"
    )
    if "self.report(" not in inspect.getsource(queued):  # the results TuneReportCallback queues go through `report`
        pytest.fail(
            "ray.train._internal.session._TrainSession._get_result_from_queues no longer calls self.report: "
            "raymlp.ray_internals.report_train_checkpoints_to_tune needs updating"
        )
    key = needs("ray.tune.integration.ray_train", "CHECKPOINT_PATH_KEY", "report_train_checkpoints_to_tune")
    assert key == ray_internals.TRAIN_CHECKPOINT_PATH_KEY
    import ray.train._internal.session as train_session

    ray_internals.report_train_checkpoints_to_tune()  # outside a trial: nothing to wrap
    reported: list[tuple[dict, object]] = []

    class Session:
        def report(self, metrics: dict, checkpoint: object = None) -> None:
            reported.append((metrics, checkpoint))

    session = Session()
    monkeypatch.setattr(train_session, "get_session", lambda: session)
    ray_internals.report_train_checkpoints_to_tune()
    ray_internals.report_train_checkpoints_to_tune()  # once per session
    session.report({"epoch": 1, "checkpoint_path": str(tmp_path)})
    session.report({"epoch": 2, "checkpoint_path": str(tmp_path / "gone")})
    session.report({"done": True})
    assert [(metrics.get("epoch"), checkpoint is not None) for metrics, checkpoint in reported] == [
        (1, True),
        (2, False),
        (None, False),
    ]
    assert Path(reported[0][1].path) == tmp_path


def _private_ray_name(module: str, names: list[str]) -> str | None:
    """The Ray private module or underscore name an import reaches, if any."""
    parts = module.split(".")
    if parts[0] != "ray":
        return None
    for part in parts[1:]:
        if part.startswith("_"):  # ray._private, ray._raylet, ray.serve._private, ray.data._internal, ...
            return module
    for name in names:
        if name.startswith("_"):  # from ray.tune.trainable.trainable_fn_utils import _in_tune_session
            return f"{module}.{name}"
    return None


def test_only_ray_internals_touches_rays_private_apis():
    """Every import in raymlp/ (inside functions too) of a Ray private module or underscore name is in
    raymlp/ray_internals.py; import-linter cannot see inside Ray, so this walks the source."""
    import ast

    package = Path(__file__).resolve().parents[2] / "raymlp"
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "ray_internals.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            reached: list[str | None] = []
            if isinstance(node, ast.Import):
                reached = [_private_ray_name(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                reached = [_private_ray_name(node.module, [alias.name for alias in node.names])]
            for name in filter(None, reached):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {name}")
    assert not found, (
        "Ray private APIs used outside raymlp/ray_internals.py (give each a named function "
        "there, with a test here):\n" + "\n".join(found)
    )

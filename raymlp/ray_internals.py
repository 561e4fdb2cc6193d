"""The one module of raymlp that touches Ray's private APIs.

Everything here reaches into `ray._private`, `ray._raylet`, `ray.*._internal`, `ray.*._private` or an
underscore name, because Ray 2.60 has no public way to do it. Each use is one small function named
for what raymlp needs, and each has a test in tests/unit/test_ray_internals.py that fails, naming the
Ray name and the function here, when a Ray upgrade moves it. Elsewhere raymlp uses Ray's public API
only (the import-linter contracts keep it so); where Ray gains a public way, the function here
switches to it.

Nothing here imports Ray at module level: `raymlp --help` stays fast, and callers keep their own
fallbacks (a function raises ImportError/AttributeError where Ray moved the name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# --- runtime environments and the working_dir upload (ray._private.runtime_env) -------------------------


def job_config_env_var() -> str:
    """The environment variable through which a submitted job's driver gets its JobConfig as JSON
    (its `runtime_env` included): `ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR`."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    return RAY_JOB_CONFIG_JSON_ENV_VAR


def upload_limit_bytes() -> int:
    """Ray's limit on an uploaded working_dir package (`packaging.GCS_STORAGE_MAX_SIZE`)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return GCS_STORAGE_MAX_SIZE


def upload_walk(
    root: Path, excludes: list[str], visit: Callable[[Path], None], *, include_gitignore: bool, logger: Any
) -> None:
    """Ray's own packaging walk of a working_dir (`packaging._dir_travel` with `_get_excludes`): calls
    `visit` on every path Ray would upload, leaving out `excludes`, `.gitignore`s and `.rayignore`s."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    _dir_travel(root, [_get_excludes(root, excludes)], visit, include_gitignore=include_gitignore, logger=logger)


def zip_upload(root: str, excludes: list[str], target: str, *, include_gitignore: bool, logger: Any) -> None:
    """Zip a working_dir exactly as Ray zips it for upload (`packaging._zip_files`)."""
    from ray._private.runtime_env.packaging import _zip_files

    _zip_files(root, excludes, target, include_gitignore=include_gitignore, logger=logger)


def gitwildmatch_pattern(line: str) -> Any:
    """One gitignore line compiled by the pathspec copy Ray's walk uses (`ray._private.thirdparty.pathspec`),
    so a rule matches here exactly when it matches there: `.include` (None: no pattern), `.regex`."""
    from ray._private.thirdparty.pathspec.patterns.gitwildmatch import GitWildMatchPattern

    return GitWildMatchPattern(line)


def default_upload_excludes() -> list[str]:
    """What Ray itself leaves out of every working_dir (`ray_constants.get_runtime_env_default_excludes`;
    .git, .venv, venv, __pycache__ in 2.60); [] for a Ray without it."""
    from ray._private import ray_constants

    getter = getattr(ray_constants, "get_runtime_env_default_excludes", None)
    return list(getter()) if getter else []


def ignore_gitignore_env_var() -> str:
    """The variable that, set to 1, makes Ray's walk ignore `.gitignore` (`ray_constants.RAY_RUNTIME_ENV_IGNORE_GITIGNORE`)."""
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE

    return RAY_RUNTIME_ENV_IGNORE_GITIGNORE


# --- token authentication (ray._raylet) ---------------------------------------------------------------


def token_auth_mode() -> bool:
    """Whether the Ray of this process checks tokens (`ray._raylet.get_authentication_mode`)."""
    from ray._raylet import AuthenticationMode, get_authentication_mode  # type: ignore[attr-defined]

    return get_authentication_mode() == AuthenticationMode.TOKEN


# --- the driver's printer of workers' and the cluster's lines (ray._private.worker) --------------------


def wrap_driver_printer(wrap: Callable[[Callable[..., Any]], Callable[..., Any]], marker: str) -> None:
    """Replace the function through which a Ray driver prints what its cluster sends
    (`ray._private.worker.print_to_stdstream`) by `wrap(original)`, once: the replacement gets the
    attribute `marker`, and a printer already marked is left as it is."""
    from ray._private import worker

    if not getattr(worker.print_to_stdstream, marker, False):
        wrapped = wrap(worker.print_to_stdstream)
        setattr(wrapped, marker, True)
        worker.print_to_stdstream = wrapped


# --- the local autoscaling cluster (ray.autoscaler._private, ray._private.parameter) --------------------


def fake_multinode_provider() -> type:
    """Ray's fake_multinode node provider class (`ray.autoscaler._private.fake_multi_node.node_provider`);
    raymlp's subclass overrides its `_create_node_with_resources_and_labels`."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    if not hasattr(FakeMultiNodeProvider, "_create_node_with_resources_and_labels"):
        raise AttributeError("FakeMultiNodeProvider._create_node_with_resources_and_labels")
    return FakeMultiNodeProvider


@contextmanager
def node_params_default(key: str, value: Any) -> Iterator[None]:
    """While the block runs, every `RayParams` (`ray._private.parameter.RayParams`, what a node is
    started with) built without `key` gets `key=value`. Not thread-safe: callers hold their own lock."""
    import ray._private.parameter as parameter

    original = parameter.RayParams

    class _RayParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault(key, value)
            super().__init__(*args, **kwargs)

    parameter.RayParams = _RayParams  # type: ignore[misc]
    try:
        yield
    finally:
        parameter.RayParams = original  # type: ignore[misc]


# --- Serve (ray.serve._private) --------------------------------------------------------------------------


def serve_controller() -> tuple[str, str]:
    """The name and namespace of Serve's controller actor (`ray.serve._private.constants`), whose
    presence says Serve runs in the connected cluster without starting it."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return SERVE_CONTROLLER_NAME, SERVE_NAMESPACE


def connected_dashboard_url() -> str | None:
    """The dashboard URL of the cluster this process is connected to (http://HOST:PORT), as the dashboard
    registers it in the GCS (`ray._private.services.get_webui_url_from_internal_kv`); None when it has none."""
    from ray._private.services import get_webui_url_from_internal_kv

    url = get_webui_url_from_internal_kv()
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


# --- accelerators (ray._private.accelerators) ------------------------------------------------------------


def local_gpu_counts() -> tuple[int, list[str] | None]:
    """Ray's own GPU detection on this machine (`ray._private.accelerators`): (GPUs on the node, the
    ids this process may see through CUDA_VISIBLE_DEVICES, None when it does not restrict them)."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    manager: Any = get_accelerator_manager_for_resource("GPU")  # None where Ray knows no GPUs: AttributeError
    return manager.get_current_node_num_accelerators(), manager.get_current_process_visible_accelerator_ids()


# --- Train and Tune (ray.train.v2._internal, ray.tune's underscore names) ---------------------------------


def in_tune_session() -> bool:
    """Whether this process runs a Tune trial's function (`ray.tune.trainable.trainable_fn_utils._in_tune_session`)."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def train_report_logger_name() -> str:
    """The logger through which Ray Train logs two INFO lines per report: named by the file path of
    `ray.train.v2._internal.execution.context`. ImportError for a Ray without that module."""
    from ray.train.v2._internal.execution import context as train_context

    return train_context.__file__


# --- Ray Data (ray.data._internal) -------------------------------------------------------------------------


def start_ray_data_actors() -> None:
    """Ask for the two actors Ray Data starts on a cluster's first execution (its stats actor and
    autoscaling coordinator; get-or-create, detached, non-blocking)."""
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )
    from ray.data._internal.stats import get_or_create_stats_actor

    get_or_create_stats_actor()
    get_or_create_autoscaling_coordinator()


# --- a Tune trial's session (ray.train._internal.session) ----------------------------------------------------

#: The metric under which Ray's `TuneReportCallback` (`ray.tune.integration.ray_train.CHECKPOINT_PATH_KEY`)
#: hands Tune a Ray Train checkpoint's folder.
TRAIN_CHECKPOINT_PATH_KEY = "checkpoint_path"


def report_train_checkpoints_to_tune() -> None:
    """In a Tune trial's process: every result that carries a Ray Train checkpoint's folder under
    `TRAIN_CHECKPOINT_PATH_KEY` (what Ray's `TuneReportCallback` hands the trial's session, each
    epoch) is reported to Tune with that folder as the result's Tune checkpoint, which Tune copies
    into the trial's storage. Ray Tune 2.60 reports those results through the session's `report`
    (`ray.train._internal.session.get_session()`; `_TrainSession._get_result_from_queues` calls
    `self.report(item)`), which this wraps, once per session; outside a trial it does nothing."""
    from ray.train._internal.session import get_session
    from ray.tune import Checkpoint

    session = get_session()
    if session is None or getattr(session, "raymlp_reports_checkpoints", False):
        return
    report = session.report

    def report_with_checkpoint(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        folder = metrics.get(TRAIN_CHECKPOINT_PATH_KEY)
        if checkpoint is None and folder and Path(folder).is_dir():
            checkpoint = Checkpoint.from_directory(folder)
        report(metrics, checkpoint=checkpoint)

    session.report = report_with_checkpoint  # type: ignore[method-assign]
    session.raymlp_reports_checkpoints = True  # type: ignore[attr-defined]

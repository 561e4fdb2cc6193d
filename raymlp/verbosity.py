"""What the command line prints: raymlp's own lines, and the libraries' only when asked (`-v`).

Ray, Ray Data, MLflow, TensorFlow and tqdm each print in their own way (loggers with their own
handlers, Python warnings, C++ logs, progress bars, the output of Ray's worker processes streamed
to the driver). `quiet_libraries` turns each off at its source before those libraries are
imported; `RAYMLP_VERBOSE=1` (what `-v` sets) or `RAYMLP_DEBUG=1` leaves them as they are.
Only the command line calls it: a notebook importing raymlp keeps its libraries' defaults.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from raymlp import settings

#: Environment defaults that keep a library quiet at its source; inherited by an embedded Ray's
#: worker processes, whose output also stays in Ray's log files (`log_to_driver=False`).
QUIET_ENV = {
    "RAY_DATA_LOG_LEVEL": "ERROR",  # "Dataset ... execution finished", "Progress bars disabled"
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # "Creating initial MLflow database tables", pyfunc warnings
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts: 100%|..."
    "TQDM_DISABLE": "1",  # any other tqdm bar a library opens
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ lines (a machine without CUDA: "failed call to cuInit")
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's "Configuration for experiment" table, printed even at verbose=0
    "PYTHONWARNINGS": "ignore",  # library deprecation and user warnings in Ray's worker processes
}


_quieted = False


def quiet_libraries() -> None:
    """Silence the libraries' own output in this process and the processes it starts, unless verbose."""
    global _quieted
    if settings.verbose():
        return
    _quieted = True
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    # Libraries set their loggers' levels again when imported (Serve and Optuna set INFO, with handlers
    # of their own), so levels alone do not hold: below ERROR, nothing is logged in this process.
    # raymlp's own lines are printed, never logged.
    logging.disable(logging.WARNING)


def _without_notices(print_to_stdstream):
    """Ray's driver prints every error its cluster publishes for the job, notices included."""

    def printing(data, ignore_prefix: bool):
        lines = [line for line in data.get("lines", []) if not _is_notice(line)]
        if lines:
            print_to_stdstream({**data, "lines": lines}, ignore_prefix)

    return printing


#: Ray's notice that a task failed and will be retried (Serve's controller ends this way on every
#: `serve.shutdown`); the retry either succeeds or its failure is raised where raymlp reports it.
RETRY_NOTICE = "retries remaining, so the task will be retried"


def _is_notice(line: str) -> bool:
    """A raylet's retry notice or warning (e.g. "8 PYTHON worker processes have been started"), not an error."""
    return RETRY_NOTICE in line or line.lstrip().startswith("WARNING:")


def quiet_ray_driver() -> None:
    """Once Ray is imported: leave Ray's retry notices out of what its driver prints (quiet mode only)."""
    if not _quieted:
        return
    from raymlp import ray_internals

    ray_internals.wrap_driver_printer(_without_notices, "_raymlp_quiet")
    _quiet_ray_data_console()


def _quiet_ray_data_console() -> None:
    """Ray Data logs a failed task at ERROR on its console handler ("An exception was raised from a task
    of operator ...", "Exception occurred in user code ...") before it raises the error, which raymlp
    reports in its own words: in quiet mode its console shows only CRITICAL; its log file
    (logs/ray-data/ray-data.log in the session folder) keeps everything. Ray Data sets up its handlers
    when imported, so it is imported here."""
    import ray.data  # noqa: F401

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)


def import_quietly(module: str) -> Any:
    """Import a module whose first import writes to this process's stderr from C++, before any setting
    of its own applies (TensorFlow's absl: "Could not find cuda drivers on your machine"); in quiet
    mode that first import runs with file descriptor 2 on /dev/null."""
    import importlib
    import sys

    if not _quieted or module in sys.modules:
        return importlib.import_module(module)
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        return importlib.import_module(module)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def ray_init_options() -> dict[str, object]:
    """`ray.init` arguments that keep Ray's own lines and its workers' output off this terminal."""
    if settings.verbose():
        return {"logging_level": logging.INFO, "log_to_driver": True}
    if _quieted:
        return {"logging_level": logging.ERROR, "log_to_driver": False}
    return {"logging_level": logging.WARNING}  # the Python API (a notebook): Ray's warnings, workers' output

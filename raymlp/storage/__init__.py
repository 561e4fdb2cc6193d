"""Where a job keeps its state: artifact root, catalog URL, MLflow tracking URI."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from raymlp import settings
from raymlp.config.schema import StorageConfig

from . import files


@dataclass(frozen=True)
class Storage:
    """Resolved storage locations (local paths are absolute, so Ray workers agree on them)."""

    root: str
    catalog_url: str
    tracking_uri: str

    @property
    def local_root(self) -> Path | None:
        """The root as a local folder, or None when it is in a bucket."""
        return None if files.is_remote(self.root) else Path(self.root)

    @property
    def remote(self) -> bool:
        """Whether the root is in a bucket (s3://, gs://)."""
        return files.is_remote(self.root)

    def folder(self, *parts: str) -> Path:
        """A folder under a local root, created if needed (a root in a bucket has none: ValueError)."""
        if self.local_root is None:
            raise ValueError(f"storage root {self.root} is not local")
        path = self.local_root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, run_id: str) -> RunFolder:
        """The folder of run `run_id` (runs/RUN/) and where its other state lives."""
        return RunFolder(self, run_id)

    def model_cache(self) -> Path:
        """Where registered models' packages are fetched to (shared by predict, serve and replicas): on
        this machine's disk, under the root when it is local, else under RAYMLP_HOME."""
        folder = (self.local_root or settings.home().resolve()) / "cache" / "models"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _in_run(name: str) -> property:
    """A file or folder of the run's folder, by name (a property of RunFolder)."""
    return property(lambda run: files.join(run.path, name), doc=f"runs/RUN/{name}")


@dataclass(frozen=True)
class RunFolder:
    """One run's files: the one place the run-folder layout is spelled.

    ```
    ROOT/runs/RUN/package/             the model package the run trained (train, a sweep's refit)
    ROOT/runs/RUN/training.json        dataset version and MLflow run a training started with (--resume)
    ROOT/runs/RUN/sweep_started.json   the same for a sweep
    ROOT/runs/RUN/tune_results.json    a finished sweep's trials (`raymlp tune results`)
    ROOT/runs/RUN/tune_report.html     its HTML report
    ROOT/ray_results/JOB-RUN8/         Ray Train's run: checkpoints (train)
    ROOT/tune/JOB-RUN8/                Ray Tune's experiment state (a sweep, `tune --resume`)
    ```
    Names are local paths or, on a root in a bucket, URIs (read and write them through
    `storage.files`). Paths are not created by naming them; `create()` makes a local run folder.
    What is built on this machine before it is kept (the package, the trained weights) is built in
    `work_folder()`: the run's folder itself on a local root, else a folder under RAYMLP_HOME.
    """

    storage: Storage
    run_id: str

    PACKAGE = "package"
    TRAINING_STARTED = "training.json"
    SWEEP_STARTED = "sweep_started.json"
    TUNE_RESULTS = "tune_results.json"
    TUNE_REPORT = "tune_report.html"

    @property
    def path(self) -> str:
        return files.join(self.storage.root, "runs", self.run_id)

    def create(self) -> str:
        """The run's folder, made if needed (nothing to make in a bucket)."""
        return files.make_folder(self.path)

    def has(self, name: str) -> bool:
        """Whether the run's folder holds `name`."""
        return files.exists(files.join(self.path, name))

    def work_folder(self) -> Path:
        """A local folder where this run builds what it keeps (made if needed)."""
        folder = self._work_path()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove_work_folder(self) -> None:
        """On a root in a bucket, the local folder the run built in (what it built was sent)."""
        if self.storage.remote:
            folder = self._work_path()
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # others may be working there
                folder.parent.rmdir()

    def _work_path(self) -> Path:
        local = self.storage.local_root
        return local / "runs" / self.run_id if local is not None else settings.home().resolve() / "work" / self.run_id

    package = _in_run(PACKAGE)
    training_started = _in_run(TRAINING_STARTED)
    sweep_started = _in_run(SWEEP_STARTED)
    tune_results = _in_run(TUNE_RESULTS)
    tune_report = _in_run(TUNE_REPORT)

    def short_name(self, job: str) -> str:
        """JOB-RUN8: the name of the run's folder in Ray Train's and Ray Tune's storage."""
        return f"{job}-{self.run_id[:8]}"

    def train_checkpoints(self) -> str:
        """Ray Train's storage_path (a local folder made if needed, or a URI); the run's checkpoints are
        under short_name(job) in it."""
        return files.make_folder(files.join(self.storage.root, "ray_results"))

    def tune_experiment(self, job: str) -> str:
        """Ray Tune's experiment folder of the run's sweep (its parent made if needed)."""
        return files.join(files.make_folder(files.join(self.storage.root, "tune")), self.short_name(job))


def _sqlite_in(folder: Path, name: str) -> str:
    return f"sqlite:///{(folder / name).resolve()}"


def _absolute_sqlite(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def resolve_storage(config: StorageConfig | None = None) -> Storage:
    """Fill defaults (RAYMLP_STORAGE_ROOT, RAYMLP_CATALOG, RAYMLP_TRACKING, else RAYMLP_HOME's) and make
    local paths absolute."""
    config = config or StorageConfig()
    home = settings.home().resolve()
    root = config.root or settings.storage_root() or str(home)
    if files.is_remote(root):
        root = files.normalized(root, key="storage.root" if config.root else settings.STORAGE_ROOT_ENV)
    else:
        root = str(files.local_path(root).resolve())
        Path(root).mkdir(parents=True, exist_ok=True)
    state_folder = home if files.is_remote(root) else Path(root)
    state_folder.mkdir(parents=True, exist_ok=True)
    catalog_url = config.catalog or settings.catalog_url()
    tracking_uri = config.tracking or settings.tracking_uri()
    catalog = _absolute_sqlite(catalog_url) if catalog_url else _sqlite_in(state_folder, "catalog.db")
    tracking = _absolute_sqlite(tracking_uri) if tracking_uri else _sqlite_in(state_folder, "mlflow.db")
    return Storage(root=root, catalog_url=catalog, tracking_uri=tracking)

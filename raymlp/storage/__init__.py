"""Where a job keeps its state: artifact root, catalog URL, MLflow tracking URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raymlp import settings
from raymlp.config.schema import StorageConfig


@dataclass(frozen=True)
class Storage:
    """Resolved storage locations (local paths are absolute, so Ray workers agree on them)."""

    root: str
    catalog_url: str
    tracking_uri: str

    @property
    def local_root(self) -> Path | None:
        """The root as a local folder, or None when it is a remote URI."""
        return None if "://" in self.root else Path(self.root)

    def folder(self, *parts: str) -> Path:
        """A folder under a local root, created if needed."""
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
    return property(lambda run: run.path / name, doc=f"runs/RUN/{name}")


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
    Paths are not created by naming them; `create()` makes the run's folder. A remote root has no
    run folder on this machine: `has` says False, the paths raise ValueError.
    """

    storage: Storage
    run_id: str

    PACKAGE = "package"
    TRAINING_STARTED = "training.json"
    SWEEP_STARTED = "sweep_started.json"
    TUNE_RESULTS = "tune_results.json"
    TUNE_REPORT = "tune_report.html"

    @property
    def path(self) -> Path:
        if self.storage.local_root is None:
            raise ValueError(f"storage root {self.storage.root} is not local")
        return self.storage.local_root / "runs" / self.run_id

    def create(self) -> Path:
        """The run's folder, made if needed."""
        return self.storage.folder("runs", self.run_id)

    def has(self, name: str) -> bool:
        """Whether the run's folder holds `name` (False on a remote root)."""
        return self.storage.local_root is not None and (self.path / name).exists()

    package = _in_run(PACKAGE)
    training_started = _in_run(TRAINING_STARTED)
    sweep_started = _in_run(SWEEP_STARTED)
    tune_results = _in_run(TUNE_RESULTS)
    tune_report = _in_run(TUNE_REPORT)

    def short_name(self, job: str) -> str:
        """JOB-RUN8: the name of the run's folder in Ray Train's and Ray Tune's storage."""
        return f"{job}-{self.run_id[:8]}"

    def train_checkpoints(self) -> Path:
        """Ray Train's storage_path (made if needed); the run's checkpoints are under short_name(job) in it."""
        return self.storage.folder("ray_results")

    def tune_experiment(self, job: str) -> Path:
        """Ray Tune's experiment folder of the run's sweep (its parent made if needed)."""
        return self.storage.folder("tune") / self.short_name(job)


def _sqlite_in(folder: Path, name: str) -> str:
    return f"sqlite:///{(folder / name).resolve()}"


def _absolute_sqlite(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def resolve_storage(config: StorageConfig | None = None) -> Storage:
    """Fill defaults from RAYMLP_HOME and make local paths absolute."""
    config = config or StorageConfig()
    home = settings.home().resolve()
    root = config.root or str(home)
    if "://" not in root:
        root = str(Path(root).expanduser().resolve())
        Path(root).mkdir(parents=True, exist_ok=True)
    state_folder = Path(root) if "://" not in root else home
    state_folder.mkdir(parents=True, exist_ok=True)
    catalog = _absolute_sqlite(config.catalog) if config.catalog else _sqlite_in(state_folder, "catalog.db")
    tracking = _absolute_sqlite(config.tracking) if config.tracking else _sqlite_in(state_folder, "mlflow.db")
    return Storage(root=root, catalog_url=catalog, tracking_uri=tracking)


def write_json_atomically(path: Path, value: object) -> None:
    """`path` holds the old JSON or the new, never part of one."""
    import json
    import os

    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)

"""The project folder a submitted job gets as its working_dir: what goes, and whether it fits.

The files are chosen by Ray's own packaging walk (its default excludes, `.gitignore`, `.rayignore`,
the runtime_env's `excludes`), so what is measured here is what Ray uploads.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raymlp import settings
from raymlp.errors import UsageError

#: Never uploaded: environments, raymlp's own state (datasets, MLflow store, artifacts), caches.
EXCLUDES = (
    ".venv", "venv", ".git", "__pycache__", "*.pyc", ".raymlp", "mlruns", ".pytest_cache", ".ruff_cache",
    ".mypy_cache", ".ipynb_checkpoints", ".gpu", "*.egg-info",
)

#: Ray's packaging logs each ignore file and each large file; the error below says what matters.
_QUIET = logging.getLogger("raymlp.launch.package")
_QUIET.setLevel(logging.ERROR)

#: Files named in the error when the folder is over Ray's limit.
LARGEST_SHOWN = 8


@dataclass(frozen=True)
class WorkingDir:
    """A project folder as Ray will package it."""

    root: Path
    excludes: tuple[str, ...]
    files: tuple[tuple[str, int], ...]  # (path relative to root, bytes), largest first
    total_bytes: int
    limit_bytes: int

    def runtime_env(self) -> dict:
        return {"working_dir": str(self.root), "excludes": list(self.excludes)}


def plan_working_dir(root: Path, extra_excludes: list[str] | None = None) -> WorkingDir:
    """Walk `root` as Ray's packaging does and list the files it would upload."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, _dir_travel, _get_excludes

    root = root.resolve()
    excludes = EXCLUDES + tuple(extra_excludes or ()) + _home_inside(root)
    files: list[tuple[str, int]] = []

    def note(path: Path) -> None:
        if path.is_file():
            files.append((str(path.relative_to(root)), path.stat().st_size))

    _dir_travel(root, [_get_excludes(root, list(excludes))], note, include_gitignore=_include_gitignore(),
                logger=_QUIET)
    files.sort(key=lambda item: (-item[1], item[0]))
    return WorkingDir(root, excludes, tuple(files), sum(size for _, size in files), GCS_STORAGE_MAX_SIZE)


def check_fits(folder: WorkingDir) -> None:
    """Refuse, before anything is uploaded, a folder whose package would exceed Ray's limit.

    The limit applies to the zip Ray uploads: a folder whose files add up to less always fits;
    one that adds up to more is zipped here as Ray would zip it and measured.
    """
    if folder.total_bytes < folder.limit_bytes:
        return
    packed = _zipped_size(folder)
    if packed < folder.limit_bytes:
        return
    largest = "\n".join(f"  {_size(size):>10}  {path}" for path, size in folder.files[:LARGEST_SHOWN])
    raise UsageError(
        f"working_dir {folder.root} packs to {_size(packed)} ({len(folder.files)} files), over Ray's upload limit "
        f"of {_size(folder.limit_bytes)}; nothing was uploaded. Largest files:\n{largest}\n"
        "List what the job does not need in .rayignore (gitignore syntax) or pass --exclude PATTERN; put data "
        "the job reads on shared storage (s3://, gs://, NFS) instead of in the project folder."
    )


def _zipped_size(folder: WorkingDir) -> int:
    from ray._private.runtime_env.packaging import _zip_files

    with tempfile.TemporaryDirectory(prefix="raymlp-package-") as scratch:
        package = Path(scratch) / "package.zip"
        _zip_files(str(folder.root), list(folder.excludes), str(package), include_gitignore=_include_gitignore(),
                   logger=_QUIET)
        return package.stat().st_size


def _include_gitignore() -> bool:
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE

    return os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"


def _home_inside(root: Path) -> tuple[str, ...]:
    """RAYMLP_HOME, when it lies inside the project under another name than .raymlp."""
    home = settings.home().resolve()
    try:
        return (f"/{home.relative_to(root)}",) if home != root else ()
    except ValueError:
        return ()


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"

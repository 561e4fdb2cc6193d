"""The project folder a submitted job gets as its working_dir: what goes, whether it fits, and why a
file stays behind.

The files are chosen by Ray's own packaging walk (its default excludes, `.gitignore`, `.rayignore`,
the runtime_env's `excludes`), so what is measured here is what Ray uploads. Files that walk leaves
out can be carried (`--include`): the package is then zipped here from the list, and Ray uploads
that zip as it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from raymlp import ray_internals
from raymlp.errors import UsageError
from raymlp.runtime.upload import (
    EXCLUDES,
    home_inside,
    include_gitignore,
    ray_default_excludes,
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
    carried: tuple[str, ...] = ()  # files Ray's walk leaves out that --include adds

    def runtime_env(self, package: Path | None = None) -> dict:
        """`package`: the zip `write_package` made (needed when files are carried)."""
        if self.carried:
            if package is None:
                raise ValueError("a working_dir with carried files is uploaded as the package write_package made")
            return {"working_dir": str(package)}
        return {"working_dir": str(self.root), "excludes": list(self.excludes)}

    def uploads(self, relative: str) -> bool:
        return relative in {path for path, _ in self.files}


def plan_working_dir(
    root: Path, extra_excludes: list[str] | None = None, includes: list[str] | None = None
) -> WorkingDir:
    """Walk `root` as Ray's packaging does and list the files it would upload, plus every file at or
    under each of `includes` (paths relative to `root`) that the walk leaves out."""
    root = root.resolve()
    excludes = EXCLUDES + tuple(extra_excludes or ()) + home_inside(root)
    files: list[tuple[str, int]] = []

    def note(path: Path) -> None:
        if path.is_file():
            files.append((str(path.relative_to(root)), path.stat().st_size))

    ray_internals.upload_walk(
        root, list(excludes) + ray_default_excludes(), note, include_gitignore=include_gitignore(), logger=_QUIET
    )
    walked = {path for path, _ in files}
    carried: list[str] = []
    for item in includes or []:
        for path in _included_files(root, item):
            relative = path.relative_to(root).as_posix()
            if relative not in walked and relative not in carried:
                carried.append(relative)
                files.append((relative, path.stat().st_size))
    files.sort(key=lambda item: (-item[1], item[0]))
    return WorkingDir(
        root,
        excludes,
        tuple(files),
        sum(size for _, size in files),
        ray_internals.upload_limit_bytes(),
        tuple(sorted(carried)),
    )


def _included_files(root: Path, item: str) -> list[Path]:
    path = Path(os.path.expanduser(item))
    path = (path if path.is_absolute() else root / path).absolute()
    try:
        path.relative_to(root)
    except ValueError:
        raise UsageError(
            f"--include {item}: not inside the project folder {root}, which is what is uploaded; a "
            "path outside it is read where it is: it must exist on the cluster's nodes"
        ) from None
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(found for found in path.rglob("*") if found.is_file())
    raise UsageError(f"--include {item}: no such file or folder in {root}")


def write_package(folder: WorkingDir, scratch: Path) -> Path:
    """The working_dir as a zip of exactly `folder.files`, in `scratch`; Ray uploads a local zip as it is
    (content-addressed: the same files give the same package, which Ray then does not upload again)."""
    package = Path(scratch) / "working_dir.zip"
    with zipfile.ZipFile(package, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in sorted(path for path, _ in folder.files):
            source = folder.root / relative
            entry = zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = (source.stat().st_mode & 0xFFFF) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            with source.open("rb") as data, archive.open(entry, "w") as target:
                while chunk := data.read(1 << 20):
                    target.write(chunk)
    return package


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
    with tempfile.TemporaryDirectory(prefix="raymlp-package-") as scratch:
        if folder.carried:
            return write_package(folder, Path(scratch)).stat().st_size
        package = Path(scratch) / "package.zip"
        ray_internals.zip_upload(
            str(folder.root),
            list(folder.excludes) + ray_default_excludes(),
            str(package),
            include_gitignore=include_gitignore(),
            logger=_QUIET,
        )
        return package.stat().st_size


# --- helpers ----------------------------------------------------------------------------------------


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"

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
from pathlib import Path, PurePosixPath

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

#: The folder Ray unpacks an uploaded working_dir into is named after the package: `_ray_pkg_<sha1>`.
PACKAGE_PREFIX = "_ray_pkg_"

#: Ignore files Ray's walk reads in every folder (.gitignore unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1).
IGNORE_FILES = (".gitignore", ".rayignore")


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


def plan_working_dir(root: Path, extra_excludes: list[str] | None = None,
                     includes: list[str] | None = None) -> WorkingDir:
    """Walk `root` as Ray's packaging does and list the files it would upload, plus every file at or
    under each of `includes` (paths relative to `root`) that the walk leaves out."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, _dir_travel, _get_excludes

    root = root.resolve()
    excludes = EXCLUDES + tuple(extra_excludes or ()) + _home_inside(root)
    files: list[tuple[str, int]] = []

    def note(path: Path) -> None:
        if path.is_file():
            files.append((str(path.relative_to(root)), path.stat().st_size))

    _dir_travel(root, [_get_excludes(root, list(excludes) + _ray_default_excludes())], note,
                include_gitignore=_include_gitignore(), logger=_QUIET)
    walked = {path for path, _ in files}
    carried: list[str] = []
    for item in includes or []:
        for path in _included_files(root, item):
            relative = path.relative_to(root).as_posix()
            if relative not in walked and relative not in carried:
                carried.append(relative)
                files.append((relative, path.stat().st_size))
    files.sort(key=lambda item: (-item[1], item[0]))
    return WorkingDir(root, excludes, tuple(files), sum(size for _, size in files), GCS_STORAGE_MAX_SIZE,
                      tuple(sorted(carried)))


def _included_files(root: Path, item: str) -> list[Path]:
    path = Path(os.path.expanduser(item))
    path = (path if path.is_absolute() else root / path).absolute()
    try:
        path.relative_to(root)
    except ValueError:
        raise UsageError(f"--include {item}: not inside the project folder {root}, which is what is uploaded; a "
                         "path outside it is read where it is: it must exist on the cluster's nodes") from None
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
    from ray._private.runtime_env.packaging import _zip_files

    with tempfile.TemporaryDirectory(prefix="raymlp-package-") as scratch:
        if folder.carried:
            return write_package(folder, Path(scratch)).stat().st_size
        package = Path(scratch) / "package.zip"
        _zip_files(str(folder.root), list(folder.excludes) + _ray_default_excludes(), str(package),
                   include_gitignore=_include_gitignore(), logger=_QUIET)
        return package.stat().st_size


# --- why a file stays behind ------------------------------------------------------------------------


def exclusion(root: Path, relative: str, extra_excludes: list[str] | tuple[str, ...] = ()) -> str | None:
    """The rule that keeps `relative` (a path inside `root`) out of Ray's upload of `root`, the way
    Ray's walk applies them (a folder left out takes what is inside with it): `.gitignore:3: /data/`,
    `raymlp's default excludes (.raymlp)`, `--exclude PATTERN`, ...; None when it is uploaded."""
    root = root.resolve()
    rules = _exclude_rules(root, extra_excludes)
    ignore_files = _ignore_rules(root, root)
    parts = PurePosixPath(relative).parts
    for depth in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:depth])
        rule = _last_match(rules, "/".join(parts[:depth]))
        if rule:
            return rule
        for folder, rules_there in ignore_files:
            rule = _last_match(rules_there, path.relative_to(folder).as_posix())
            if rule:
                return rule
        if path.is_dir():
            ignore_files += _ignore_rules(root, path)
    return None


def _exclude_rules(root: Path, extra: list[str] | tuple[str, ...]) -> list[tuple[object, str]]:
    from ray._private.thirdparty.pathspec.patterns.gitwildmatch import GitWildMatchPattern

    labelled = ([(pattern, f"raymlp's default excludes ({pattern})") for pattern in EXCLUDES]
                + [(pattern, f"RAYMLP_HOME, raymlp's own state ({pattern})") for pattern in _home_inside(root)]
                + [(pattern, f"Ray's default excludes ({pattern})") for pattern in _ray_default_excludes()]
                + [(pattern, f"--exclude {pattern}") for pattern in extra if pattern not in EXCLUDES])
    return [(GitWildMatchPattern(pattern), label) for pattern, label in labelled]


def _ignore_rules(root: Path, folder: Path) -> list[tuple[Path, list[tuple[object, str]]]]:
    """The ignore files in `folder` Ray's walk reads, each as (folder, [(pattern, 'FILE:LINE: text')])."""
    from ray._private.thirdparty.pathspec.patterns.gitwildmatch import GitWildMatchPattern

    found = []
    for name in IGNORE_FILES:
        if name == ".gitignore" and not _include_gitignore():
            continue
        path = folder / name
        if not path.is_file():
            continue
        try:
            lines = path.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            continue
        shown = path.relative_to(root).as_posix()
        found.append((folder, [(GitWildMatchPattern(line), f"{shown}:{number}: {line.strip()}")
                               for number, line in enumerate(lines, 1) if line.strip()]))
    return found


def _last_match(rules: list[tuple[object, str]], relative: str) -> str | None:
    """gitignore's reading: the last pattern that matches decides (a `!pattern` takes a file back)."""
    decided: str | None = None
    for pattern, label in rules:
        if pattern.include is not None and pattern.regex.match(relative):
            decided = label if pattern.include else None
    return decided


def in_uploaded_copy() -> bool:
    """Whether this process runs in a submitted Ray job's unpacked working_dir (or one of its tasks)."""
    from .envs import submission_runtime_env

    return (PACKAGE_PREFIX in str(Path.cwd()) or bool(os.environ.get("RAY_JOB_ID"))
            or bool((submission_runtime_env() or {}).get("working_dir")))


def left_behind(pattern: str) -> str:
    """Said with "PATH matches nothing" inside a submitted job: that it runs in an uploaded copy of the
    project and which rule left PATH out of it, with the ways out. "" outside a job, for an absolute
    path or a URL."""
    if "://" in pattern or os.path.isabs(os.path.expanduser(pattern)) or not in_uploaded_copy():
        return ""
    from .envs import submission_runtime_env

    relative = PurePosixPath(os.path.normpath(pattern)).as_posix()
    here = Path.cwd()
    submitted = [item for item in (submission_runtime_env() or {}).get("excludes") or [] if item not in EXCLUDES]
    rule = exclusion(here, relative, submitted) if not relative.startswith("..") else None
    ways = (f"submit with `raymlp submit --include {relative}` (which carries it despite the rule), or give "
            "the job an absolute path on storage every node sees")
    if rule:
        return (f"; this job runs in an uploaded copy of the project folder ({here}), and {rule} left "
                f"'{pattern}' out of the upload: {ways}")
    return (f"; this job runs in an uploaded copy of the project folder ({here}), which holds only what "
            f"was in the submitted folder: submit from the folder that has '{pattern}' (`raymlp submit` "
            f"checks this before uploading; `--include {relative}` carries ignored files), or give the job an "
            "absolute path on storage every node sees")


# --- helpers ----------------------------------------------------------------------------------------


def _ray_default_excludes() -> list[str]:
    """What Ray itself leaves out of every working_dir (.git, .venv, venv, __pycache__ in 2.60)."""
    from ray._private import ray_constants

    getter = getattr(ray_constants, "get_runtime_env_default_excludes", None)
    return list(getter()) if getter else []


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

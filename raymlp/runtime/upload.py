"""What Ray's working_dir upload leaves out of a project folder, and why: the rules of Ray's own walk
(its default excludes, `.gitignore`, `.rayignore`, the runtime_env's `excludes`) replayed along a
path (`exclusion`), and inside a submitted job the sentence that says which rule left a path behind
(`left_behind`). Planning and zipping an upload is `raymlp.launch.workdir` (`raymlp submit`).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from raymlp import ray_internals, settings

from .envs import submission_runtime_env

#: Never uploaded: environments, raymlp's own state (datasets, MLflow store, artifacts), caches.
EXCLUDES = (
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    "*.pyc",
    ".raymlp",
    "mlruns",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".ipynb_checkpoints",
    ".gpu",
    "*.egg-info",
)

#: The folder Ray unpacks an uploaded working_dir into is named after the package: `_ray_pkg_<sha1>`.
PACKAGE_PREFIX = "_ray_pkg_"

#: Ignore files Ray's walk reads in every folder (.gitignore unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1).
IGNORE_FILES = (".gitignore", ".rayignore")


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


def _exclude_rules(root: Path, extra: list[str] | tuple[str, ...]) -> list[tuple[Any, str]]:
    labelled = (
        [(pattern, f"raymlp's default excludes ({pattern})") for pattern in EXCLUDES]
        + [(pattern, f"RAYMLP_HOME, raymlp's own state ({pattern})") for pattern in home_inside(root)]
        + [(pattern, f"Ray's default excludes ({pattern})") for pattern in ray_default_excludes()]
        + [(pattern, f"--exclude {pattern}") for pattern in extra if pattern not in EXCLUDES]
    )
    return [(ray_internals.gitwildmatch_pattern(pattern), label) for pattern, label in labelled]


def _ignore_rules(root: Path, folder: Path) -> list[tuple[Path, list[tuple[Any, str]]]]:
    """The ignore files in `folder` Ray's walk reads, each as (folder, [(pattern, 'FILE:LINE: text')])."""
    found = []
    for name in IGNORE_FILES:
        if name == ".gitignore" and not include_gitignore():
            continue
        path = folder / name
        if not path.is_file():
            continue
        try:
            lines = path.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            continue
        shown = path.relative_to(root).as_posix()
        found.append(
            (
                folder,
                [
                    (ray_internals.gitwildmatch_pattern(line), f"{shown}:{number}: {line.strip()}")
                    for number, line in enumerate(lines, 1)
                    if line.strip()
                ],
            )
        )
    return found


def _last_match(rules: list[tuple[Any, str]], relative: str) -> str | None:
    """gitignore's reading: the last pattern that matches decides (a `!pattern` takes a file back)."""
    decided: str | None = None
    for pattern, label in rules:
        if pattern.include is not None and pattern.regex.match(relative):
            decided = label if pattern.include else None
    return decided


def in_uploaded_copy() -> bool:
    """Whether this process runs in a submitted Ray job's unpacked working_dir (or one of its tasks)."""
    return (
        PACKAGE_PREFIX in str(Path.cwd())
        or bool(os.environ.get("RAY_JOB_ID"))
        or bool((submission_runtime_env() or {}).get("working_dir"))
    )


def left_behind(pattern: str) -> str:
    """Said with "PATH matches nothing" inside a submitted job: that it runs in an uploaded copy of the
    project and which rule left PATH out of it, with the ways out. "" outside a job, for an absolute
    path or a URL."""
    if "://" in pattern or os.path.isabs(os.path.expanduser(pattern)) or not in_uploaded_copy():
        return ""
    relative = PurePosixPath(os.path.normpath(pattern)).as_posix()
    here = Path.cwd()
    submitted = [item for item in (submission_runtime_env() or {}).get("excludes") or [] if item not in EXCLUDES]
    rule = exclusion(here, relative, submitted) if not relative.startswith("..") else None
    ways = (
        f"submit with `raymlp submit --include {relative}` (which carries it despite the rule), or give "
        "the job an absolute path on storage every node sees"
    )
    if rule:
        return (
            f"; this job runs in an uploaded copy of the project folder ({here}), and {rule} left "
            f"'{pattern}' out of the upload: {ways}"
        )
    return (
        f"; this job runs in an uploaded copy of the project folder ({here}), which holds only what "
        f"was in the submitted folder: submit from the folder that has '{pattern}' (`raymlp submit` "
        f"checks this before uploading; `--include {relative}` carries ignored files), or give the job an "
        "absolute path on storage every node sees"
    )


# --- helpers ----------------------------------------------------------------------------------------


def ray_default_excludes() -> list[str]:
    """What Ray itself leaves out of every working_dir (.git, .venv, venv, __pycache__ in 2.60)."""
    return ray_internals.default_upload_excludes()


def include_gitignore() -> bool:
    """Whether Ray's walk reads `.gitignore` files (unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1)."""
    return os.environ.get(ray_internals.ignore_gitignore_env_var(), "0") != "1"


def home_inside(root: Path) -> tuple[str, ...]:
    """RAYMLP_HOME, when it lies inside the project under another name than .raymlp."""
    home = settings.home().resolve()
    try:
        return (f"/{home.relative_to(root)}",) if home != root else ()
    except ValueError:
        return ()

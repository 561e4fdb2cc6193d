"""The local paths a submitted job reads, checked against what its upload holds before anything is sent.

On the cluster `raymlp run` starts in the unpacked copy of the project folder, so a relative path
there names a file of the upload or nothing. What a job reads from files: `data.source.path`
(csv, parquet, json, images), a SQLite `data.source.sql.url`, `predict.input`, a custom model's
builder module beside the job file, and the env files of `envs/` its `env` settings name.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.runtime.upload import exclusion

from .workdir import WorkingDir

#: Files named in one refusal before "and N more".
SHOWN = 3


@dataclass(frozen=True)
class Read:
    """A path the job reads: the dotted key that names it and the path as written."""

    key: str
    path: str


def job_reads(loaded: Any) -> list[Read]:
    """Every local path the loaded job reads (URLs left out, and values set by `${ENV}`: the cluster
    expands those with its own environment)."""
    job = loaded.config
    reads: list[Read] = []
    source = job.data.source
    if source.format in ("csv", "parquet", "json", "images"):
        paths = [source.path] if isinstance(source.path, str) else list(source.path or [])
        reads += [
            Read("data.source.path" if len(paths) == 1 else f"data.source.path[{index}]", path)
            for index, path in enumerate(paths)
        ]
    if source.format == "sql" and source.sql is not None:
        from raymlp.services.inputs import sqlite_file

        database = sqlite_file(source.sql.url)
        if database:
            reads.append(Read("data.source.sql.url", database))
    if job.predict is not None:
        reads.append(Read("predict.input", job.predict.input))
    if job.train is not None and getattr(job.train.model, "type", None) == "custom":
        module = job.train.model.builder.partition(":")[0]
        builder = Path(loaded.path).resolve().parent.joinpath(*module.split(".")).with_suffix(".py")
        reads.append(Read("train.model.builder", str(builder)))
    for key, value in (
        ("env", job.env),
        ("train.env", getattr(job.train, "env", None)),
        ("predict.env", getattr(job.predict, "env", None)),
        ("serve.env", getattr(job.serve, "env", None)),
    ):
        if isinstance(value, str) and value != "default":
            reads += [Read(key, str(path)) for path in _env_files(value, loaded)]
    from_env = {".".join(str(part) for part in where) for where in getattr(loaded, "secret_paths", {})}
    return [
        read
        for read in reads
        if ("://" not in read.path or read.path.startswith("file://"))
        and read.key.replace("[", ".").rstrip("]") not in from_env
    ]


def check_reads(loaded: Any, folder: WorkingDir, extra_excludes: list[str]) -> list[str]:
    """Refuse (UsageError, one line per path) a relative path the upload would not hold; return the
    warnings for absolute paths, which are read where they are on the cluster's nodes."""
    problems: list[str] = []
    warnings: list[str] = []
    for read in job_reads(loaded):
        path = os.path.expanduser(read.path.removeprefix("file://"))
        if os.path.isabs(path):
            try:
                inside = Path(path).resolve().relative_to(folder.root).as_posix()
            except ValueError:
                warnings.append(
                    f"warning: {read.key}: {read.path} is outside the project folder, so it is not "
                    "uploaded: it must exist at that path on the cluster's nodes (shared storage)"
                )
                continue
        else:
            inside = os.path.normpath(path)
            if inside.startswith(".."):
                warnings.append(
                    f"warning: {read.key}: {read.path} is outside the project folder, so it is not "
                    "uploaded: it must exist on the cluster's nodes, relative to the job's working "
                    "directory there (give an absolute path on shared storage)"
                )
                continue
        problem = _left_out(read, inside, folder, extra_excludes)
        if problem:
            problems.append(problem)
    if problems:
        raise UsageError("\n".join(problems))
    return warnings


def _left_out(read: Read, relative: str, folder: WorkingDir, extra_excludes: list[str]) -> str | None:
    matches = _matches(folder.root, relative)
    if not matches:
        return (
            f"{read.key}: {read.path} matches nothing in the project folder {folder.root}, which is what the "
            "job gets on the cluster (its working directory there); nothing was uploaded"
        )
    missing = [match for match in matches if not folder.uploads(match)]
    if not missing:
        return None
    rules: dict[str, list[str]] = {}
    for match in missing:
        rules.setdefault(exclusion(folder.root, match, extra_excludes) or "Ray's packaging", []).append(match)
    if missing == [Path(relative).as_posix()]:
        left = f"by {next(iter(rules))}"
    else:
        left = "(" + "; ".join(f"{_listed(paths)} by {rule}" for rule, paths in rules.items()) + ")"
    what = relative if len(missing) == len(matches) and not _is_pattern(relative) else _first(missing)
    return (
        f"{read.key}: {read.path} would be left out of the upload {left}, so the job would not find it "
        f"on the cluster; carry it with --include {what}, or give the job an absolute path on storage every "
        "node sees; nothing was uploaded"
    )


def _matches(root: Path, relative: str) -> list[str]:
    """The files of `root` a relative file, folder or glob names, as paths relative to `root`."""
    target = root / relative
    if target.is_file():
        return [Path(relative).as_posix()]
    if target.is_dir():
        return sorted(path.relative_to(root).as_posix() for path in target.rglob("*") if path.is_file())
    if _is_pattern(relative):
        found = sorted(glob.glob(str(target), recursive=True))
        files: list[str] = []
        for match in found:
            path = Path(match)
            if path.is_dir():
                files += [item.relative_to(root).as_posix() for item in path.rglob("*") if item.is_file()]
            elif path.is_file():
                files.append(path.relative_to(root).as_posix())
        return sorted(set(files))
    return []


def _is_pattern(path: str) -> bool:
    return any(char in path for char in "*?[")


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _first(paths: list[str]) -> str:
    """What --include to suggest for several files: their common folder."""
    common = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    return common or paths[0]


def _env_files(name: str, loaded: Any) -> list[Path]:
    """The files of envs/ that define NAME, looked up where `raymlp run` will look on the cluster."""
    from raymlp.config.envs import ENVS_DIR
    from raymlp.config.envs import env_files as files_of

    for root in (Path.cwd(), Path(loaded.path).resolve().parent, Path(loaded.path).resolve().parent.parent):
        paths = files_of(root / ENVS_DIR).get(name)
        if paths:
            return [Path(path) for path in paths]
    return []

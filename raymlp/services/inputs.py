"""What a job reads, checked before anything starts: source files and the columns their headers name,
model classes and builder modules, SQLite databases' folders, predict inputs.

Cheap by design: a file's header (or Parquet schema, or first JSON line) is all that is read, nothing
is created, and a place this machine may not see is left to the stage that reads it (a value that
came from `${ENV}`, a URL such as s3://). Which stage reads what (`STAGE_READS`) decides what a run
of some stages checks; `raymlp validate` checks the job's every stage.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raymlp.config.checks import Finding
from raymlp.config.schema import MODULE_STEP_TYPES, CustomModel, EstimatorModel
from raymlp.storage import files as storage_files

#: What each stage reads (besides the catalog, which every stage opens):
#: "source" = data.source; "collect" = the data.collect database; "model" = the model class or
#: builder module; "tracking" = the MLflow store (not checked: its folder is made); "predict" = predict.input.
STAGE_READS: dict[str, set[str]] = {
    "collect": {"source", "collect"},
    "convert": {"collect"},  # and the source itself when there is no collect table (below)
    "train": {"model", "tracking"},
    "tune": {"model", "tracking"},
    "register": {"tracking"},
    "predict": {"tracking", "predict"},
    "serve": {"tracking"},
}

#: Columns of an image folder source (raymlp.data.images).
IMAGE_COLUMNS = ["image", "label", "path", "width", "height", "format"]

#: Most files whose headers are read to learn a source's columns (globs can match thousands).
MAX_HEADER_FILES = 64


def check_inputs(loaded: Any, stages: list[str] | None = None) -> list[Finding]:
    """Problems with what the stages (default: all of the job's) would read, as (path, message)."""
    job = loaded.config
    stages = job.stages() if stages is None else stages
    reads: set[str] = set().union(*(STAGE_READS.get(stage, set()) for stage in stages))
    if "convert" in stages and job.data.collect is None:
        reads.add("source")
    visible = _Visibility(loaded.secret_paths)
    findings: list[Finding] = []
    findings += _sqlite_folders(job, reads, visible)
    if "source" in reads:
        findings += _source_and_columns(job, visible)
    if "model" in reads and job.train is not None:
        findings += _model_imports(job.train.model, Path(loaded.path).parent)
    if "predict" in reads and job.predict is not None and visible(("predict", "input"), job.predict.input):
        problem = input_problem(job.predict.input)
        if problem:
            findings.append((("predict", "input"), problem))
    return findings


class _Visibility:
    """Whether a path of the job names something this machine can be expected to see."""

    def __init__(self, secret_paths: dict[tuple[str | int, ...], str]):
        self.from_env = set(secret_paths)

    def __call__(self, path: tuple[str | int, ...], value: str, url: bool = False) -> bool:
        if any(path[: len(secret)] == secret or secret[: len(path)] == path for secret in self.from_env):
            return False  # set by ${ENV}: the machine that runs the stage may see another place
        return url or "://" not in value or value.startswith("file://")


def input_problem(pattern: str) -> str | None:
    """Why a file, folder or glob to read (predict's input) names nothing; None when it names something."""
    import glob

    if "://" in pattern and not pattern.startswith("file://"):
        return None
    expanded = os.path.expanduser(pattern.removeprefix("file://"))
    if os.path.exists(expanded) or glob.glob(expanded, recursive=True):
        return None
    from raymlp.runtime.upload import left_behind

    kind = "matches no files" if any(ch in pattern for ch in "*?[") else "no such file or folder"
    return f"'{pattern}': {kind} (working directory: {os.getcwd()}){left_behind(pattern)}"


# --- SQLite databases ------------------------------------------------------------------------------


def _sqlite_folders(job: Any, reads: set[str], visible: _Visibility) -> Iterator[Finding]:
    """A SQLite source must exist; a collect database's folder must (SQLite makes the file, not folders)."""
    from raymlp import settings

    storage = job.storage
    root = storage.root or settings.storage_root()
    root = root if root and "://" not in root else None
    made_by_raymlp = {os.path.abspath(os.path.expanduser(folder)) for folder in (settings.home(), root) if folder}
    # raymlp's own stores (storage.catalog, storage.tracking) get their folders made by raymlp and MLflow.
    urls: list[tuple[tuple[str, ...], str, bool]] = []  # (path, url, must the file exist)
    if job.data.collect is not None and "collect" in reads:
        urls.append((("data", "collect", "url"), job.data.collect.url, False))
    if job.data.source.sql is not None and "source" in reads:
        urls.append((("data", "source", "sql", "url"), job.data.source.sql.url, True))
    for path, url, must_exist in urls:
        if not visible(path, url, url=True):
            continue
        database = sqlite_file(url)
        if database is None:
            continue
        folder = os.path.dirname(os.path.abspath(database))
        if must_exist and not os.path.isfile(database):
            yield (
                path,
                (
                    f"SQLite database '{database}' does not exist (working directory: {os.getcwd()}); "
                    "a source is read, never created"
                ),
            )
        elif not os.path.isdir(folder) and folder not in made_by_raymlp:
            yield (
                path,
                (
                    f"the folder '{folder}' of SQLite database '{os.path.basename(database)}' does not exist; "
                    "create it, or correct the path (sqlite:///relative/path.db or sqlite:////absolute/path.db)"
                ),
            )


def sqlite_file(url: str) -> str | None:
    """The database file a sqlite URL names (expanded); None for other databases and in-memory ones."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # the stage that opens it says what is wrong
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.expanduser(database)


# --- the source and its columns --------------------------------------------------------------------


def _source_and_columns(job: Any, visible: _Visibility) -> Iterator[Finding]:
    from raymlp.errors import UsageError, WorkFailed

    source = job.data.source
    if source.format == "sql":
        return
    where = ("data", "source", "path")
    if source.format == "sklearn":
        from raymlp.data.sources import read_sklearn

        columns, what = read_sklearn(source.sklearn.name).table.column_names, f"scikit-learn's {source.sklearn.name}"
    elif source.format == "images":
        columns, what = IMAGE_COLUMNS, "an image folder"
        if not _all_visible(source.path, where, visible):
            return
        try:
            _expand(source)
        except UsageError as error:
            yield where, str(error).removeprefix("data.source.path: ")
            return
    else:
        if not _all_visible(source.path, where, visible):
            return
        try:
            files = _expand(source)
        except UsageError as error:
            yield where, str(error).removeprefix("data.source.path: ")
            return
        try:
            columns = _file_columns(files[:MAX_HEADER_FILES], source)
        except WorkFailed as error:  # what convert would say about the header (an empty file, say)
            yield where, str(error)
            return
        except (OSError, ValueError) as error:
            yield where, f"cannot read the header of the source: {error}"
            return
        if not columns:
            return  # empty files: convert says so
        what = str(files[0]) if len(files) == 1 else f"the {len(files)} files of data.source.path"
    yield from _columns_exist(job, columns, what)


def _all_visible(path: str | list[str], where: tuple[str, ...], visible: _Visibility) -> bool:
    items = [path] if isinstance(path, str) else list(path)
    return all(visible((*where, index) if isinstance(path, list) else where, item) for index, item in enumerate(items))


def _expand(source: Any) -> list[str]:
    from raymlp.data.sources import expand_paths

    return expand_paths(source.path, source.format)


def _file_columns(files: list[str], source: Any) -> list[str]:
    """The union of the files' column names, in order of first appearance, from their headers."""
    columns: dict[str, None] = {}
    for file in files:
        if source.format == "parquet":
            import pyarrow.parquet as pq

            with storage_files.open_input(file) as handle:
                names = pq.read_schema(handle).names
        elif source.format == "csv":
            names = _csv_header(file, source.delimiter)
        else:
            names = _json_first_keys(file)
        columns.update(dict.fromkeys(names))
    return list(columns)


def _head(file: str, limit: int = 1 << 20) -> bytes:
    """The first `limit` bytes of a file (decompressed, for .gz), local or in a bucket."""
    with storage_files.open_stream(file) as raw:
        if file.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as stream:
                return stream.read(limit)
        return raw.read(limit)


def _csv_header(file: str, delimiter: str) -> list[str]:
    """The names convert will read (`csvfile.read_header`: a byte-order mark stays part of the first)."""
    if not file.lower().endswith(".gz"):
        from raymlp.data.csvfile import read_header

        return read_header(file, delimiter)[0]
    text = _head(file).split(b"\n", 1)[0].decode("utf-8", "replace")
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _json_first_keys(file: str) -> list[str]:
    for line in _head(file).split(b"\n")[:100]:
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                return []  # a malformed first record is quarantined by convert (or cut at the limit)
            return list(record) if isinstance(record, dict) else []
    return []


def _columns_exist(job: Any, columns: list[str], what: str) -> Iterator[Finding]:
    """data.label, data.features and the preprocess steps' columns (up to the first function step)
    against the columns the source has."""
    data = job.data

    def missing(name: str) -> str:
        close = difflib.get_close_matches(name, columns, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        shown = ", ".join(columns[:30]) + (f", ... ({len(columns)} in all)" if len(columns) > 30 else "")
        return f"'{name}' is not a column of {what}{hint} (columns: {shown})"

    if data.label and data.label not in columns:
        yield ("data", "label"), missing(data.label)
    for index, feature in enumerate(data.features or []):
        if feature not in columns:
            yield ("data", "features", index), missing(feature)
    for step_index, step in enumerate(job.preprocess):
        if step.type in MODULE_STEP_TYPES:
            return  # a function may add, rename or drop columns
        for column_index, column in enumerate(getattr(step, "columns", None) or []):
            if column not in columns:
                yield ("preprocess", step_index, "columns", column_index), missing(column)


# --- model classes and builder modules ------------------------------------------------------------


def _model_imports(model: Any, job_folder: Path) -> Iterator[Finding]:
    from raymlp.errors import UsageError

    if isinstance(model, EstimatorModel):
        from raymlp.train.sklearn_backend import estimator_class

        try:
            estimator_class(model.type)
        except UsageError as error:
            yield ("train", "model", "type"), str(error).removeprefix("train.model.type: ")
    elif isinstance(model, CustomModel):
        problem = builder_problem(model.builder, job_folder)
        if problem:
            yield ("train", "model", "builder"), problem


def builder_problem(builder: str, job_folder: Path) -> str | None:
    """Why `MODULE:FUNCTION` cannot be built as training will build it (the module's source run from
    the file beside the job file); None when the function is there."""
    import types

    module, _, function = builder.partition(":")
    path = job_folder.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        return f"no file {path} for module '{module}' (a builder module is a .py file beside the job file)"
    try:
        source = path.read_text(encoding="utf-8")
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        return f"{path}:{error.lineno or 1}: the module does not parse: {error.msg}"
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot read {path}: {error}"
    namespace = types.ModuleType(f"raymlp_builder_{module.replace('.', '_')}")
    try:
        exec(code, namespace.__dict__)
    except Exception as error:
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
        at = f"{path}:{lines[-1]}" if lines else str(path)
        return f"{at}: the module does not import: {type(error).__name__}: {error}"
    if not callable(getattr(namespace, function, None)):
        public = [
            name
            for name, value in vars(namespace).items()
            if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == namespace.__name__
        ]
        close = difflib.get_close_matches(function, public, n=1)
        hint = f"; did you mean '{module}:{close[0]}'?" if close else ""
        return f"{path} has no function '{function}'{hint} (functions: {', '.join(public) or 'none'})"
    return None


def validate_inputs(loaded: Any) -> str | None:
    """`raymlp validate`'s checks beyond the file itself: what every stage reads (`check_inputs`) and
    the preprocess module refs (against the job's catalog), raised together as one ConfigError.
    Returns a note when the catalog could not be consulted."""
    from raymlp.config import ConfigError
    from raymlp.data.modules import validate_job_refs

    found = loaded.config_error(check_inputs(loaded)).issues
    try:
        note = validate_job_refs(loaded)
    except ConfigError as error:
        found += error.issues
        note = None
    if found:
        raise ConfigError(found)
    return note

"""Preprocessing modules: users' own Python transform functions, stored in the catalog and run as steps.

A module is one self-contained Python file. `raymlp data modules add FILE.py` checks that it parses and
imports, lists its public functions, and stores its exact source text with its sha256 as a numbered
version (identical content is not stored twice in a row). A job names a function as `MODULE:FUNCTION`
(the latest version when training starts) or `MODULE@VERSION:FUNCTION`.

The contract of a function step (``type: function``): ``fn(batch: pandas.DataFrame) -> pandas.DataFrame``.
The batch holds the feature columns as they are at that point of the chain (never the label); the result
has one row per input row, in the same order, and may add, change or drop columns. It sees one batch
at a time (a few rows when serving), so it must not depend on batch-wide statistics: state that must be
learned from the training data belongs to the built-in steps, which are fitted on the train split.

A dask step (``type: dask``) is the same with ``fn(frame: dask.dataframe.DataFrame) -> dask DataFrame``:
each batch is handed over as a one-partition dask frame and computed with Ray's Dask scheduler
(`ray.util.dask.ray_dask_get`), in training, batch prediction and serving alike.

Steps are `raymlp.data.transform.FunctionTransform`s, Ray Data preprocessors that carry the module's
source text and sha256 (never a reference to an importable module), so they pickle into the model
package, and batch predict and Serve replicas run the exact code the model was trained with, without
the catalog. Running a step (building the module from its source, applying it to a batch) is in
`transform.py`; the package's copy of the sources in `raymlp.package.sources`. This module imports
neither Ray nor `transform.py`.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import linecache
import os
import re
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.config.schema import FUNCTION_REF_PATTERN, MODULE_NAME_PATTERN, MODULE_STEP_TYPES
from raymlp.errors import UsageError, WorkFailed
from raymlp.textfiles import TextFileError, decode_utf8, read_bytes

#: Largest module source accepted (the catalog keeps it whole; a preprocessing module is code, not data).
MAX_SOURCE_BYTES = 1024 * 1024


# --- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionRef:
    """`MODULE:FUNCTION` or `MODULE@VERSION:FUNCTION`."""

    module: str
    version: int | None
    function: str

    def __str__(self) -> str:
        pinned = f"@{self.version}" if self.version is not None else ""
        return f"{self.module}{pinned}:{self.function}"


def parse_ref(text: str) -> FunctionRef:
    """The parts of a function reference; UsageError when it is not one."""
    match = re.match(FUNCTION_REF_PATTERN, text or "")
    if not match:
        raise UsageError(f"'{text}' is not MODULE:FUNCTION or MODULE@VERSION:FUNCTION")
    version = match.group("version")
    return FunctionRef(match.group("module"), int(version) if version else None, match.group("function"))


# --- reading a module file --------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleFile:
    """A checked module file: its source, sha256 and the public functions it defines."""

    name: str
    path: Path
    source: str
    sha256: str
    functions: list[dict[str, Any]]


def source_sha256(source: str) -> str:
    """sha256 of the source text as the file's bytes (UTF-8)."""
    return hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()


def read_module_file(path: str | os.PathLike[str], name: str | None = None) -> ModuleFile:
    """Read, parse and import a module file; UsageError as FILE:LINE: message when it cannot be used."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{file}: is a folder; give one .py file")
    try:
        data = read_bytes(file, it="it")
        if len(data) > MAX_SOURCE_BYTES:
            raise UsageError(
                f"{file}: {len(data)} bytes is more than a module may hold ({MAX_SOURCE_BYTES}); "
                "keep data out of preprocessing modules"
            )
        source = decode_utf8(data, str(file))
    except TextFileError as error:
        raise UsageError(str(error)) from None
    name = name if name is not None else file.stem
    if not re.match(MODULE_NAME_PATTERN, name):
        hint = "" if name != file.stem else "; name it with --name NAME"
        raise UsageError(
            f"'{name}' is not a usable module name: use a Python name (letters, digits and '_', "
            f"not starting with a digit){hint}"
        )
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as error:
        raise UsageError(f"{file}:{error.lineno or 1}: the module does not parse: {error.msg}") from None
    module = _import_isolated(name, source, file)
    functions = _public_functions(module, tree)
    if not functions:
        raise UsageError(f"{file}: defines no public functions (def name(...) at the top level, not starting with '_')")
    return ModuleFile(name=name, path=file.resolve(), source=source, sha256=source_sha256(source), functions=functions)


def _import_isolated(name: str, source: str, file: Path) -> types.ModuleType:
    """Run the module as an import would, without the file's own folder on sys.path (a module must be whole)."""
    hidden = {"", os.path.abspath(file.parent), os.getcwd()}
    saved = list(sys.path)
    sys.path[:] = [
        entry for entry in sys.path if os.path.abspath(entry or ".") not in hidden or entry in _package_roots()
    ]
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the module prints must not mix with --json output
            return module_from_source(name, source, str(file))
    except BaseException as error:  # report any failure of the user's code as where it happened
        if isinstance(error, KeyboardInterrupt):
            raise
        line = _line_in(error, str(file))
        hint = ""
        if isinstance(error, ModuleNotFoundError):
            hint = (
                " (a module must be self-contained: it may import installed packages, not other files "
                "next to it, which a Ray worker or Serve replica would not have)"
            )
        raise UsageError(f"{file}:{line}: importing the module raised {type(error).__name__}: {error}{hint}") from None
    finally:
        sys.path[:] = saved


def _package_roots() -> set[str]:
    """sys.path entries that hold raymlp itself (kept, so raymlp's own lazy imports still work)."""
    return {str(Path(__file__).resolve().parents[2])}


def _line_in(error: BaseException, filename: str) -> int:
    """The last line of `filename` in the error's traceback (1 when it is not there)."""
    if isinstance(error, SyntaxError) and error.filename == filename and error.lineno:
        return error.lineno
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    return lines[-1] if lines and lines[-1] else 1


def _public_functions(module: types.ModuleType, tree: ast.Module) -> list[dict[str, Any]]:
    """The module's own top-level public functions, in source order."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        function = getattr(module, node.name, None)
        if not inspect.isfunction(function):
            continue
        try:
            signature = str(inspect.signature(function))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = (inspect.getdoc(function) or "").strip().splitlines()
        found.append({"name": node.name, "line": node.lineno, "signature": signature, "doc": doc[0] if doc else ""})
    return found


def module_from_source(name: str, source: str, filename: str) -> types.ModuleType:
    """A fresh module object running `source`; tracebacks show its lines. Never put in sys.modules:
    cloudpickle then ships the functions it defines by value, so Ray workers need no import."""
    module = types.ModuleType(name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, module.__dict__)
    return module


# --- resolving a job's steps against the catalog -------------------------------------------------


def module_steps(steps: list[Any]) -> Iterator[tuple[int, Any]]:
    """(index, step) of the steps whose code comes from a registered module."""
    return ((index, step) for index, step in enumerate(steps) if step.type in MODULE_STEP_TYPES)


def check_refs(steps: list[Any], modules: list[Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Findings (path, message) for function refs that `modules` (catalog ModuleRecords) cannot satisfy."""
    by_name: dict[str, dict[int, Any]] = {}
    for record in modules:
        by_name.setdefault(record.name, {})[record.version] = record
    findings: list[tuple[tuple[str | int, ...], str]] = []
    for index, step in module_steps(steps):
        problem = _ref_problem(parse_ref(step.ref), by_name)
        if problem:
            findings.append((("preprocess", index, "ref"), problem))
    return findings


def _ref_problem(ref: FunctionRef, by_name: dict[str, dict[int, Any]]) -> str | None:
    versions = by_name.get(ref.module)
    if not versions:
        known = ", ".join(sorted(by_name)) or "none"
        return (
            f"'{ref.module}' is not a registered module (modules: {known}); "
            f"add it with: raymlp data modules add {ref.module}.py"
        )
    version = ref.version if ref.version is not None else max(versions)
    record = versions.get(version)
    if record is None:
        return f"module '{ref.module}' has no version {version} (versions: {', '.join(map(str, sorted(versions)))})"
    if ref.function not in record.function_names:
        return (
            f"module '{ref.module}' version {version} defines no function '{ref.function}' "
            f"(functions: {', '.join(record.function_names) or 'none'})"
        )
    return None


def check_job_refs(loaded: Any, catalog: Any) -> None:
    """ConfigError (exit 2, FILE:LINE: preprocess.N.ref: ...) for every module ref the catalog cannot satisfy."""
    steps = loaded.config.preprocess
    if not any(True for _ in module_steps(steps)):
        return
    findings = check_refs(steps, catalog.list_modules())
    if findings:
        raise loaded.config_error(findings)


def validate_job_refs(loaded: Any) -> str | None:
    """`raymlp validate`'s check of module refs against the job's catalog; a note when it cannot be consulted.

    A SQLite catalog that does not exist yet holds no modules (and is not created); one that cannot be
    opened (a database server away) is reported, and the refs are checked again when the job runs.
    """
    if not any(True for _ in module_steps(loaded.config.preprocess)):
        return None
    from sqlalchemy.engine import make_url

    from raymlp.catalog import Catalog, CatalogError, redact_url

    url = _catalog_url(loaded.config.storage)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).expanduser().exists():
        findings = check_refs(loaded.config.preprocess, [])
    else:
        try:
            with Catalog(url) as catalog:
                findings = check_refs(loaded.config.preprocess, catalog.list_modules())
        except CatalogError as error:
            return f"preprocess module refs not checked: cannot consult the catalog at {redact_url(url)}: {error}"
    if findings:
        raise loaded.config_error(findings)
    return None


def _catalog_url(storage: Any) -> str:
    """The job's catalog URL, as `raymlp.storage.resolve_storage` makes it, without creating folders."""
    from raymlp import settings

    url = storage.catalog or settings.catalog_url()
    if url:
        return str(url)
    root = storage.root or settings.storage_root()
    root = root if root and "://" not in root else str(settings.home())
    return f"sqlite:///{Path(root).expanduser().resolve() / 'catalog.db'}"


def resolve_steps(steps: list[Any], catalog: Any) -> dict[str, Any]:
    """ref text -> the catalog's ModuleRecord for each module step; WorkFailed naming the ref and what exists."""
    resolved: dict[str, Any] = {}
    module_records = None
    for index, step in module_steps(steps):
        if step.ref in resolved:
            continue
        if module_records is None:
            module_records = catalog.list_modules()
        problem = check_refs([step], module_records)
        if problem:
            raise WorkFailed(f"preprocess.{index}.ref: {step.ref}: {problem[0][1]}")
        ref = parse_ref(step.ref)
        candidates = [record for record in module_records if record.name == ref.module]
        version = ref.version if ref.version is not None else max(record.version for record in candidates)
        resolved[step.ref] = next(record for record in candidates if record.version == version)
    return resolved

"""The module sources a package carries: which module versions its chain runs, their files under
`modules/`, and the check that the pickled copies are the recorded ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raymlp.data.modules import source_sha256
from raymlp.errors import WorkFailed

from .layout import PACKAGE_MODULES_DIR


def package_transforms(preprocessor: Any) -> list[Any]:
    """The FunctionTransform steps of a (fitted) chain, in order."""
    if preprocessor is None:
        return []
    children = getattr(preprocessor, "preprocessors", None)
    steps = list(children() if callable(children) else children) if children is not None else [preprocessor]
    return [step for step in steps if type(step).__name__ == "FunctionTransform" and hasattr(step, "sha256")]


def module_file_name(name: str, version: int) -> str:
    return f"{name}@{version}.py"


def package_modules(preprocessor: Any) -> list[dict[str, Any]]:
    """Description entries of the distinct module versions a chain runs: name, version, sha256, file, functions."""
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for step in package_transforms(preprocessor):
        entry = entries.setdefault(
            (step.module, step.version),
            {
                "name": step.module,
                "version": step.version,
                "sha256": step.sha256,
                "file": f"{PACKAGE_MODULES_DIR}/{module_file_name(step.module, step.version)}",
                "functions": [],
            },
        )
        if step.function not in entry["functions"]:
            entry["functions"].append(step.function)
    return list(entries.values())


def write_package_sources(preprocessor: Any, folder: Path) -> None:
    """Write each module version's exact source into `folder/modules/` (for people and audits)."""
    for step in package_transforms(preprocessor):
        target = folder / PACKAGE_MODULES_DIR / module_file_name(step.module, step.version)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(step.source.encode("utf-8", "surrogateescape"))


def verify_package_sources(preprocessor: Any, description: dict[str, Any], folder: Path) -> None:
    """WorkFailed unless every module step's source matches the sha256 the package recorded for it."""
    recorded = {(entry["name"], entry["version"]): entry["sha256"] for entry in description.get("modules", [])}
    for step in package_transforms(preprocessor):
        expected = recorded.get((step.module, step.version))
        if expected is None:
            raise WorkFailed(
                f"{folder}: the preprocessor runs module {step.module}@{step.version}, which the "
                "package description does not list"
            )
        for what, digest in (("pickled preprocessor", source_sha256(step.source)), ("recorded step", step.sha256)):
            if digest != expected:
                raise WorkFailed(
                    f"{folder}: the {what}'s copy of module {step.module}@{step.version} has sha256 "
                    f"{digest}, not the package's {expected}"
                )

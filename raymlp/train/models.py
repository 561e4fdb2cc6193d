"""The model spec of a job: the job's model config plus what the driver resolves for workers and the
package (a cnn's image shape, a custom builder's source). The networks a spec describes are built by
`raymlp.package.networks` and `raymlp.package.keras_networks`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.package.networks import builder_module, image_shape


def resolve_model_spec(model: dict[str, Any], input_dim: int, job_folder: Path | None) -> dict[str, Any]:
    """The model config with what workers need resolved: a cnn's image shape, a custom builder's source."""
    spec = dict(model)
    if spec["type"] == "cnn":
        spec["image_shape"] = image_shape(spec.get("image_shape"), input_dim)
    if spec["type"] == "custom":
        module, _, function = spec["builder"].partition(":")
        folder = Path(job_folder or ".")
        path = folder.joinpath(*module.split(".")).with_suffix(".py")
        if not path.is_file():
            raise UsageError(
                f"train.model.builder: no file {path} for module '{module}' (modules are .py files beside the job file)"
            )
        source = path.read_text()
        namespace = builder_module(source, module)
        if not callable(getattr(namespace, function, None)):
            raise UsageError(f"train.model.builder: {path} has no function '{function}'")
        spec["builder_source"] = source
        spec["builder_sha256"] = hashlib.sha256(source.encode()).hexdigest()
    return spec

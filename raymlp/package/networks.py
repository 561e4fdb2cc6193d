"""Networks from model specs: built-in architectures (torch here, Keras in `keras_networks`) and users'
builders, run from the source the spec carries. Frameworks are imported lazily.

Training workers and the package loader build a network from a *model spec*: the job's model config
as a dict, plus what the driver resolved (`raymlp.train.models.resolve_model_spec`): `image_shape`
for a cnn, and for a custom model the builder's module source (carried by value, so workers on other
nodes and a package loaded years later run the same code, checked by sha256).
"""

from __future__ import annotations

import hashlib
import math
import types
from typing import Any

from raymlp.errors import UsageError, WorkFailed


def image_shape(configured: list[int] | None, input_dim: int) -> list[int]:
    """[height, width, channels] of one row; a square one-channel image unless configured."""
    if configured is None:
        side = math.isqrt(input_dim)
        if side * side != input_dim:
            raise UsageError(
                f"train.model.image_shape: the model's input has {input_dim} columns, not a square image; "
                "give [height, width] or [height, width, channels]"
            )
        return [side, side, 1]
    shape = list(configured) + [1] * (3 - len(configured))
    if math.prod(shape) != input_dim:
        raise UsageError(
            f"train.model.image_shape: {configured} holds {math.prod(shape)} values, the model's input has {input_dim} columns"
        )
    return shape


def builder_module(source: str, name: str) -> types.ModuleType:
    """A user's builder module run from its source (not imported by name: workers elsewhere have no file)."""
    module = types.ModuleType(f"raymlp_builder_{name.replace('.', '_')}")
    try:
        exec(compile(source, f"<builder {name}>", "exec"), module.__dict__)
    except Exception as error:
        raise WorkFailed(
            f"train.model.builder: module '{name}' failed to load: {type(error).__name__}: {error}"
        ) from None
    return module


def call_builder(spec: dict[str, Any], input_shape: tuple[int, ...], output_dim: int) -> Any:
    """Run a custom model's builder: FUNCTION(input_shape, output_dim, params)."""
    if hashlib.sha256(spec["builder_source"].encode()).hexdigest() != spec["builder_sha256"]:
        raise WorkFailed("train.model.builder: the builder's source does not match its recorded sha256")
    module_name, _, function = spec["builder"].partition(":")
    try:
        return getattr(builder_module(spec["builder_source"], module_name), function)(
            input_shape, output_dim, dict(spec.get("params") or {})
        )
    except WorkFailed:
        raise
    except Exception as error:
        raise WorkFailed(f"train.model.builder {spec['builder']} failed: {type(error).__name__}: {error}") from None


def _torch_activation(name: str) -> Any:
    from torch import nn

    return {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}[name]()


def build_torch_mlp(input_dim: int, output_dim: int, hidden_layers: list[int], dropout: float, activation: str) -> Any:
    """A fully connected torch network: Linear -> activation -> dropout per hidden layer."""
    from torch import nn

    layers: list[Any] = []
    width = input_dim
    for hidden in hidden_layers:
        layers += [nn.Linear(width, hidden), _torch_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def build_torch_cnn(spec: dict[str, Any], output_dim: int) -> Any:
    """Rows of pixels (row-major [height, width, channels]) -> convolutions with 2x2 max-pooling
    while the image is at least 2x2 -> dense layers -> outputs."""
    from torch import nn

    from .torch_layers import ChannelsFirst

    height, width, channels = spec["image_shape"]
    layers: list[Any] = [nn.Unflatten(1, (height, width, channels)), ChannelsFirst()]
    for filters in spec["filters"]:
        layers += [
            nn.Conv2d(channels, filters, spec["kernel_size"], padding="same"),
            _torch_activation(spec["activation"]),
        ]
        if height >= 2 and width >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = filters
    layers.append(nn.Flatten())
    size = height * width * channels
    for dense in spec["dense_layers"]:
        if spec["dropout"] > 0:
            layers.append(nn.Dropout(spec["dropout"]))
        layers += [nn.Linear(size, dense), _torch_activation(spec["activation"])]
        size = dense
    layers.append(nn.Linear(size, output_dim))
    return nn.Sequential(*layers)


def build_torch_model(spec: dict[str, Any], input_dim: int, output_dim: int) -> Any:
    """The torch network a model spec describes."""
    import torch

    if spec["type"] == "mlp":
        return build_torch_mlp(input_dim, output_dim, spec["hidden_layers"], spec["dropout"], spec["activation"])
    if spec["type"] == "cnn":
        return build_torch_cnn(spec, output_dim)
    if spec["type"] == "custom":
        network = call_builder(spec, (input_dim,), output_dim)
        if not isinstance(network, torch.nn.Module):
            raise WorkFailed(
                f"train.model.builder {spec['builder']} returned {type(network).__name__}, not a torch.nn.Module"
            )
        return network
    raise UsageError(f"train.model.type: torch builds mlp, cnn or custom, not '{spec['type']}'")

"""Built-in model architectures, built from the job's model config (framework imported lazily)."""

from __future__ import annotations

from typing import Any


def build_torch_mlp(input_dim: int, output_dim: int, hidden_layers: list[int], dropout: float, activation: str) -> Any:
    """A fully connected torch network: Linear -> activation -> dropout per hidden layer."""
    from torch import nn

    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
    layers: list[Any] = []
    width = input_dim
    for hidden in hidden_layers:
        layers += [nn.Linear(width, hidden), activations[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)

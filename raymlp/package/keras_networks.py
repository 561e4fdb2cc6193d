"""Keras networks for model specs (mlp, cnn, custom), the Keras twins of `networks.build_torch_*`.

Keras is imported on first use. Every network maps a float32 row of `input_dim` values to logits
(no softmax) for classification, or to one standardised value for regression.
"""

from __future__ import annotations

from typing import Any

from raymlp.errors import UsageError, WorkFailed

from .networks import call_builder, image_shape


def build_keras_mlp(input_dim: int, output_dim: int, hidden_layers: list[int], dropout: float, activation: str) -> Any:
    """Dense -> activation -> dropout per hidden layer, then a linear output layer."""
    import keras

    layers: list[Any] = [keras.Input((input_dim,), name="features")]
    for hidden in hidden_layers:
        layers.append(keras.layers.Dense(hidden, activation=activation))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(output_dim, name="outputs"))
    return keras.Sequential(layers, name="raymlp_mlp")


def build_keras_cnn(spec: dict[str, Any], input_dim: int, output_dim: int) -> Any:
    """Rows of pixels (row-major [height, width, channels]) -> convolutions ('same' padding) with
    2x2 max-pooling while the image is at least 2x2 -> dense layers (dropout before each) -> outputs."""
    import keras

    height, width, channels = image_shape(spec.get("image_shape"), input_dim)
    layers: list[Any] = [keras.Input((input_dim,), name="features"), keras.layers.Reshape((height, width, channels))]
    for filters in spec["filters"]:
        layers.append(keras.layers.Conv2D(filters, spec["kernel_size"], padding="same", activation=spec["activation"]))
        if height >= 2 and width >= 2:
            layers.append(keras.layers.MaxPooling2D(2))
            height, width = height // 2, width // 2
    layers.append(keras.layers.Flatten())
    for dense in spec["dense_layers"]:
        if spec["dropout"] > 0:
            layers.append(keras.layers.Dropout(spec["dropout"]))
        layers.append(keras.layers.Dense(dense, activation=spec["activation"]))
    layers.append(keras.layers.Dense(output_dim, name="outputs"))
    return keras.Sequential(layers, name="raymlp_cnn")


def build_keras_model(spec: dict[str, Any], input_dim: int, output_dim: int) -> Any:
    """The Keras network a model spec describes (a custom builder must return a `keras.Model`)."""
    import keras

    if spec["type"] == "mlp":
        return build_keras_mlp(input_dim, output_dim, spec["hidden_layers"], spec["dropout"], spec["activation"])
    if spec["type"] == "cnn":
        return build_keras_cnn(spec, input_dim, output_dim)
    if spec["type"] == "custom":
        if "builder_source" not in spec:
            raise WorkFailed(
                f"train.model.builder {spec['builder']}: the model spec carries no builder source "
                "(it is resolved by raymlp.train.models.resolve_model_spec)"
            )
        network = call_builder(spec, (input_dim,), output_dim)
        if not isinstance(network, keras.Model):
            raise WorkFailed(
                f"train.model.builder {spec['builder']} returned {type(network).__name__}, not a keras.Model "
                "(framework tensorflow)"
            )
        return network
    raise UsageError(f"train.model.type: tensorflow builds mlp, cnn or custom, not '{spec['type']}'")

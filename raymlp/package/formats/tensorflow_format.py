"""A Keras model in a package: `model/model.keras` (mlp, cnn), or `model/model.weights.h5` for a
custom model, rebuilt with the builder source the package carries. TensorFlow is imported only
inside functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raymlp.verbosity import import_quietly

from ..layout import MODEL_DIR

#: The whole Keras model (architecture and weights), for mlp and cnn.
MODEL_FILE = "model.keras"
#: Weights only, for custom models: the package rebuilds them with the builder source it carries
#: (a subclassed Keras model without `get_config` cannot be saved as .keras).
CUSTOM_WEIGHTS_FILE = "model.weights.h5"


def built(model: Any, input_dim: int) -> Any:
    """The model with its variables created (a subclassed custom model has none until called)."""
    import numpy as np

    if not model.built:
        model(np.zeros((1, input_dim), dtype=np.float32), training=False)
    return model


def load_for_inference(package_dir: Path, model_spec: dict[str, Any]) -> Any:
    """The trained Keras model, on CPU: the saved .keras model, or for a custom model the builder's
    network with the saved weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_quietly("tensorflow")
    import keras
    import tensorflow as tf

    folder = Path(package_dir) / MODEL_DIR
    with tf.device("/CPU:0"):
        if model_spec["type"] == "custom":
            from ..keras_networks import build_keras_model

            model = built(
                build_keras_model(model_spec, model_spec["input_dim"], model_spec["output_dim"]),
                model_spec["input_dim"],
            )
            model.load_weights(folder / CUSTOM_WEIGHTS_FILE)
        else:
            model = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    return model


def predict_scores(model: Any, matrix: Any) -> Any:
    """Raw outputs for a float32 matrix: [n, classes] logits, or [n, 1] standardised values."""
    import numpy as np
    import tensorflow as tf

    matrix = np.asarray(matrix, dtype=np.float32)
    with tf.device("/CPU:0"):
        parts = [
            np.asarray(model(matrix[start : start + 8192], training=False))
            for start in range(0, max(len(matrix), 1), 8192)
        ]
    return np.concatenate(parts)


def pip_requirements() -> list[str]:
    """tensorflow and keras, pinned to the versions that trained the model."""
    from importlib.metadata import version

    return [f"tensorflow=={version('tensorflow')}", f"keras=={version('keras')}"]

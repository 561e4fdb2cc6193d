"""The TensorFlow/Keras backend on the session's Ray: the example jobs in jobs/, their packages,
resume and early stopping across workers, and custom Keras builders."""

from __future__ import annotations

import numpy as np
import pytest

from raymlp import load_job
from raymlp.context import Reporter
from tests.conftest import run_job_quietly

from .conftest import REPO

pytestmark = [pytest.mark.integration]

WINE = REPO / "jobs" / "wine-tensorflow.yaml"
DIGITS = REPO / "jobs" / "digits-cnn-tensorflow.yaml"


def _test_split(job, storage):
    """The test rows of the run's dataset version, as the train stage cut them."""
    from raymlp.catalog import Catalog
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table

    config = job.config.data
    with Catalog(storage.catalog_url) as catalog:
        record = catalog.get_dataset_version(config.dataset.name)
    frame = read_version_table(record.path, record.manifest).to_pandas()
    return split_frame(frame, config.split, frame[config.label])[2]


def test_wine_on_two_workers_reaches_the_gate_and_its_package_predicts_the_same_in_plain_python(
    ray_4_cpus, raymlp_home
):
    from raymlp.package import load_package
    from raymlp.storage import resolve_storage

    job = load_job(WINE)
    assert job.config.train.scaling.num_workers == 2
    summary = run_job_quietly(job, reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9, summary.metrics
    assert summary.metrics["val_accuracy"] >= 0.9, summary.metrics
    assert (summary.model_version, summary.alias_moved) == (1, True)

    storage = resolve_storage()
    folder = storage.folder("runs", summary.run_id, "package")
    assert (folder / "model" / "model.keras").is_file()
    test = _test_split(job, storage)
    first, second = load_package(folder), load_package(folder)
    predicted, again = first.predict(test), second.predict(test)
    accuracy = float((predicted["prediction"].astype(str).to_numpy() == test["target"].astype(str).to_numpy()).mean())
    assert accuracy == pytest.approx(summary.metrics["test_accuracy"], abs=1e-12)
    # Deterministic: a second load of the package gives the very same numbers.
    assert predicted.equals(again)


def test_digits_cnn_reaches_the_gate(ray_4_cpus, raymlp_home):
    summary = run_job_quietly(load_job(DIGITS), reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9, summary.metrics
    assert summary.alias_moved


def _wine_datasets():
    """wine as the train stage hands it to a backend: standardised feature vectors and class codes."""
    import ray.data
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    from raymlp.train.features import FEATURES_COLUMN, LABEL_COLUMN

    features, labels = load_wine(return_X_y=True)
    features = StandardScaler().fit_transform(features).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(labels))

    def rows(positions):
        return ray.data.from_items(
            [{FEATURES_COLUMN: features[index], LABEL_COLUMN: np.int64(labels[index])} for index in positions]
        ).materialize()

    return {"train": rows(order[:140]), "validation": rows(order[140:])}


def test_a_resumed_run_continues_from_its_checkpoint_and_stops_early_on_every_worker_at_once(ray_4_cpus, tmp_path):
    from raymlp.config.schema import TrainConfig
    from raymlp.train.backend import TrainRequest, fit

    datasets = _wine_datasets()

    def run(epochs: int, lr: float, early_stopping: dict | None):
        train = TrainConfig(
            framework="tensorflow",
            model={"type": "mlp", "hidden_layers": [16]},
            epochs=epochs,
            batch_size=16,
            optimizer={"name": "adam", "lr": lr},
            scaling={"num_workers": 2},
            early_stopping=early_stopping,
        )
        return fit(
            TrainRequest(
                train=train,
                task="classification",
                input_dim=13,
                output_dim=3,
                datasets=datasets,
                storage_path=str(tmp_path / "ray_results"),
                run_name="plateau",
                output_dir=tmp_path,
            )
        )

    first = run(1, 0.05, None)
    # The same run again, for 30 epochs, at a learning rate too small to move the loss: it resumes
    # from epoch 1's checkpoint (weights and history), then val_loss plateaus, so it stops after
    # 1 + patience more epochs. Both workers stop together, else one would wait forever in a collective.
    resumed = run(30, 1e-7, {"metric": "val_loss", "patience": 2, "min_delta": 0.001})
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first.history[0]
    # Epoch 2 starts from epoch 1's weights (a fresh model would be back at the untrained loss).
    assert resumed.history[1]["val_loss"] == pytest.approx(first.history[0]["val_loss"], abs=0.01)
    assert resumed.weights.name == "model.keras" and resumed.weights.is_file()


BUILDER = """
import keras


def small(input_shape, output_dim, params):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(params["width"], activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(output_dim)(hidden))


class Doubling(keras.Model):
    def __init__(self, output_dim):
        super().__init__()
        self.dense = keras.layers.Dense(output_dim)

    def call(self, inputs):
        return 2 * self.dense(inputs)


def subclassed(input_shape, output_dim, params):
    return Doubling(output_dim)


def not_keras(input_shape, output_dim, params):
    return "a string"
"""


@pytest.mark.parametrize("function", ["small", "subclassed"])
def test_a_custom_keras_builder_round_trips_through_its_weights_file(tmp_path, function):
    import keras

    from raymlp.package.formats import tensorflow_format
    from raymlp.package.formats.tensorflow_format import built as _built
    from raymlp.package.keras_networks import build_keras_model
    from raymlp.train.models import resolve_model_spec
    from raymlp.train.tensorflow_backend import _save_state

    (tmp_path / "nets.py").write_text(BUILDER)
    spec = resolve_model_spec({"type": "custom", "builder": f"nets:{function}", "params": {"width": 8}}, 5, tmp_path)
    model = _built(build_keras_model(spec, 5, 3), 5)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    (tmp_path / "package" / "model").mkdir(parents=True)
    _save_state(tmp_path / "package" / "model", model, optimizer, spec, 0, [])
    loaded = tensorflow_format.load_for_inference(tmp_path / "package", {**spec, "input_dim": 5, "output_dim": 3})
    matrix = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    scores = tensorflow_format.predict_scores(loaded, matrix)
    assert scores.shape == (7, 3)
    np.testing.assert_array_equal(scores, tensorflow_format.predict_scores(model, matrix))


def test_a_custom_builder_that_returns_no_keras_model_is_named(tmp_path):
    from raymlp.errors import WorkFailed
    from raymlp.package.keras_networks import build_keras_model
    from raymlp.train.models import resolve_model_spec

    (tmp_path / "nets.py").write_text(BUILDER)
    spec = resolve_model_spec({"type": "custom", "builder": "nets:not_keras", "params": {}}, 5, tmp_path)
    with pytest.raises(WorkFailed, match=r"^train\.model\.builder nets:not_keras returned str, not a keras\.Model"):
        build_keras_model(spec, 5, 3)
